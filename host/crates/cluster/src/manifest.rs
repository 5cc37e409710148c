//! What a deployment is (the component, its arguments, the nodes, the key-group table), and
//! how a node keeps it on disk so it rejoins its cluster after a restart.
//!
//! A node's data directory:
//! - `components/<sha256>.wasm`: components shipped to it, by content;
//! - `app/assignment.json`: the deployment and this node's index in it;
//! - `app/cluster.json` (the coordinator only): the generation and the last checkpoint every
//!   node committed;
//! - `app/wal/`, `app/dead-letters/`: the application's log and dead letters;
//! - `stopped/<time>-<deployment>/`: the `app/` of an application that was stopped.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
/// How every node runs the application: the host options `wallaroo deploy` takes.
pub use wallaroo_connectors::Settings;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// This deployment's id: the component's hash and the time of the deploy.
    pub deployment: String,
    /// SHA-256 of the component, hex.
    pub component: String,
    pub args: Vec<String>,
    /// Node addresses as in hosts.txt; the first coordinates.
    pub nodes: Vec<String>,
    /// The node owning each key group.
    pub table: Vec<u16>,
    pub settings: Settings,
    /// Nodes a change removed (a shrink): they keep their number, own no key group and take
    /// no part. (Never skipped when empty: the wire encoding is positional.)
    #[serde(default)]
    pub retired: Vec<u16>,
    /// `--drop-state`: stateful steps of the running application a new version may lack,
    /// their state dropped. Only a change of a running application reads it.
    #[serde(default)]
    pub drop_state: Vec<String>,
}

impl Manifest {
    /// The nodes that are members (not removed), by index.
    pub fn members(&self) -> impl Iterator<Item = (usize, &String)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.retired.contains(&(*i as u16)))
    }
}

impl Manifest {
    /// Refuses a manifest whose key-group table cannot be routed by: it arrives from another
    /// process (a deploy client, or a node's own file), so nothing in it is taken on trust.
    pub fn check(&self) -> anyhow::Result<()> {
        self.settings
            .check()
            .with_context(|| format!("deployment {}", self.deployment))?;
        let groups = self.settings.key_groups;
        if self.table.len() != groups as usize {
            anyhow::bail!(
                "deployment {}: its key-group table has {} entries for {groups} key groups",
                self.deployment,
                self.table.len()
            );
        }
        if self.nodes.is_empty() || self.nodes.len() > usize::from(u16::MAX) {
            anyhow::bail!("deployment {}: {} nodes", self.deployment, self.nodes.len());
        }
        if let Some((group, &node)) = self
            .table
            .iter()
            .enumerate()
            .find(|(_, n)| usize::from(**n) >= self.nodes.len())
        {
            anyhow::bail!(
                "deployment {}: key group {group} is assigned to node {node}, but the deployment \
                 has {} nodes",
                self.deployment,
                self.nodes.len()
            );
        }
        if let Some((group, node)) = self
            .table
            .iter()
            .enumerate()
            .find(|(_, n)| self.retired.contains(n))
        {
            anyhow::bail!(
                "deployment {}: key group {group} is assigned to node {node}, which was removed",
                self.deployment
            );
        }
        Ok(())
    }
}

/// Key groups in contiguous runs, one per node: node i owns groups [i*K/n, (i+1)*K/n).
pub fn assign_key_groups(key_groups: u32, nodes: usize) -> Vec<u16> {
    let k = key_groups as usize;
    (0..k).map(|g| (g * nodes / k) as u16).collect()
}

/// The table after a change of members: every member of `members` (node indices) ends with
/// a fair share (the group count divided by the members, rounded down or up), moving as few
/// groups as that allows: groups of nodes no longer members, and the surplus of members
/// above their share, go to the members below theirs.
pub fn rebalance(table: &[u16], members: &[u16]) -> Vec<u16> {
    let mut table = table.to_vec();
    if members.is_empty() {
        return table;
    }
    let k = table.len();
    let n = members.len();
    // The first `k % n` members (in `members` order) get one more.
    let share = |i: usize| k / n + usize::from(i < k % n);
    let mut owned: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut free = Vec::new();
    for (g, owner) in table.iter().enumerate() {
        match members.iter().position(|m| m == owner) {
            Some(i) => owned[i].push(g),
            None => free.push(g),
        }
    }
    for (i, groups) in owned.iter_mut().enumerate() {
        // The last groups a member holds above its share are the ones it gives up.
        while groups.len() > share(i) {
            free.push(groups.pop().expect("above its share"));
        }
    }
    free.sort_unstable();
    let mut free = free.into_iter();
    for (i, groups) in owned.iter().enumerate() {
        for _ in groups.len()..share(i) {
            if let Some(g) = free.next() {
                table[g] = members[i];
            }
        }
    }
    table
}

