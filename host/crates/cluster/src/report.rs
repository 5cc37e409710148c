//! What `wallaroo status` prints: one report built from every node's answer, as text for a
//! person or (`--json`) as one JSON object for a program. Both say the same.

use serde::{Deserialize, Serialize};

use crate::proto::{Change, NodeStatus, Recovery};

/// The cluster as `wallaroo status --json` prints it. The cluster-wide fields are the
/// coordinator's (node 0), or the first reachable node's while the coordinator is not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The application's name ("-": none).
    pub app: String,
    /// SHA-256 of the component the cluster runs (empty: none).
    pub component: String,
    /// When that component was built (unix ms; see [`NodeStatus::component_built_ms`]).
    pub component_built_ms: Option<u64>,
    pub generation: u64,
    pub nodes: Vec<NodeReport>,
    /// The last changes, oldest first (kept by the coordinator since it started).
    pub changes: Vec<Change>,
    /// While the cluster recovers: what it waits for.
    pub recovery: Option<Recovery>,
}

/// One node in [`StatusReport`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub index: usize,
    /// HOST:PORT as in hosts.txt.
    pub address: String,
    /// Why the node did not answer (None: it did).
    pub unreachable: Option<String>,
    /// "running", "recovering", "no application".
    pub state: String,
    pub app: String,
    pub generation: u64,
    pub component: String,
    pub component_built_ms: Option<u64>,
    /// How many key groups the node owns, and in which runs ([first, last]).
    pub key_groups: u64,
    pub key_group_ranges: Vec<(u32, u32)>,
    pub workers: usize,
    /// Keys whose state the node holds, and the bytes of those keys and states.
    pub state_keys: u64,
    pub state_bytes: u64,
    pub received: u64,
    pub emitted: u64,
    pub dead_lettered: u64,
    pub backlog: i64,
    pub last_checkpoint: u64,
    /// Messages into each fused segment, by its first step.
    pub steps: Vec<StepCount>,
    /// Messages too late for their windows, by window step.
    #[serde(default)]
    pub late: Vec<StepCount>,
    pub remote_messages: u64,
    pub remote_bytes: u64,
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepCount {
    pub step: String,
    pub messages: u64,
}

impl StatusReport {
    /// The report of the nodes at `addresses`, from each one's answer (or why it gave none).
    pub fn new(addresses: &[String], answers: Vec<Result<NodeStatus, String>>) -> StatusReport {
        let mut report = StatusReport {
            app: "-".into(),
            ..StatusReport::default()
        };
        let cluster = answers
            .iter()
            .flatten()
            .min_by_key(|s| (s.index != 0 || s.state == "no application", s.index));
        if let Some(s) = cluster {
            report.app = s.app.clone();
            report.component = s.component.clone();
            report.component_built_ms = s.component_built_ms;
            report.generation = s.generation;
            report.changes = s.changes.clone();
            report.recovery = s.recovery.clone();
        }
        for (index, (address, answer)) in addresses.iter().zip(answers).enumerate() {
            let node = match answer {
                Ok(s) => NodeReport {
                    index,
                    address: address.clone(),
                    unreachable: None,
                    state: s.state,
                    app: s.app,
                    generation: s.generation,
                    component: s.component,
                    component_built_ms: s.component_built_ms,
                    key_groups: s
                        .key_groups
                        .iter()
                        .map(|&(a, b)| u64::from(b.saturating_sub(a)) + 1)
                        .sum(),
                    key_group_ranges: s.key_groups,
                    workers: s.workers,
                    state_keys: s.state_keys,
                    state_bytes: s.state_bytes,
                    received: s.received,
                    emitted: s.emitted,
                    dead_lettered: s.dead_lettered,
                    backlog: s.backlog,
                    last_checkpoint: s.last_checkpoint,
                    steps: s
                        .steps
                        .into_iter()
                        .map(|(step, messages)| StepCount { step, messages })
                        .collect(),
                    late: s
                        .late
                        .into_iter()
                        .map(|(step, messages)| StepCount { step, messages })
                        .collect(),
                    remote_messages: s.remote_messages,
                    remote_bytes: s.remote_bytes,
                    sources: s.sources,
                },
                Err(why) => NodeReport {
                    index,
                    address: address.clone(),
                    unreachable: Some(why),
                    ..NodeReport::default()
                },
            };
            report.nodes.push(node);
        }
        report
    }

