//! The host options a node runs an application with: what `wallaroo run` and `wallaroo deploy`
//! take on the command line and a deployment's manifest carries to every node. This is the one
//! place they become the engine's [`NodeConfig`], the instances' [`Limits`] and the sources'
//! [`SourceOptions`]; options of one machine only (its data directory, compile cache, sandbox)
//! stay with whoever starts the node.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wallaroo_component::Limits;
use wallaroo_engine::{NodeConfig, Resilience};
use wallaroo_types::{DEFAULT_KEY_GROUPS, KeyGroups};

use crate::SourceOptions;
use crate::kafka::KafkaPlan;

/// How sinks frame output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkFraming {
    /// The encoder's bytes as they are.
    #[default]
    Plain,
    /// Each frame with its (epoch, sequence), so `wallaroo receive` drops repeats.
    Tagged,
}

impl SinkFraming {
    pub const ALL: [SinkFraming; 2] = [Self::Plain, Self::Tagged];

    /// The name the command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Tagged => "tagged",
        }
    }
}

impl std::fmt::Display for SinkFraming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Host options that are the same on every node running the application. Serialized as a
/// deployment manifest's `settings`: field names and values are as manifests have always had
/// them (the sink framing is the flag `tagged`), so nodes read the manifests older deploys left
/// in their data directories, and older nodes read new ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub key_groups: u32,
    /// Workers per node (None: as many as the node has cores).
    pub workers: Option<usize>,
    pub resilience: Resilience,
    pub checkpoint_interval_ms: u64,
    #[serde(rename = "tagged", with = "tagged_flag")]
    pub sink_framing: SinkFraming,
    pub max_memory_mib: usize,
    pub call_timeout_ms: u64,
    pub batch_size: usize,
    /// Disk each node's dead letters may take, in bytes (manifests written before this
    /// setting existed get the default).
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: u64,
    /// Largest frame a source accepts, in bytes (likewise defaulted for older manifests).
    #[serde(default = "default_max_frame_size")]
    pub max_frame_size: u64,
    /// Late messages (too late for every window they belong to) are dead-lettered too.
    #[serde(default)]
    pub dead_letter_late: bool,
    /// Finish once every source's stream has ended (see `NodeConfig::finish_at_end`).
    #[serde(default)]
    pub finish: bool,
    /// Client properties for every Kafka source and sink, after the application's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kafka_properties: Vec<(String, String)>,
}

fn default_dead_letter_max_bytes() -> u64 {
    wallaroo_engine::DEFAULT_DEAD_LETTER_MAX_BYTES
}

fn default_max_frame_size() -> u64 {
    SourceOptions::default().max_frame
}

impl Default for Settings {
    /// The command line's defaults.
    fn default() -> Self {
        Self {
            key_groups: DEFAULT_KEY_GROUPS,
            workers: None,
            resilience: Resilience::None,
            checkpoint_interval_ms: 1000,
            sink_framing: SinkFraming::Plain,
            max_memory_mib: 512,
            call_timeout_ms: 10_000,
            batch_size: 256,
            dead_letter_max_bytes: default_dead_letter_max_bytes(),
            max_frame_size: default_max_frame_size(),
            dead_letter_late: false,
            finish: false,
            kafka_properties: Vec::new(),
        }
    }
}

/// Settings no node can run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("--sink-framing tagged needs --resilience exactly-once")]
    TaggedNeedsExactlyOnce,
    #[error(transparent)]
    KeyGroups(#[from] wallaroo_types::KeyGroupsError),
}

impl Settings {
    /// Refuses settings no node can run with. They may come from another process (a
    /// deployment's manifest), so nothing here is taken on trust.
    pub fn check(&self) -> Result<(), SettingsError> {
        KeyGroups::try_new(self.key_groups)?;
        if self.sink_framing == SinkFraming::Tagged && self.resilience != Resilience::ExactlyOnce {
            return Err(SettingsError::TaggedNeedsExactlyOnce);
        }
        Ok(())
    }

    /// Workers: as the settings say, else `otherwise`, else one per core.
    pub fn workers_or(&self, otherwise: Option<usize>) -> usize {
        self.workers.or(otherwise).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// The engine's configuration for a node keeping its log and dead letters in `data_dir`,
    /// running `workers` workers, the application set up with `args`. A cluster adds its
    /// placement.
    pub fn node_config(
        &self,
        data_dir: impl Into<PathBuf>,
        args: Vec<String>,
        workers: usize,
        discard_corrupt_log: bool,
    ) -> Result<NodeConfig, SettingsError> {
        self.check()?;
        let mut config = NodeConfig::new(data_dir, args);
        config.workers = workers;
        config.key_groups = KeyGroups::try_new(self.key_groups)?;
        config.resilience = self.resilience;
        config.checkpoint_interval = self.checkpoint_interval();
        config.dead_letter_max_bytes = self.dead_letter_max_bytes;
        config.dead_letter_late = self.dead_letter_late;
        config.finish_at_end = self.finish;
        config.discard_corrupt_log = discard_corrupt_log;
        Ok(config)
    }

    /// How Kafka edges run on member `member` of `members` nodes whose log is `instance`
    /// ([`crate::kafka::instance_id`]); `identity_suffix` as [`KafkaPlan::identity_suffix`].
    pub fn kafka_plan(
        &self,
        member: u32,
        members: u32,
        identity_suffix: String,
        instance: String,
    ) -> KafkaPlan {
        KafkaPlan {
            properties: self.kafka_properties.clone(),
            member,
            members,
            transactional: self.resilience == Resilience::ExactlyOnce,
            identity_suffix,
            instance,
        }
    }

    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms.max(1))
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_memory: self.max_memory_mib << 20,
            call_timeout: Duration::from_millis(self.call_timeout_ms),
        }
    }

    pub fn source_options(&self) -> SourceOptions {
        SourceOptions {
            max_frame: self.max_frame_size,
            batch_size: self.batch_size.max(1),
        }
    }
}