/// Reads hosts.txt: one `host:port` per line; blank lines and `#` comments are skipped.
pub fn parse_hosts(text: &str, path: &Path) -> anyhow::Result<Vec<String>> {
    let mut hosts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((host, port)) = line.rsplit_once(':') else {
            anyhow::bail!("{}:{}: '{line}' is not HOST:PORT", path.display(), n + 1);
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            anyhow::bail!(
                "{}:{}: '{line}' is not HOST:PORT (port 1-65535)",
                path.display(),
                n + 1
            );
        }
        if hosts.iter().any(|h| h == line) {
            anyhow::bail!("{}:{}: {line} is listed twice", path.display(), n + 1);
        }
        hosts.push(line.to_string());
    }
    anyhow::ensure!(!hosts.is_empty(), "{} lists no node", path.display());
    Ok(hosts)
}

pub fn read_hosts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_hosts(&text, path)
}

pub fn component_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a node keeps what it was given.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub manifest: Manifest,
    pub index: u16,
}

impl Assignment {
    /// Refuses an assignment this node cannot run: its manifest does not check, or this
    /// node's index is not one of its nodes.
    pub fn check(&self) -> anyhow::Result<()> {
        let m = &self.manifest;
        m.check()?;
        if usize::from(self.index) >= m.nodes.len() {
            anyhow::bail!(
                "deployment {}: this node is number {}, but the deployment has {} nodes",
                m.deployment,
                self.index,
                m.nodes.len()
            );
        }
        Ok(())
    }
}

/// The coordinator's durable record of the cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub generation: u64,
    /// The last checkpoint every node prepared and the coordinator committed.
    pub committed: u64,
    /// How many swaps the application has had (0: it runs the deployed component).
    #[serde(default)]
    pub version: u64,
    /// SHA-256 of the component the cluster runs, once a swap changed it.
    #[serde(default)]
    pub component: Option<String>,
    /// The deployment as the running version has it, once a change made it differ from the
    /// one deployed (other nodes, table or options).
    #[serde(default)]
    pub manifest: Option<Manifest>,
}

impl DataDir {
    pub fn component(&self, hash: &str) -> PathBuf {
        self.0.join("components").join(format!("{hash}.wasm"))
    }

    pub fn has_component(&self, hash: &str) -> bool {
        self.component(hash).is_file()
    }

