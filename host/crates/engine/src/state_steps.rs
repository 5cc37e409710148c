//! Which stateful step a key's state belongs to. The guest and the workers speak of a step by
//! its position in the running component's app spec; the log names it, so that state stays
//! with its step when a new version of the application adds, removes or moves steps. This
//! table maps one to the other where state enters and leaves the log.
//!
//! Each state record carries the names of every stateful step of the component that wrote it,
//! in spec order, and its entries index that list. Two stateful steps with the same name are
//! told apart by their order among the steps of that name.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use wallaroo_component::{StepKind, StepSpec};
use wallaroo_wal::StateSteps;

/// The running component's stateful steps.
#[derive(Debug, Clone)]
pub(crate) struct StatefulSteps {
    /// Every step's name, by position in the app spec.
    all: Vec<String>,
    /// The stateful steps in spec order: their positions.
    positions: Vec<u32>,
    /// Per spec position, the step's index in `positions` (None: not stateful).
    slots: Vec<Option<u32>>,
    /// Steps whose logged state is dropped where this component has no stateful step of
    /// that name (`--drop-state`), rather than refused.
    drop: Vec<String>,
}

impl StatefulSteps {
    pub(crate) fn of(steps: &[StepSpec]) -> StatefulSteps {
        let mut positions = Vec::new();
        let slots = steps
            .iter()
            .enumerate()
            .map(|(at, step)| {
                (step.kind == StepKind::Stateful).then(|| {
                    positions.push(at as u32);
                    positions.len() as u32 - 1
                })
            })
            .collect();
        StatefulSteps {
            all: steps.iter().map(|s| s.name.clone()).collect(),
            positions,
            slots,
            drop: Vec::new(),
        }
    }

    /// Drops, rather than refuses, logged state of the steps `names` that this component has
    /// no stateful step for. State of a step it has is never dropped: the first checkpoint
    /// after a start writes every key, so state of a step the component has may be its own.
    pub(crate) fn dropping(mut self, names: &[String]) -> StatefulSteps {
        self.drop = names.to_vec();
        self
    }

    /// The table a state record written by this component carries.
    pub(crate) fn table(&self) -> StateSteps {
        StateSteps::Named(
            self.positions
                .iter()
                .map(|&at| self.all[at as usize].clone())
                .collect(),
        )
    }

    /// The index in [`StatefulSteps::table`] of the step at spec position `step`; None when
    /// that step is not stateful.
    pub(crate) fn slot(&self, step: u32) -> Option<u32> {
        self.slots.get(step as usize).copied().flatten()
    }

    fn is_stateful(&self, step: u32) -> bool {
        self.slot(step).is_some()
    }

    /// The spec positions the steps of a record's table name in this component, table entry
    /// by table entry (None: this component has no such stateful step).
    fn resolve(&self, names: &[String]) -> Vec<Option<u32>> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let rank = names[..i].iter().filter(|n| *n == name).count();
                self.positions
                    .iter()
                    .filter(|&&at| self.all[at as usize] == *name)
                    .nth(rank)
                    .copied()
            })
            .collect()
    }
}

/// Maps the entries of a log's state records onto the running component's steps, and keeps
/// what it could not place.
pub(crate) struct Attach<'a> {
    steps: &'a StatefulSteps,
    /// The last table resolved (consecutive records nearly always carry the same one).
    last: Option<(Vec<String>, Vec<Option<u32>>)>,
    /// Keys of steps this component does not have, by step.
    unknown: BTreeMap<LoggedStep, HashSet<Vec<u8>>>,
    /// Keys of steps this component does not have whose state it drops, by step name.
    dropped: BTreeMap<String, HashSet<Vec<u8>>>,
    /// Entries placed by position (a log of format 1 or 2).
    pub(crate) by_position: usize,
}

