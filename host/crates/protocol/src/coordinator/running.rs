//! Running: the application runs everywhere; the next checkpoint is due at a time.

use super::{Action, Coordinator, Phase};
use crate::Time;

#[derive(Debug)]
pub(super) struct Running {
    /// None: no checkpoints (resilience none).
    due: Option<Time>,
}

impl Running {
    pub(super) fn poll_timeout(&self) -> Option<Time> {
        self.due
    }
}

impl Coordinator {
    /// Runs until the next checkpoint is due, or stops now if a stop waits.
    pub(super) fn run_until_next_checkpoint(&mut self, now: Time, actions: &mut Vec<Action>) {
        self.phase = Phase::Running(Running {
            due: self.config.checkpoint_interval.map(|i| now + i),
        });
        if self.stops > 0 {
            if self.swap.take_if(|s| s.waiting).is_some() {
                actions.push(Action::Swapped(Err("the application is stopping".into())));
            }
            self.begin_stop(now, actions);
        } else {
            self.swap_waiting(now, actions);
        }
    }

    pub(super) fn running_timeout(&mut self, now: Time, actions: &mut Vec<Action>) {
        if let Phase::Running(Running { due: Some(due) }) = self.phase
            && now >= due
        {
            self.begin_checkpoint(now, super::checkpoint::Then::Run, actions);
        }
    }
}