    /// Stores a component under its hash, after checking the hash. `modified_ms`: the time
    /// the file it came from was written (unix ms), given to the copy here as its own (see
    /// [`DataDir::component_built_ms`]).
    pub fn put_component(
        &self,
        hash: &str,
        bytes: &[u8],
        modified_ms: Option<u64>,
    ) -> anyhow::Result<()> {
        let actual = component_hash(bytes);
        anyhow::ensure!(
            actual == hash,
            "the component's content hashes to {actual}, not {hash}"
        );
        let path = self.component(hash);
        write_atomically(&path, bytes)?;
        if let Some(ms) = modified_ms {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            // Only what `wallaroo status` shows depends on it.
            if let Err(e) = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(at))
            {
                tracing::warn!("cannot set the time of {}: {e}", path.display());
            }
        }
        Ok(())
    }

    /// When component `hash` was built, as far as this node knows (unix ms): its file's
    /// modification time here, which is that of the file `wallaroo deploy` shipped (normally
    /// written by `wallaroo build`) or, for a component shipped without it, when it arrived.
    pub fn component_built_ms(&self, hash: &str) -> Option<u64> {
        let modified = std::fs::metadata(self.component(hash))
            .and_then(|m| m.modified())
            .ok()?;
        unix_ms(modified)
    }

    pub fn app(&self) -> PathBuf {
        self.0.join("app")
    }

    pub fn assignment(&self) -> anyhow::Result<Option<Assignment>> {
        read_json(&self.app().join("assignment.json"))
    }

    /// Takes a deployment: an earlier application's directory is kept under `stopped/`.
    pub fn assign(&self, assignment: &Assignment) -> anyhow::Result<()> {
        if self.app().exists() {
            self.retire()?;
        }
        write_json(&self.app().join("assignment.json"), assignment)
    }

    /// Keeps the deployment as a change made it (this node's index stays).
    pub fn update_assignment(&self, assignment: &Assignment) -> anyhow::Result<()> {
        write_json(&self.app().join("assignment.json"), assignment)
    }

    /// Forgets the deployment, keeping its directory (log, dead letters) under `stopped/`.
    pub fn retire(&self) -> anyhow::Result<()> {
        let name = match self.assignment() {
            Ok(Some(a)) => a.manifest.deployment,
            _ => "unknown".into(),
        };
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let to = self.0.join("stopped").join(format!("{secs}-{name}"));
        std::fs::create_dir_all(self.0.join("stopped"))?;
        std::fs::rename(self.app(), &to)
            .with_context(|| format!("moving {} to {}", self.app().display(), to.display()))?;
        Ok(())
    }

    /// The stateful steps whose state component `hash` drops when it starts (see
    /// [`DataDir::allow_dropped_state`]).
    pub fn dropped_state(&self, hash: &str) -> anyhow::Result<Vec<String>> {
        Ok(read_json(&self.drop_state_file(hash))?.unwrap_or_default())
    }

    /// Lets component `hash`, a new version made ready for a hot swap, drop the state of the
    /// stateful steps `steps` the running one has and it lacks: on every start of it, also a
    /// restart from the swap's checkpoint after a crash, until the deployment stops.
    pub fn allow_dropped_state(&self, hash: &str, steps: &[String]) -> anyhow::Result<()> {
        let path = self.drop_state_file(hash);
        if steps.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
                _ => Ok(()),
            };
        }
        write_json(&path, &steps)
    }

    fn drop_state_file(&self, hash: &str) -> PathBuf {
        self.app().join("drop-state").join(format!("{hash}.json"))
    }

    pub fn cluster_record(&self) -> anyhow::Result<ClusterRecord> {
        Ok(read_json(&self.app().join("cluster.json"))?.unwrap_or_default())
    }

    pub fn write_cluster_record(&self, record: &ClusterRecord) -> anyhow::Result<()> {
        write_json(&self.app().join("cluster.json"), record)
    }
}

/// `at` in milliseconds since the Unix epoch (None before it).
pub fn unix_ms(at: std::time::SystemTime) -> Option<u64> {
    let since = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not readable", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_atomically(path, &serde_json::to_vec_pretty(value)?)
}