    /// Nodes that did not answer.
    pub fn unreachable(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.unreachable.is_some())
            .count()
    }

    /// The report for a person, one line per fact.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut line = |l: String| {
            out.push_str(&l);
            out.push('\n');
        };
        if let Some(prefix) = self.component.get(..12) {
            let built = match self.component_built_ms {
                Some(ms) => format!(", built {}", utc(ms)),
                None => String::new(),
            };
            line(format!(
                "'{}'  generation {}  version {prefix}{built}",
                self.app, self.generation
            ));
        }
        for n in &self.nodes {
            if let Some(why) = &n.unreachable {
                line(format!(
                    "node {}  {}  unreachable: {why}",
                    n.index, n.address
                ));
                continue;
            }
            let component = match n.component.get(..12) {
                Some(prefix) => format!("  component {prefix}"),
                None => String::new(),
            };
            line(format!(
                "node {}  {}  {}  {}  generation {}{component}",
                n.index, n.address, n.state, n.app, n.generation
            ));
            if n.index == 0
                && let Some(r) = &self.recovery
            {
                line(format!("  {}", recovery_line(r)));
            }
            if n.key_group_ranges.is_empty() {
                continue;
            }
            let ranges: Vec<String> = n
                .key_group_ranges
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        format!("{a}")
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            line(format!(
                "  key groups {} ({}), {} workers, state of {} keys in {}",
                ranges.join(","),
                n.key_groups,
                n.workers,
                n.state_keys,
                bytes(n.state_bytes)
            ));
            line(format!(
                "  received {}, emitted {}, backlog {}, dead letters {}, last checkpoint {}",
                n.received, n.emitted, n.backlog, n.dead_lettered, n.last_checkpoint
            ));
            if !n.steps.is_empty() {
                let steps: Vec<String> = n
                    .steps
                    .iter()
                    .map(|s| format!("{} {}", s.step, s.messages))
                    .collect();
                line(format!("  steps: {}", steps.join(", ")));
            }
            if !n.late.is_empty() {
                let late: Vec<String> = n
                    .late
                    .iter()
                    .map(|s| format!("{} {}", s.step, s.messages))
                    .collect();
                line(format!("  late for their windows: {}", late.join(", ")));
            }
            if n.remote_messages > 0 {
                line(format!(
                    "  to other nodes: {} messages, {} bytes on the wire ({:.1} bytes/message)",
                    n.remote_messages,
                    n.remote_bytes,
                    n.remote_bytes as f64 / n.remote_messages as f64
                ));
            }
            for source in &n.sources {
                line(format!("  source {source}"));
            }
        }
        if !self.changes.is_empty() {
            line("changes (oldest first):".into());
            for c in &self.changes {
                line(format!("  {}", change_line(c)));
            }
        }
        out
    }
}

/// A change as `wallaroo status` lists it.
fn change_line(c: &Change) -> String {
    let short = |hash: &str| hash.get(..12).unwrap_or(hash).to_string();
    let what = match c.kind.as_str() {
        "swap" => format!("swap {} -> {}", short(&c.from), short(&c.to)),
        "deploy" => format!("deploy {}", short(&c.to)),
        other => other.to_string(),
    };
    let mut line = format!("{}  {what}", utc(c.at_ms));
    if c.failed {
        line += &format!(" did not happen ({})", c.reason);
    } else {
        if !c.reason.is_empty() {
            line += &format!(" ({})", c.reason);
        }
        line += &format!(", generation {}", c.generation);
    }
    if let Some(ms) = c.paused_ms {
        line += &format!(", stream paused {ms} ms");
    }
    line + &format!(", took {} ms", c.took_ms)
}

/// What a recovering cluster waits for, as `wallaroo status` shows it under the coordinator.
fn recovery_line(r: &Recovery) -> String {
    let waiting = if r.missing.is_empty() {
        "starting the application on every node".to_string()
    } else {
        format!("waiting for {} to join", r.missing.join(", "))
    };
    let why = if r.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.reason)
    };
    format!(
        "cluster recovering for {} s, from checkpoint {}: {waiting}{why}",
        r.waited_ms / 1000,
        r.checkpoint
    )
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1 << 10 => format!("{n} bytes"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n => format!("{:.1} GiB", n as f64 / (1 << 30) as f64),
    }
}

