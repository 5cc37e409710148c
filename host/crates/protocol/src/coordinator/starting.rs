//! Starting: every member starts the new generation, rolled back to the last checkpoint the
//! whole cluster committed, and answers with the checkpoint number its log has passed.

use super::{Action, Command, Coordinator, Lost, Phase, Reply, Round};
use crate::Time;

#[derive(Debug)]
pub(super) struct Starting {
    pub(super) round: Round,
}

impl Coordinator {
    pub(super) fn start_generation(&mut self, now: Time, actions: &mut Vec<Action>) {
        let command = Command::Start {
            generation: self.record.generation,
            recover_to: self.record.committed,
            version: self.record.version,
        };
        let round = self.ask_all(now, command, actions);
        self.phase = Phase::Starting(Starting { round });
    }

    pub(super) fn started(&mut self, now: Time, actions: &mut Vec<Action>) {
        let Phase::Starting(s) = &mut self.phase else {
            return;
        };
        let mut next = self.record.committed + 1;
        for (member, reply) in s.round.take().into_iter().enumerate() {
            match reply {
                Reply::Started { next_checkpoint } => next = next.max(next_checkpoint),
                Reply::Refused(why) if self.first_deploy => {
                    return self.abandon(now, why, actions);
                }
                Reply::Refused(why) if self.change_back(member, &why, actions) => return,
                Reply::Refused(why) => {
                    actions.push(Action::Note {
                        warn: true,
                        text: format!(
                            "cannot start the application: node {member}: {why}; trying again"
                        ),
                    });
                    self.last_loss = format!("node {member} could not start: {why}");
                    return self.recover(now, actions);
                }
                other => {
                    let why = format!("it answered Start with {other:?}");
                    return self.lose(now, Lost { member, why }, actions);
                }
            }
        }
        self.next_checkpoint = next;
        self.recovering_since = None;
        self.started_at = now;
        actions.push(Action::Running {
            generation: self.record.generation,
            checkpoint: self.record.committed,
            first: std::mem::take(&mut self.first_deploy),
        });
        self.swap_done(actions);
        self.run_until_next_checkpoint(now, actions);
    }
}
