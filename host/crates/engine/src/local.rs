//! `wallaroo run`'s coordinator: the protocol core's [`Coordinator`] for a cluster of one,
//! commanding this node's [`Member`] directly instead of over the network. Its checkpoints,
//! its stop (drain, a last checkpoint, shutdown) and its failure handling are the cluster's.
//!
//! It runs on a thread of its own: carrying out a command blocks (on the workers, on the
//! disk). It waits for the core's next deadline, a stop, or a worker asking for an early
//! checkpoint, never by polling.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wallaroo_protocol::coordinator::{
    Action, Command, Config, Coordinator, Event, Patience, Record, Reply,
};
use wallaroo_protocol::participant::{Event as MemberEvent, Reply as MemberReply};

use crate::checkpoint::{ALIGN_WAIT, Member};
use crate::node::Shared;

/// What the node asks of its coordinator.
pub(crate) enum Ask {
    /// Drain, take a last checkpoint, stop; answer once done.
    Stop(flume::Sender<()>),
    /// Take a checkpoint now; answer with its number once it has committed (or why not).
    Checkpoint(flume::Sender<Result<u64, String>>),
}

pub(crate) struct Local {
    core: Coordinator,
    member: Option<Member>,
    shared: Arc<Shared>,
    start: Instant,
    /// Stops asked and not yet answered.
    stops: Vec<flume::Sender<()>>,
    /// Checkpoints asked and not yet answered, each with the last committed one when asked.
    checkpoints: Vec<(u64, flume::Sender<Result<u64, String>>)>,
    /// The member cannot take part any more (its log failed): nothing commits again.
    failed: bool,
}

impl Local {
    /// `member`: None without a log (no checkpoints).
    pub(crate) fn new(member: Option<Member>, shared: Arc<Shared>, interval: Duration) -> Self {
        let start = Instant::now();
        let committed = member.as_ref().map_or(0, Member::last_committed);
        let config = Config {
            deployment: "local".into(),
            members: 1,
            retired: Vec::new(),
            checkpoint_interval: member.as_ref().map(|_| interval),
            patience: Patience {
                // The member answers at once; drain reports wait for the workers themselves.
                drain_poll: Duration::ZERO,
                ..Patience::default()
            },
        };
        let record = Record {
            generation: 0,
            committed,
            version: 0,
        };
        let (core, _) = Coordinator::new(config, record, true, start.elapsed());
        Local {
            core,
            member,
            shared,
            start,
            stops: Vec::new(),
            checkpoints: Vec::new(),
            failed: false,
        }
    }

    pub(crate) fn run(mut self, asks: flume::Receiver<Ask>, nudges: flume::Receiver<()>) {
        let join = Event::Join {
            member: 0,
            deployment: "local".into(),
            rejoin: None,
        };
        let mut events = VecDeque::from([join]);
        loop {
            while let Some(event) = events.pop_front() {
                let actions = self.core.handle(self.start.elapsed(), event);
                for action in actions {
                    if let Some(event) = self.carry_out(action) {
                        events.push_back(event);
                    }
                }
            }
            self.answer_checkpoints();
            if self.core.done() || self.failed {
                break;
            }
            let wait = self
                .core
                .poll_timeout()
                .map(|at| at.saturating_sub(self.start.elapsed()));
            let event = flume::Selector::new()
                .recv(&asks, |ask| match ask {
                    Ok(Ask::Stop(reply)) => {
                        self.stops.push(reply);
                        Some(Event::Stop)
                    }
                    Ok(Ask::Checkpoint(reply)) => match &self.member {
                        Some(member) => {
                            self.checkpoints.push((member.last_committed(), reply));
                            Some(Event::CheckpointNow)
                        }
                        None => {
                            let _ = reply.send(Err("this node keeps no log".into()));
                            None
                        }
                    },
                    // The node is aborting: nothing more to coordinate.
                    Err(_) => None,
                })
                .recv(&nudges, |_| {
                    self.shared
                        .checkpoint_wanted
                        .swap(false, Ordering::SeqCst)
                        .then_some(Event::CheckpointNow)
                });
            let event = match wait {
                Some(wait) => event.wait_timeout(wait).unwrap_or(Some(Event::Timeout)),
                None => event.wait(),
            };
            match event {
                Some(e) => events.push_back(e),
                None if asks.is_disconnected() => return,
                None => {}
            }
        }
        self.answer_stops();
        self.answer_checkpoints();
        // A failed member: what is asked later is answered at once.
        while let Ok(ask) = asks.recv() {
            match ask {
                Ask::Stop(reply) => {
                    let _ = reply.send(());
                }
                Ask::Checkpoint(reply) => {
                    let _ = reply.send(Err(Self::CANNOT.into()));
                }
            }
        }
    }

