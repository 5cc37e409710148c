//! Recovering: every control stream of the last generation is closed (which stops the
//! application on every member); the coordinator waits until every member has joined again,
//! then records the next generation durably before starting it.

use std::time::Duration;

use super::{Action, Coordinator, Phase, Record};
use crate::Time;

/// A generation that ran this long ended by a new failure: recovery starts without waiting.
const RAN_LONG: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(super) struct Recovering {
    /// Back-off: not before this time (after rollbacks in a row).
    not_before: Time,
    /// Since when this recovery waits (a first deploy gives up after its patience).
    since: Time,
    /// When the operator was last told whom the cluster waits for.
    told: Time,
    /// The next generation's record is being written.
    recording: bool,
}

impl Recovering {
    pub(super) fn name(&self) -> &'static str {
        if self.recording {
            "recording generation"
        } else {
            "recovering"
        }
    }

    pub(super) fn poll_timeout(&self, c: &Coordinator) -> Option<Time> {
        if self.recording {
            return None;
        }
        let patience = &c.config.patience;
        let waiting = !c.all_joined();
        let awaiting_record = !c.records_unanswered.is_empty();
        [
            (!waiting && self.not_before > self.since).then_some(self.not_before),
            (waiting || awaiting_record).then_some(self.told + patience.waiting_note),
            (c.first_deploy && waiting).then_some(self.since + patience.first_join),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl Coordinator {
    /// Closes every control stream and waits for every member to join again.
    pub(super) fn recover(&mut self, now: Time, actions: &mut Vec<Action>) {
        let mut not_before = now;
        if !self.first_deploy {
            for member in 0..self.config.members {
                if std::mem::take(&mut self.joined[member]) {
                    actions.push(Action::Disconnect { member });
                }
            }
            if now.saturating_sub(self.started_at) > RAN_LONG {
                self.rollbacks_in_a_row = 0;
            }
            let k = self.rollbacks_in_a_row.min(6);
            self.rollbacks_in_a_row += 1;
            if k > 0 {
                not_before += Duration::from_millis(100 << k).min(Duration::from_secs(5));
            }
        }
        if self.stops > 0 {
            // A stop waits for the members to rejoin from now, however long it waited before.
            self.stop_asked = Some(now);
        }
        self.recovering_since.get_or_insert(now);
        self.phase = Phase::Recovering(Recovering {
            not_before,
            since: now,
            told: now,
            recording: false,
        });
        self.recovering_step(now, actions);
    }

    /// Starts the generation once every member is back and the back-off has passed.
    pub(super) fn recovering_step(&mut self, now: Time, actions: &mut Vec<Action>) {
        let all = self.all_joined();
        let first_deploy = self.first_deploy;
        let patience = self.config.patience.clone();
        let Phase::Recovering(r) = &mut self.phase else {
            return;
        };
        if r.recording {
            return;
        }
        if all {
            // Not while an earlier record is unanswered: it may raise the committed checkpoint.
            if !self.records_unanswered.is_empty() && now >= r.told + patience.waiting_note {
                r.told = now;
                actions.push(Action::Note {
                    warn: false,
                    text: "waiting for the answer to the last record written".into(),
                });
            }
            if now >= r.not_before && self.records_unanswered.is_empty() {
                r.recording = true;
                let record = Record {
                    generation: self.record.generation + 1,
                    committed: self.record.committed,
                    version: self.record.version,
                };
                self.records_unanswered.push_back(record);
                actions.push(Action::Record(record));
            }
            return;
        }
        if first_deploy && now >= r.since + patience.first_join {
            let why = format!(
                "{} did not join within {} s",
                self.missing_names(),
                patience.first_join.as_secs()
            );
            self.abandon(now, why, actions);
            return;
        }
        if now >= r.told + patience.waiting_note {
            r.told = now;
            actions.push(Action::Note {
                warn: false,
                text: format!("waiting for {} to join", self.missing_names()),
            });
        }
    }

    pub(super) fn generation_recorded(
        &mut self,
        now: Time,
        result: Result<(), String>,
        actions: &mut Vec<Action>,
    ) {
        let Phase::Recovering(r) = &mut self.phase else {
            return;
        };
        if !r.recording {
            // The answer to a record of the state a loss ended: the generation's own record
            // waited for it.
            return self.recovering_step(now, actions);
        }
        r.recording = false;
        match result {
            Ok(()) => {
                self.record.generation += 1;
                if self.all_joined() {
                    self.start_generation(now, actions);
                }
            }
            Err(e) if self.first_deploy => self.abandon(now, e, actions),
            Err(e) => {
                actions.push(Action::Note {
                    warn: true,
                    text: format!("cannot start the application: {e}; trying again"),
                });
                self.recover(now, actions);
            }
        }
    }
}