/// Writes a file so that a crash leaves either the old content or the new, durably.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_skip_comments_and_blank_lines_and_name_bad_lines() {
        let path = Path::new("hosts.txt");
        let hosts = parse_hosts("# cluster\n10.0.0.1:7100\n\n10.0.0.2:7100 # second\n", path);
        assert_eq!(hosts.unwrap(), vec!["10.0.0.1:7100", "10.0.0.2:7100"]);
        let err = parse_hosts("10.0.0.1:7100\nnode-b\n", path).unwrap_err();
        assert_eq!(err.to_string(), "hosts.txt:2: 'node-b' is not HOST:PORT");
        let err = parse_hosts("a:1\na:1\n", path).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        assert!(parse_hosts("# none\n", path).is_err());
    }

    #[test]
    fn a_shipped_component_keeps_the_time_its_file_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().to_path_buf());
        let bytes = b"component";
        let hash = component_hash(bytes);
        let built = 1_700_000_000_123;
        data.put_component(&hash, bytes, Some(built)).unwrap();
        assert_eq!(data.component_built_ms(&hash), Some(built));
        assert_eq!(data.component_built_ms("absent"), None);
    }

    #[test]
    fn the_state_a_new_version_may_drop_is_kept_per_component_until_the_deployment_stops() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().to_path_buf());
        assert_eq!(data.dropped_state("v2").unwrap(), Vec::<String>::new());
        let steps = vec!["count word".to_string()];
        data.allow_dropped_state("v2", &steps).unwrap();
        // Read again on every start of v2, also by a node restarted after the swap.
        assert_eq!(data.dropped_state("v2").unwrap(), steps);
        assert!(data.dropped_state("v3").unwrap().is_empty());
        // A later swap to v2 without --drop-state lets nothing go.
        data.allow_dropped_state("v2", &[]).unwrap();
        assert!(data.dropped_state("v2").unwrap().is_empty());
        data.allow_dropped_state("v2", &steps).unwrap();
        data.retire().unwrap();
        assert!(data.dropped_state("v2").unwrap().is_empty());
    }

    #[test]
    fn key_groups_split_evenly_in_runs() {
        let table = assign_key_groups(1024, 3);
        let counts: Vec<usize> = (0..3)
            .map(|n| table.iter().filter(|&&o| o == n).count())
            .collect();
        assert_eq!(counts, vec![342, 341, 341]);
        assert!(table.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(assign_key_groups(4, 1), vec![0; 4]);
    }

    fn counts(table: &[u16], nodes: u16) -> Vec<usize> {
        (0..nodes)
            .map(|n| table.iter().filter(|&&o| o == n).count())
            .collect()
    }

    #[test]
    fn a_grow_gives_the_new_node_a_fair_share_and_moves_no_more_than_that() {
        let before = assign_key_groups(1024, 3);
        let after = rebalance(&before, &[0, 1, 2, 3]);
        assert_eq!(counts(&after, 4), [256, 256, 256, 256]);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 256, "only the new node's share moves");
        assert!(before.iter().zip(&after).all(|(a, b)| a == b || *b == 3));
    }

    #[test]
    fn a_shrink_gives_the_removed_nodes_groups_to_the_others_evenly() {
        let before = assign_key_groups(1024, 4);
        let after = rebalance(&before, &[0, 1]);
        assert_eq!(counts(&after, 4), [512, 512, 0, 0]);
        let kept = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        assert_eq!(kept, 512, "the groups of the nodes that stay do not move");
        // Uneven: 1000 groups over 3 members.
        let after = rebalance(&assign_key_groups(1000, 2), &[0, 1, 4]);
        let mut c = counts(&after, 5);
        c.sort_unstable();
        assert_eq!(c, [0, 0, 333, 333, 334]);
        // Unchanged members: nothing moves.
        assert_eq!(rebalance(&before, &[0, 1, 2, 3]), before);
    }

    #[test]
    fn a_manifest_whose_table_cannot_be_routed_by_is_refused_naming_why() {
        let good = Manifest {
            deployment: "d".into(),
            component: "c".into(),
            args: vec![],
            nodes: vec!["a:1".into(), "b:1".into()],
            table: assign_key_groups(8, 2),
            settings: Settings {
                key_groups: 8,
                ..Settings::default()
            },
            retired: vec![],
            drop_state: Vec::new(),
        };
        good.check().unwrap();
        let refused = |change: fn(&mut Manifest), why: &str| {
            let mut m = good.clone();
            change(&mut m);
            let err = format!("{:#}", m.check().unwrap_err());
            assert!(err.contains(why), "{err}");
        };
        refused(|m| m.settings.key_groups = 0, "0 key groups");
        refused(
            |m| {
                m.table.pop();
            },
            "7 entries for 8",
        );
        refused(|m| m.table[3] = 2, "key group 3 is assigned to node 2");
        refused(|m| m.nodes.clear(), "0 nodes");
        refused(
            |m| m.settings.sink_framing = wallaroo_connectors::SinkFraming::Tagged,
            "deployment d: --sink-framing tagged needs --resilience exactly-once",
        );
        refused(
            |m| m.settings.key_groups = 1 << 20,
            "1048576 key groups: the number of key groups must be 1 to 65536",
        );

        let mut assignment = Assignment {
            manifest: good.clone(),
            index: 1,
        };
        assignment.check().unwrap();
        assignment.index = 2;
        let err = assignment.check().unwrap_err().to_string();
        assert!(
            err.contains("this node is number 2, but the deployment has 2 nodes"),
            "{err}"
        );
    }
}