impl<'a> Attach<'a> {
    pub(crate) fn new(steps: &'a StatefulSteps) -> Attach<'a> {
        Attach {
            steps,
            last: None,
            unknown: BTreeMap::new(),
            dropped: BTreeMap::new(),
            by_position: 0,
        }
    }

    /// The spec position of each entry's step in `record_steps`' terms, or None for a step this
    /// component does not have (noted, with the key, for [`Attach::finish`]).
    pub(crate) fn positions<'k>(
        &mut self,
        record_steps: &StateSteps,
        entries: impl Iterator<Item = (u32, &'k [u8])>,
    ) -> Vec<Option<u32>> {
        match record_steps {
            StateSteps::Named(names) => {
                if self.last.as_ref().is_none_or(|(last, _)| last != names) {
                    self.last = Some((names.clone(), self.steps.resolve(names)));
                }
                let resolved = self.last.as_ref().expect("just set").1.clone();
                entries
                    .map(|(step, key)| {
                        // The log checked `step` against the table when it read the record.
                        let at = resolved.get(step as usize).copied().flatten();
                        if at.is_none() {
                            let name = names.get(step as usize).cloned().unwrap_or_default();
                            let rank = names[..step as usize]
                                .iter()
                                .filter(|n| **n == name)
                                .count();
                            self.note(LoggedStep::Named { name, rank }, key);
                        }
                        at
                    })
                    .collect()
            }
            StateSteps::Positions => entries
                .map(|(step, key)| {
                    self.by_position += 1;
                    if self.steps.is_stateful(step) {
                        Some(step)
                    } else {
                        self.note(LoggedStep::Position(step), key);
                        None
                    }
                })
                .collect(),
        }
    }

    fn note(&mut self, step: LoggedStep, key: &[u8]) {
        if let LoggedStep::Named { name, .. } = &step
            && self.steps.drop.contains(name)
        {
            let keys = self.dropped.entry(name.clone()).or_default();
            keys.insert(key.to_vec());
            return;
        }
        self.unknown.entry(step).or_default().insert(key.to_vec());
    }

    /// Refuses state of steps this component lacks: attached elsewhere it would be wrong, and
    /// dropped it would be lost without a word. Returns, for the steps whose state was
    /// dropped as asked, how many keys' state each lost.
    pub(crate) fn finish(self) -> Result<BTreeMap<String, usize>, UnknownStateSteps> {
        if self.unknown.is_empty() {
            return Ok(self
                .dropped
                .into_iter()
                .map(|(name, keys)| (name, keys.len()))
                .collect());
        }
        let steps = self
            .unknown
            .into_iter()
            .map(|(step, keys)| {
                let now = match step {
                    LoggedStep::Position(at) => self.steps.all.get(at as usize).cloned(),
                    LoggedStep::Named { .. } => None,
                };
                UnknownStep {
                    step,
                    keys: keys.len(),
                    now,
                }
            })
            .collect();
        Err(UnknownStateSteps { steps })
    }
}

/// How a log record names a step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum LoggedStep {
    /// By name; `rank` tells apart stateful steps sharing the name (0: the first of them).
    Named { name: String, rank: usize },
    /// By position in the app spec (log formats 1 and 2).
    Position(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownStep {
    pub(crate) step: LoggedStep,
    /// How many keys of that step the checkpoint holds.
    pub(crate) keys: usize,
    /// For a step logged by position: the name of the step at that position now, if any.
    pub(crate) now: Option<String>,
}

/// The last committed checkpoint holds state of stateful steps the running component lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) struct UnknownStateSteps {
    pub(crate) steps: Vec<UnknownStep>,
}

impl fmt::Display for UnknownStateSteps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the log's committed checkpoint holds state of ")?;
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                write!(f, "; and of ")?;
            }
            let keys = match s.keys {
                1 => "1 key".to_string(),
                n => format!("{n} keys"),
            };
            match &s.step {
                LoggedStep::Named { name, rank: 0 } => {
                    write!(f, "stateful step '{name}' ({keys})")?
                }
                // The second and later of the steps sharing a name.
                LoggedStep::Named { name, rank } => {
                    write!(f, "stateful step '{name}' #{} ({keys})", rank + 1)?
                }
                LoggedStep::Position(at) => {
                    write!(
                        f,
                        "the stateful step at position {at} of the app spec ({keys}; "
                    )?;
                    match &s.now {
                        Some(name) => write!(f, "that step is now '{name}', not stateful)")?,
                        None => write!(f, "the application has fewer steps now)")?,
                    }
                }
            }
        }
        write!(
            f,
            ", and this version of the application has no such stateful step (state is never \
             given to another step): run the version that wrote it, start on a new data \
             directory, or drop that state with `--drop-state STEP`"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(steps: &[(&str, StepKind)]) -> Vec<StepSpec> {
        steps
            .iter()
            .map(|(name, kind)| StepSpec {
                name: name.to_string(),
                kind: *kind,
            })
            .collect()
    }

    #[test]
    fn the_table_names_the_stateful_steps_in_spec_order() {
        let steps = StatefulSteps::of(&spec(&[
            ("decode", StepKind::Decoder),
            ("count", StepKind::Stateful),
            ("key", StepKind::KeyBy),
            ("sum", StepKind::Stateful),
        ]));
        assert_eq!(
            steps.table(),
            StateSteps::Named(vec!["count".into(), "sum".into()])
        );
        assert_eq!(steps.slot(1), Some(0));
        assert_eq!(steps.slot(3), Some(1));
        assert_eq!(steps.slot(2), None);
        assert_eq!(steps.slot(9), None);
    }

    #[test]
    fn same_named_stateful_steps_are_told_apart_by_their_order() {
        let steps = StatefulSteps::of(&spec(&[
            ("count", StepKind::Stateful),
            ("split", StepKind::Stateless),
            ("count", StepKind::Stateful),
        ]));
        let names = ["count".to_string(), "count".to_string()];
        assert_eq!(steps.resolve(&names), vec![Some(0), Some(2)]);
        let one = StatefulSteps::of(&spec(&[("count", StepKind::Stateful)]));
        assert_eq!(one.resolve(&names), vec![Some(0), None]);
    }
}