    const CANNOT: &str = "the node takes no more checkpoints (its write-ahead log failed or it \
                          stopped)";

    /// Answers the checkpoints asked for once one committed after the ask (a checkpoint
    /// already under way when asked also serves: its cut is earlier, its replay longer).
    fn answer_checkpoints(&mut self) {
        let done = self.core.done() || self.failed;
        let committed = self.member.as_ref().map_or(0, Member::last_committed);
        self.checkpoints.retain(|(asked_at, reply)| {
            if committed > *asked_at {
                let _ = reply.send(Ok(committed));
                false
            } else if done {
                let _ = reply.send(Err(Self::CANNOT.into()));
                false
            } else {
                true
            }
        });
    }

    fn carry_out(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Send { member, command } => Some(Event::Reply {
                member,
                reply: self.obey(command),
            }),
            // The member's own commit record is the cluster of one's record.
            Action::Record(_) => Some(Event::Recorded(Ok(()))),
            Action::Disconnect { .. } | Action::DeployFailed(_) => {
                // Only a member whose log failed refuses here: a restart recovers it.
                tracing::error!(
                    "the write-ahead log has failed: nothing commits any more; stop the node, \
                     free the disk and start it again to recover from the last checkpoint"
                );
                self.failed = true;
                None
            }
            Action::AnswerStops(_) | Action::Done => {
                self.answer_stops();
                None
            }
            Action::Note { warn: true, text } => {
                tracing::warn!("{text}");
                None
            }
            Action::Note { warn: false, text } => {
                tracing::debug!("{text}");
                None
            }
            // Nothing here asks for a swap.
            Action::Accept { .. }
            | Action::Refuse { .. }
            | Action::Running { .. }
            | Action::ChangingBack { .. }
            | Action::Swapped(_) => None,
        }
    }

    fn obey(&mut self, command: Command) -> Reply {
        let shared = &self.shared;
        let Some(member) = self.member.as_mut() else {
            return match command {
                Command::Start { .. } => Reply::Started { next_checkpoint: 1 },
                Command::Drain => drained(shared),
                Command::Shutdown => Reply::Stopped,
                Command::StopSources => Reply::Ok,
                other => Reply::Refused(format!("{other:?}: this node keeps no log")),
            };
        };
        let answer = |done: Result<(), String>| done.map_or_else(Reply::Refused, |()| Reply::Ok);
        match command {
            Command::Start { .. } => Reply::Started {
                next_checkpoint: member.next_number(),
            },
            Command::Begin { checkpoint } => {
                answer(member.expect(MemberEvent::Begin { checkpoint }, MemberReply::Began))
            }
            Command::Align => Reply::Aligned(member.wait_alignment(Instant::now() + ALIGN_WAIT)),
            Command::Prepare => {
                Reply::Prepared(member.handle(MemberEvent::Prepare) == Some(MemberReply::Prepared))
            }
            Command::Commit { checkpoint } => {
                answer(member.expect(MemberEvent::Commit { checkpoint }, MemberReply::Committed))
            }
            // `wallaroo run` stops its sources before it stops the node.
            Command::StopSources => Reply::Ok,
            Command::Drain => drained(shared),
            // A cluster of one loses no member between this and Shutdown, whose end writes
            // the sinks out.
            Command::Flush { .. } => Reply::Ok,
            Command::Shutdown => Reply::Stopped,
            Command::Ready { .. } => Reply::Refused("no other version is at hand".into()),
            // A cluster of one: nothing moves and no member leaves.
            Command::Move { .. } | Command::Leave => {
                Reply::Refused(format!("{command:?}: a cluster of one changes no members"))
            }
        }
    }

    fn answer_stops(&mut self) {
        for reply in self.stops.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// What is still queued, once it is nothing or after a short wait for the workers.
fn drained(shared: &Shared) -> Reply {
    let deadline = Instant::now() + ALIGN_WAIT;
    shared.wait_idle(deadline);
    Reply::Drained {
        in_flight: shared.in_flight(),
        sent: 0,
        received: 0,
    }
}