/// Unix milliseconds as "YYYY-MM-DD HH:MM:SS UTC".
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), after H. Hinnant.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: u16, groups: Vec<(u32, u32)>) -> NodeStatus {
        NodeStatus {
            index,
            address: format!("10.0.0.{}:7100", index + 1),
            app: "Word Count".into(),
            state: "running".into(),
            generation: 2,
            component: "ab".repeat(32),
            component_built_ms: Some(1_764_599_629_000),
            key_groups: groups,
            workers: 2,
            received: 100,
            emitted: 90,
            state_keys: 40,
            state_bytes: 2048,
            steps: vec![("split".into(), 100)],
            late: vec![("total over 9 s".into(), 3)],
            ..NodeStatus::default()
        }
    }

    fn report() -> StatusReport {
        let swap = Change {
            kind: "swap".into(),
            at_ms: 1_764_599_700_000,
            generation: 2,
            from: "cd".repeat(32),
            to: "ab".repeat(32),
            paused_ms: Some(120),
            took_ms: 900,
            ..Change::default()
        };
        let coordinator = NodeStatus {
            changes: vec![swap],
            ..node(0, vec![(0, 4), (9, 9)])
        };
        let addresses: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}:7100")).collect();
        let answers = vec![
            Ok(coordinator),
            Ok(node(1, vec![(5, 8)])),
            Err("timed out".into()),
        ];
        StatusReport::new(&addresses, answers)
    }

    #[test]
    fn the_json_report_has_the_cluster_fields_and_every_node_and_reads_back_the_same() {
        let report = report();
        let text = serde_json::to_string(&report).unwrap();
        let back: StatusReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);

        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["app"], "Word Count");
        assert_eq!(json["component"], "ab".repeat(32));
        assert_eq!(json["component_built_ms"], 1_764_599_629_000u64);
        assert_eq!(json["generation"], 2);
        let nodes = json["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0]["address"], "10.0.0.1:7100");
        assert_eq!(nodes[0]["key_groups"], 6);
        assert_eq!(
            nodes[0]["key_group_ranges"],
            serde_json::json!([[0, 4], [9, 9]])
        );
        assert_eq!(nodes[0]["state_keys"], 40);
        assert_eq!(nodes[0]["state_bytes"], 2048);
        assert_eq!(nodes[0]["received"], 100);
        assert_eq!(nodes[0]["emitted"], 90);
        assert_eq!(nodes[0]["steps"][0]["step"], "split");
        assert_eq!(nodes[0]["late"][0]["step"], "total over 9 s");
        assert_eq!(nodes[0]["late"][0]["messages"], 3);
        assert_eq!(nodes[1]["key_groups"], 4);
        assert!(nodes[1]["unreachable"].is_null());
        assert_eq!(nodes[2]["unreachable"], "timed out");
        assert_eq!(nodes[2]["address"], "10.0.0.3:7100");
        let change = &json["changes"][0];
        assert_eq!(change["kind"], "swap");
        assert_eq!(change["paused_ms"], 120);
        assert_eq!(change["from"], "cd".repeat(32));
        assert_eq!(report.unreachable(), 1);
    }

    #[test]
    fn the_text_report_gives_the_version_state_size_and_changes() {
        let text = report().text();
        assert!(
            text.starts_with(
                "'Word Count'  generation 2  version abababababab, built 2025-12-01 14:33:49 UTC\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  key groups 0-4,9 (6), 2 workers, state of 40 keys in 2.0 KiB\n"),
            "{text}"
        );
        assert!(
            text.contains("node 2  10.0.0.3:7100  unreachable: timed out\n"),
            "{text}"
        );
        assert!(
            text.contains("  late for their windows: total over 9 s 3\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "changes (oldest first):\n  2025-12-01 14:35:00 UTC  swap cdcdcdcdcdcd -> \
                 abababababab, generation 2, stream paused 120 ms, took 900 ms\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
    }
}