/// The sink framing as a manifest has always held it: `"tagged": true` or `false`.
mod tagged_flag {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::SinkFraming;

    pub fn serialize<S: Serializer>(framing: &SinkFraming, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(*framing == SinkFraming::Tagged)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SinkFraming, D::Error> {
        Ok(if bool::deserialize(d)? {
            SinkFraming::Tagged
        } else {
            SinkFraming::Plain
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings as `wallaroo deploy` wrote them before the dead-letter cap and the frame size
    /// were settings.
    const OLD: &str = r#"{"key_groups": 1024, "workers": null, "resilience": "exactly-once",
        "checkpoint_interval_ms": 200, "tagged": true, "max_memory_mib": 512,
        "call_timeout_ms": 10000, "batch_size": 256}"#;

    #[test]
    fn settings_written_by_older_deploys_read_with_the_defaults_of_newer_settings() {
        let settings: Settings = serde_json::from_str(OLD).unwrap();
        assert_eq!(
            settings,
            Settings {
                resilience: Resilience::ExactlyOnce,
                checkpoint_interval_ms: 200,
                sink_framing: SinkFraming::Tagged,
                ..Settings::default()
            }
        );
        for (name, resilience) in [
            ("none", Resilience::None),
            ("at-least-once", Resilience::AtLeastOnce),
        ] {
            let text = OLD
                .replace("exactly-once", name)
                .replace("\"tagged\": true", "\"tagged\": false");
            let settings: Settings = serde_json::from_str(&text).unwrap();
            assert_eq!(settings.resilience, resilience);
            assert_eq!(settings.sink_framing, SinkFraming::Plain);
        }
    }

    #[test]
    fn settings_are_written_as_manifests_have_always_held_them() {
        let settings = Settings {
            resilience: Resilience::AtLeastOnce,
            sink_framing: SinkFraming::Tagged,
            ..Settings::default()
        };
        let json: serde_json::Value = serde_json::to_value(&settings).unwrap();
        assert_eq!(json["resilience"], "at-least-once");
        assert_eq!(json["tagged"], true);
        assert_eq!(json.get("sink_framing"), None);
        let back: Settings = serde_json::from_value(json).unwrap();
        assert_eq!(back, settings);
        for r in Resilience::ALL {
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::from(r.name())
            );
        }
    }

    #[test]
    fn an_unknown_resilience_in_a_manifest_is_refused_not_taken_for_none() {
        let err = serde_json::from_str::<Settings>(&OLD.replace("exactly-once", "exactly-twice"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `exactly-twice`"), "{err}");
    }

    #[test]
    fn tagged_sinks_without_exactly_once_and_impossible_key_groups_are_refused() {
        let tagged = Settings {
            sink_framing: SinkFraming::Tagged,
            ..Settings::default()
        };
        assert_eq!(tagged.check(), Err(SettingsError::TaggedNeedsExactlyOnce));
        let exactly_once = Settings {
            resilience: Resilience::ExactlyOnce,
            ..tagged.clone()
        };
        assert_eq!(exactly_once.check(), Ok(()));
        for groups in [0, 65537] {
            let settings = Settings {
                key_groups: groups,
                ..Settings::default()
            };
            assert_eq!(
                settings.check(),
                Err(SettingsError::KeyGroups(wallaroo_types::KeyGroupsError {
                    count: groups
                }))
            );
            assert!(settings.node_config("d", vec![], 1, false).is_err());
        }
    }

    #[test]
    fn settings_become_the_nodes_config_limits_and_source_options() {
        let settings = Settings {
            key_groups: 64,
            workers: Some(3),
            resilience: Resilience::AtLeastOnce,
            checkpoint_interval_ms: 0,
            max_memory_mib: 100,
            call_timeout_ms: 250,
            batch_size: 0,
            dead_letter_max_bytes: 1 << 20,
            max_frame_size: 4096,
            ..Settings::default()
        };
        assert_eq!(settings.workers_or(Some(7)), 3);
        assert_eq!(
            Settings {
                workers: None,
                ..settings.clone()
            }
            .workers_or(Some(7)),
            7
        );
        let args = vec!["--in".to_string(), "h:1".to_string()];
        let config = settings.node_config("data", args.clone(), 3, true).unwrap();
        assert_eq!(config.workers, 3);
        assert_eq!(config.key_groups.count(), 64);
        assert_eq!(config.resilience, Resilience::AtLeastOnce);
        // A zero interval would spin: the shortest is a millisecond.
        assert_eq!(config.checkpoint_interval, Duration::from_millis(1));
        assert_eq!(config.dead_letter_max_bytes, 1 << 20);
        assert!(config.discard_corrupt_log);
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.args, args);
        assert!(config.placement.is_none());
        let limits = settings.limits();
        assert_eq!(limits.max_memory, 100 << 20);
        assert_eq!(limits.call_timeout, Duration::from_millis(250));
        let sources = settings.source_options();
        assert_eq!(sources.max_frame, 4096);
        assert_eq!(sources.batch_size, 1);
    }
}
