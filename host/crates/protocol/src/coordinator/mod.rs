//! The cluster's coordinator: membership, generations, cluster-wide checkpoints, recovery and
//! stop, as one state machine. `wallaroo node` drives it for a cluster (on the first node of
//! hosts.txt); `wallaroo run` drives it for a cluster of one.
//!
//! States (one file each):
//! - [`recovering`]: waiting until every member has joined (after a deploy, a loss or a
//!   coordinator restart), then recording the next generation;
//! - [`starting`]: every member starts the generation rolled back to the last checkpoint the
//!   whole cluster committed;
//! - [`running`]: the application runs; the next checkpoint is due at a time;
//! - [`checkpoint`]: Begin, Align (until quiescent), Prepare, Record, Commit;
//! - [`stopping`]: stop the sources, drain, a last checkpoint, wait for the sinks to write it
//!   out (Flush), shut down.
//!
//! Losing a member anywhere but in the last step of a stop rolls the cluster back: every
//! control stream is closed (which stops the application on every member), and the cluster
//! recovers in a new generation from the last checkpoint it committed. A member that joins
//! while it is thought to run has restarted: the same. In the last step (Shutdown) every
//! member holds nothing unwritten: one that leaves or restarts is told to stop again, and the
//! stop fails only if it does not answer in time.

mod checkpoint;
#[cfg(test)]
mod record_tests;
mod recovering;
#[cfg(test)]
mod resize_tests;
mod running;
mod starting;
mod stopping;
#[cfg(test)]
mod swap_tests;
mod swapping;
#[cfg(test)]
pub(super) mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Time;
use crate::quiescence::Alignment;

/// What the coordinator is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A control stream opened by node `member` of `deployment`. `rejoin`: why it joins again
    /// (None: it has just started).
    Join {
        member: u16,
        deployment: String,
        rejoin: Option<Rejoin>,
    },
    /// Member `member` answered the command last sent to it.
    Reply { member: usize, reply: Reply },
    /// Member `member`'s control stream failed.
    Lost { member: usize, why: String },
    /// The record asked for by [`Action::Record`] is durable (or could not be written).
    Recorded(Result<(), String>),
    /// `wallaroo stop`.
    Stop,
    /// A member holds more output than it should: take the next checkpoint now rather than
    /// when it is due.
    CheckpointNow,
    /// `wallaroo deploy` of another version of the application (another component, other
    /// members, other options): change to it at a checkpoint. Answered with
    /// [`Action::Swapped`].
    Change(Change),
    /// The time [`Coordinator::poll_timeout`] gave has come.
    Timeout,
}

/// A command to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start version `version` of the application at `generation`, rolled back to
    /// checkpoint `recover_to`.
    Start {
        generation: u64,
        recover_to: u64,
        version: u64,
    },
    /// Make ready to run version `version`: have it compiled, and check that it can take
    /// over the running version's state.
    Ready {
        version: u64,
    },
    /// Every member is drained at checkpoint `checkpoint`: hand the state of the key groups
    /// version `version` gives to other members to them, and log what is handed here, durably.
    Move {
        checkpoint: u64,
        version: u64,
    },
    /// This member is no longer one: stop the application and keep its data aside.
    Leave,
    Begin {
        checkpoint: u64,
    },
    /// Report alignment (soon: once aligned, or after a short wait).
    Align,
    Prepare,
    Commit {
        checkpoint: u64,
    },
    StopSources,
    /// Report what is queued.
    Drain,
    /// The stop's last checkpoint, `checkpoint`, committed: answer once this member's sinks
    /// have written out everything it released, so that nothing is left in its log for a
    /// recovery to write and it may forget the deployment.
    Flush {
        checkpoint: u64,
    },
    /// Stop the application and forget the deployment.
    Shutdown,
}

/// A member's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Started {
        next_checkpoint: u64,
    },
    Ok,
    Aligned(Alignment),
    Prepared(bool),
    /// To `Drain`: batches queued, and routed batches sent and received since start.
    Drained {
        in_flight: usize,
        sent: u64,
        received: u64,
    },
    Stopped,
    Refused(String),
}

/// Why a node that was a member joins again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejoin {
    /// The node whose data stream from this one broke, if that was the reason.
    pub peer: Option<u16>,
    pub why: String,
}

/// A change of the application asked by `wallaroo deploy`: the version it makes, and what
/// the core must know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Above the record's version.
    pub version: u64,
    /// Member slots of the new version: the members there are, and new ones after them, which
    /// must join before the change begins.
    pub members: usize,
    /// Members that the new version has no more: they stop once it is recorded.
    pub removed: Vec<usize>,
    /// The new version's time between checkpoints (None: resilience none).
    pub checkpoint_interval: Option<Duration>,
    /// Key groups change owners: the sources stop and the cluster drains before the change's
    /// checkpoint, and the state of the groups that move is handed over after it.
    pub moves: bool,
}

impl Change {
    /// Another component, everything else as it is.
    pub fn swap(version: u64, members: usize, checkpoint_interval: Option<Duration>) -> Self {
        Change {
            version,
            members,
            removed: Vec::new(),
            checkpoint_interval,
            moves: false,
        }
    }
}

/// What a member slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Member,
    /// Joins for a change that adds it: takes part in the change's Ready and Move only.
    Joining,
    /// Removed by an earlier change: takes part in nothing.
    Retired,
}

impl Role {
    /// Whether a slot in this role is sent `command`.
    fn takes(self, command: &Command) -> bool {
        match self {
            Role::Member => true,
            Role::Joining => matches!(
                command,
                Command::Ready { .. } | Command::Move { .. } | Command::Shutdown
            ),
            Role::Retired => false,
        }
    }
}

/// The answer a slot that is not sent `command` counts as having given.
fn neutral(command: &Command) -> Reply {
    match command {
        Command::Start { .. } => Reply::Started { next_checkpoint: 0 },
        Command::Align => Reply::Aligned(Alignment {
            aligned: true,
            routed_in_flight: 0,
            sent: 0,
            received: 0,
        }),
        Command::Drain => Reply::Drained {
            in_flight: 0,
            sent: 0,
            received: 0,
        },
        Command::Prepare => Reply::Prepared(true),
        Command::Shutdown => Reply::Stopped,
        _ => Reply::Ok,
    }
}

/// What the coordinator keeps durably: the generation running and the last checkpoint the
/// whole cluster committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    pub generation: u64,
    pub committed: u64,
    /// The version of the application the cluster runs (changed by a swap).
    #[serde(default)]
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keep this join's control stream as member `member`'s (replacing any older one).
    Accept {
        member: usize,
    },
    /// A join from a node not of this deployment: answer it with `why` and drop it.
    Refuse {
        member: u16,
        why: String,
    },
    Send {
        member: usize,
        command: Command,
    },
    /// Close member `member`'s control stream: it stops the application.
    Disconnect {
        member: usize,
    },
    /// Write the record durably; answer with [`Event::Recorded`], records in the order asked.
    Record(Record),
    /// Generation `generation` runs everywhere from `checkpoint` (`first`: the deploy's
    /// answer).
    Running {
        generation: u64,
        checkpoint: u64,
        first: bool,
    },
    /// The deploy failed before anything ran; the coordinator ends after telling members.
    DeployFailed(String),
    /// Answer every stop asked so far: Ok once the application stopped everywhere.
    AnswerStops(Result<(), String>),
    /// The answer to [`Event::Change`]: Ok(version) once the new version runs everywhere;
    /// Err if the cluster runs the version before (or a change back to it, see
    /// [`Action::ChangingBack`]).
    Swapped(Result<u64, String>),
    /// The version a change recorded cannot start: the cluster changes back to what version
    /// `like` ran (its component, members and options), recorded as version `version`.
    ChangingBack {
        version: u64,
        from: u64,
        like: u64,
    },
    /// A line for the operator.
    Note {
        warn: bool,
        text: String,
    },
    /// Nothing more to do: the application stopped or was abandoned.
    Done,
}

/// Durations the coordinator waits for things.
#[derive(Debug, Clone)]
pub struct Patience {
    /// A member's answer to a command, before it counts as lost.
    pub answer: Duration,
    /// Alignment, before the coordinator says what holds it up.
    pub align: Duration,
    /// Nodes to rejoin a recovering cluster, for a stop.
    pub stop: Duration,
    /// Every node to join a first deploy.
    pub first_join: Duration,
    /// Between drain reports.
    pub drain_poll: Duration,
    /// How often recovery says whom it waits for.
    pub waiting_note: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            answer: Duration::from_secs(120),
            align: Duration::from_secs(10),
            stop: Duration::from_secs(30),
            first_join: Duration::from_secs(60),
            drain_poll: Duration::from_millis(10),
            waiting_note: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub deployment: String,
    /// Member slots, by index; member 0 is the coordinator's own node.
    pub members: usize,
    /// Slots of members removed by earlier changes.
    pub retired: Vec<usize>,
    /// Time between checkpoints; None: no checkpoints (resilience none).
    pub checkpoint_interval: Option<Duration>,
    pub patience: Patience,
}

/// The member named as lost, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub member: usize,
    pub why: String,
}

#[derive(Debug)]
enum Phase {
    Recovering(recovering::Recovering),
    Starting(starting::Starting),
    Running(running::Running),
    Checkpoint(checkpoint::Checkpoint),
    Stopping(stopping::Stopping),
    Swapping(swapping::Swapping),
    /// A deploy that failed: members are told to forget it; ends when they answered.
    Abandoning(Round),
    Done,
}

/// Answers awaited from every member to one command.
#[derive(Debug)]
struct Round {
    replies: Vec<Option<Reply>>,
    deadline: Time,
}

impl Round {
    fn complete(&self) -> bool {
        self.replies.iter().all(Option::is_some)
    }

    fn take(&mut self) -> Vec<Reply> {
        self.replies.iter_mut().filter_map(Option::take).collect()
    }
}

pub struct Coordinator {
    config: Config,
    record: Record,
    phase: Phase,
    joined: Vec<bool>,
    /// Per slot (as long as `joined`).
    roles: Vec<Role>,
    /// The deploy has not been answered yet.
    first_deploy: bool,
    /// The checkpoint the next one must exceed.
    next_checkpoint: u64,
    /// Rollbacks since the last commit: recovery waits longer after each, so a member that
    /// cannot take part (a full disk) does not make the cluster roll back in a tight loop.
    rollbacks_in_a_row: u32,
    /// When the running generation started.
    started_at: Time,
    /// Stops asked and not yet answered, and since when they wait for a recovery.
    stops: usize,
    stop_asked: Option<Time>,
    /// Why the cluster last rolled back.
    last_loss: String,
    recovering_since: Option<Time>,
    /// Members' names for notes (see [`Coordinator::set_names`]).
    names: Vec<String>,
    /// A swap asked and not yet answered.
    swap: Option<swapping::Asked>,
    /// Records asked for and not answered, in order. A loss can leave the state that asked
    /// for one before its answer comes; only the answer to the last one asked is for the
    /// state, but every one that is durable counts (see [`Coordinator::recorded`]).
    records_unanswered: VecDeque<Record>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("record", &self.record)
            .field("phase", &self.phase)
            .field("joined", &self.joined)
            .finish()
    }
}

/// What `wallaroo status` shows of a recovering cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryView {
    pub since: Time,
    /// Members that have not joined.
    pub missing: Vec<usize>,
    /// Where the cluster resumes.
    pub checkpoint: u64,
    pub reason: String,
}

impl Coordinator {
    /// A coordinator of a deployment whose durable record is `record`. `first_deploy`: the
    /// deployment is new (its deploy waits for the answer); otherwise the coordinator
    /// restarted and the cluster rolls back to `record.committed` once every member joined.
    pub fn new(
        config: Config,
        record: Record,
        first_deploy: bool,
        now: Time,
    ) -> (Self, Vec<Action>) {
        let members = config.members;
        let roles = (0..members)
            .map(|m| match config.retired.contains(&m) {
                true => Role::Retired,
                false => Role::Member,
            })
            .collect();
        let mut c = Coordinator {
            config,
            record,
            phase: Phase::Done,
            joined: vec![false; members],
            roles,
            first_deploy,
            next_checkpoint: record.committed + 1,
            rollbacks_in_a_row: 0,
            started_at: now,
            stops: 0,
            stop_asked: None,
            last_loss: String::new(),
            recovering_since: None,
            names: Vec::new(),
            swap: None,
            records_unanswered: VecDeque::new(),
        };
        let mut actions = Vec::new();
        if !first_deploy {
            actions.push(Action::Note {
                warn: false,
                text: format!(
                    "coordinating deployment {} again: the cluster rolls back to checkpoint {} \
                     once every node has joined",
                    c.config.deployment, record.committed
                ),
            });
        }
        c.recover(now, &mut actions);
        (c, actions)
    }

    pub fn record(&self) -> Record {
        self.record
    }

    /// Member slots (members, retired ones, and new ones a change under way adds).
    pub fn members(&self) -> usize {
        self.config.members
    }

    /// The application runs (no recovery, no stop under way).
    pub fn running(&self) -> bool {
        matches!(self.phase, Phase::Running(_) | Phase::Checkpoint(_))
    }

    pub fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The state's name, for traces.
    pub fn state(&self) -> &'static str {
        match &self.phase {
            Phase::Recovering(r) => r.name(),
            Phase::Starting(_) => "starting",
            Phase::Running(_) => "running",
            Phase::Checkpoint(c) => c.name(),
            Phase::Stopping(s) => s.name(),
            Phase::Swapping(s) => s.name(),
            Phase::Abandoning(_) => "abandoning",
            Phase::Done => "done",
        }
    }

    /// While the cluster recovers: what it waits for.
    pub fn recovery(&self) -> Option<RecoveryView> {
        let since = self.recovering_since?;
        Some(RecoveryView {
            since,
            missing: self.missing(),
            checkpoint: self.record.committed,
            reason: self.last_loss.clone(),
        })
    }

    /// When the driver must call `handle(Event::Timeout)`, if nothing else happens first.
    pub fn poll_timeout(&self) -> Option<Time> {
        let round = |r: &Round| Some(r.deadline);
        let phase = match &self.phase {
            Phase::Recovering(r) => r.poll_timeout(self),
            Phase::Starting(s) => round(&s.round),
            Phase::Running(r) => r.poll_timeout(),
            Phase::Checkpoint(c) => c.poll_timeout(),
            Phase::Stopping(s) => s.poll_timeout(),
            Phase::Swapping(s) => s.poll_timeout(),
            Phase::Abandoning(r) => round(r),
            Phase::Done => None,
        };
        [phase, self.stop_deadline(), self.join_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When a stop asked while members are missing from a recovering cluster gives up. Once
    /// every member has joined, the stop waits for the start, however long it takes.
    fn stop_deadline(&self) -> Option<Time> {
        let missing = self.recovering_since.is_some() && !self.all_joined();
        self.stop_asked
            .filter(|_| missing)
            .map(|at| at + self.config.patience.stop)
    }

    pub fn handle(&mut self, now: Time, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Join {
                member,
                deployment,
                rejoin,
            } => self.join(now, member, &deployment, rejoin, &mut actions),
            Event::Reply { member, reply } => self.reply(now, member, reply, &mut actions),
            Event::Lost { member, why } => self.stream_lost(now, member, why, &mut actions),
            Event::Recorded(result) => self.recorded(now, result, &mut actions),
            Event::Stop => self.stop_asked_now(now, &mut actions),
            Event::CheckpointNow => match self.phase {
                Phase::Running(_) if self.config.checkpoint_interval.is_some() => {
                    self.begin_checkpoint(now, checkpoint::Then::Run, &mut actions)
                }
                Phase::Stopping(_) => self.checkpoint_while_draining(now, &mut actions),
                _ => {}
            },
            Event::Change(change) => self.swap_asked(now, change, &mut actions),
            Event::Timeout => self.timeout(now, &mut actions),
        }
        actions
    }

    fn join(
        &mut self,
        now: Time,
        member: u16,
        deployment: &str,
        rejoin: Option<Rejoin>,
        actions: &mut Vec<Action>,
    ) {
        let index = member as usize;
        if deployment == self.config.deployment && self.roles.get(index) == Some(&Role::Retired) {
            actions.push(Action::Refuse {
                member,
                why: format!(
                    "node {member} was removed from deployment {}",
                    self.config.deployment
                ),
            });
            return;
        }
        if deployment == self.config.deployment && index >= self.config.members {
            actions.push(Action::Refuse {
                member,
                why: format!(
                    "node {member} is not a member of deployment {deployment} yet: the change that \
                     adds it has not begun (it joins again)"
                ),
            });
            return;
        }
        if deployment != self.config.deployment {
            actions.push(Action::Refuse {
                member,
                why: format!(
                    "this cluster runs deployment {}, not {deployment} (node {member})",
                    self.config.deployment
                ),
            });
            return;
        }
        if matches!(self.phase, Phase::Done) {
            return;
        }
        let was_member = std::mem::replace(&mut self.joined[index], true);
        actions.push(Action::Accept { member: index });
        if self.roles[index] == Role::Joining {
            return self.joining_joined(now, index, was_member, actions);
        }
        if let Phase::Recovering(_) = self.phase {
            self.recovering_step(now, actions);
            return;
        }
        if matches!(self.phase, Phase::Abandoning(_)) {
            return;
        }
        if self.shutting_down() {
            // Every member wrote out all it released (the stop's Flush): one that left, or
            // restarted, in the last step has nothing a recovery would bring back, so it only
            // stops too. No other member is to blame for its leaving: peers are stopping.
            return self.shutdown_again(now, index, actions);
        }
        if was_member || self.all_joined() {
            let lost = rejoined(index, rejoin.as_ref(), self.config.members);
            self.lose(now, lost, actions);
        }
    }

    fn reply(&mut self, now: Time, member: usize, reply: Reply, actions: &mut Vec<Action>) {
        if self.roles.get(member).is_none_or(|r| *r == Role::Retired) {
            // A removed member's (or a new one's the change no longer has) last answer.
            return;
        }
        let expected = self.round_mut().and_then(|r| {
            let slot = r.replies.get_mut(member)?;
            slot.is_none().then(|| *slot = Some(reply.clone()))
        });
        if expected.is_none() {
            if matches!(self.phase, Phase::Abandoning(_) | Phase::Done) {
                // An answer sent before the Shutdown, or after the end: nothing runs to
                // roll back.
                return;
            }
            let lost = Lost {
                member,
                why: format!("it answered {reply:?} to no command"),
            };
            self.lose(now, lost, actions);
            return;
        }
        if !self.round_mut().is_some_and(|r| r.complete()) {
            return;
        }
        match &mut self.phase {
            Phase::Starting(_) => self.started(now, actions),
            Phase::Checkpoint(_) => self.checkpoint_replies(now, actions),
            Phase::Swapping(_) => self.swapping_replies(now, actions),
            Phase::Stopping(_) => self.stopping_replies(now, actions),
            Phase::Abandoning(_) => {
                self.phase = Phase::Done;
                actions.push(Action::Done);
            }
            _ => {}
        }
    }

    fn round_mut(&mut self) -> Option<&mut Round> {
        match &mut self.phase {
            Phase::Starting(s) => Some(&mut s.round),
            Phase::Checkpoint(c) => c.round.as_mut(),
            Phase::Stopping(s) => s.round.as_mut(),
            Phase::Swapping(s) => s.round.as_mut(),
            Phase::Abandoning(r) => Some(r),
            _ => None,
        }
    }

    fn stream_lost(&mut self, now: Time, member: usize, why: String, actions: &mut Vec<Action>) {
        if member >= self.config.members || !self.joined[member] {
            return;
        }
        match self.roles[member] {
            Role::Joining => return self.joining_lost(now, member, why, actions),
            Role::Retired => {
                self.joined[member] = false;
                return;
            }
            Role::Member => {}
        }
        let answered = self
            .round_mut()
            .and_then(|r| r.replies.get(member))
            .is_some_and(Option::is_some);
        if self.shutting_down() {
            // A member closes its control stream once it has stopped. One that has not
            // answered yet joins again and is told to stop again, or is lost at the
            // round's deadline.
            self.joined[member] = false;
            if !answered {
                actions.push(Action::Note {
                    warn: true,
                    text: format!(
                        "{} left while stopping ({why}): waiting for it to join again",
                        self.name(member)
                    ),
                });
            }
            return;
        }
        match self.phase {
            Phase::Recovering(_) => self.joined[member] = false,
            Phase::Done => {}
            Phase::Abandoning(ref mut round) => {
                self.joined[member] = false;
                round.replies[member].get_or_insert(Reply::Stopped);
                if round.complete() {
                    self.phase = Phase::Done;
                    actions.push(Action::Done);
                }
            }
            _ => self.lose(now, Lost { member, why }, actions),
        }
    }

    fn recorded(&mut self, now: Time, result: Result<(), String>, actions: &mut Vec<Action>) {
        let Some(asked) = self.records_unanswered.pop_front() else {
            return;
        };
        // A checkpoint recorded after a loss left its Record step is durable all the same:
        // the cluster's record must not go back below it (every member prepared it, so the
        // cluster recovers to it), and the next generation is recorded only after it.
        if result.is_ok() && asked.committed > self.record.committed {
            self.record.committed = asked.committed;
            self.next_checkpoint = self.next_checkpoint.max(asked.committed + 1);
        }
        // Likewise a new version recorded: the cluster runs it from now on, whatever
        // happens next.
        if result.is_ok() && asked.version > self.record.version {
            self.record.version = asked.version;
            if self
                .swap
                .as_ref()
                .is_some_and(|s| s.change.version == asked.version)
            {
                self.apply_change(actions);
            }
        }
        if let Err(e) = &result {
            self.swap_record_failed(&asked, e, actions);
        }
        if !self.records_unanswered.is_empty() {
            return;
        }
        match &self.phase {
            Phase::Recovering(_) => self.generation_recorded(now, result, actions),
            Phase::Checkpoint(_) => self.checkpoint_recorded(now, result, actions),
            Phase::Swapping(_) => self.swap_recorded(now, result, actions),
            _ => {}
        }
    }

    fn stop_asked_now(&mut self, now: Time, actions: &mut Vec<Action>) {
        self.stops += 1;
        match self.phase {
            Phase::Running(_) => self.begin_stop(now, actions),
            Phase::Recovering(_) | Phase::Starting(_) => {
                self.stop_asked.get_or_insert(now);
                actions.push(Action::Note {
                    warn: false,
                    text: format!(
                        "stop asked while {} rejoin: stopping once the cluster has recovered",
                        self.missing_names()
                    ),
                });
            }
            Phase::Done | Phase::Abandoning(_) => {
                self.answer_stops(Err("the application is not running".into()), actions)
            }
            // Carried out after the checkpoint; a stop under way answers it too.
            Phase::Checkpoint(_) | Phase::Stopping(_) | Phase::Swapping(_) => {}
        }
    }

    fn timeout(&mut self, now: Time, actions: &mut Vec<Action>) {
        self.join_timeout(now, actions);
        if self.stop_deadline().is_some_and(|at| now >= at) {
            let why = format!(
                "the cluster is recovering and {} did not join within {} s; start the missing \
                 nodes (their data directories hold the deployment) and stop again",
                self.missing_names(),
                self.config.patience.stop.as_secs()
            );
            self.answer_stops(Err(why), actions);
        }
        if let Some(round) = self.round_mut()
            && now >= round.deadline
        {
            let member = round.replies.iter().position(Option::is_none).unwrap_or(0);
            let why = format!("no answer in {} s", self.config.patience.answer.as_secs());
            if let Phase::Abandoning(_) = self.phase {
                self.phase = Phase::Done;
                actions.push(Action::Done);
            } else if self.shutting_down() {
                self.lose(now, Lost { member, why }, actions);
            } else {
                self.stream_lost(now, member, why, actions);
            }
            return;
        }
        match &self.phase {
            Phase::Recovering(_) => self.recovering_step(now, actions),
            Phase::Running(_) => self.running_timeout(now, actions),
            Phase::Checkpoint(_) => self.checkpoint_timeout(now, actions),
            Phase::Stopping(_) => self.stopping_timeout(now, actions),
            Phase::Swapping(_) => self.swapping_timeout(now, actions),
            _ => {}
        }
    }

    /// Member `lost.member` is lost: every control stream closes and the cluster recovers
    /// from its last committed checkpoint. In the last step of a stop, when members may have
    /// stopped already, the stop fails instead.
    fn lose(&mut self, now: Time, lost: Lost, actions: &mut Vec<Action>) {
        let Lost { member, why } = lost;
        if self.first_deploy {
            // Its stream is gone: it cannot be told to forget the deployment, nor answer.
            self.joined[member] = false;
            let why = format!("node {member} lost while starting: {why}");
            self.abandon(now, why, actions);
            return;
        }
        if self.shutting_down() {
            let why = format!(
                "node {member} lost while stopping: {why}; restart it (its data directory holds \
                 the deployment) and stop again"
            );
            self.answer_stops(Err(why), actions);
            self.phase = Phase::Done;
            actions.push(Action::Done);
            return;
        }
        let during = match self.phase {
            Phase::Stopping(_) => " while stopping",
            Phase::Starting(_) => " while starting",
            _ => "",
        };
        actions.push(Action::Note {
            warn: true,
            text: format!(
                "{} lost{during} ({why}): rolling the cluster back to checkpoint {}",
                self.name(member),
                self.record.committed
            ),
        });
        self.last_loss = format!("node {member} lost{during}: {why}");
        self.swap_lost(&why, actions);
        // Also a stop asked during a checkpoint, waiting for it to end.
        if self.stops > 0 {
            actions.push(Action::Note {
                warn: false,
                text: "the stop follows once it runs again".into(),
            });
        }
        self.recover(now, actions);
    }

    /// A first deploy failed: tell the members that joined to forget it.
    fn abandon(&mut self, now: Time, why: String, actions: &mut Vec<Action>) {
        self.answer_stops(Err(format!("the deploy failed: {why}")), actions);
        actions.push(Action::DeployFailed(why));
        self.first_deploy = false;
        self.recovering_since = None;
        let mut round = self.round(now);
        for member in 0..self.config.members {
            if self.joined[member] && self.roles[member] != Role::Retired {
                actions.push(Action::Send {
                    member,
                    command: Command::Shutdown,
                });
            } else {
                round.replies[member] = Some(Reply::Stopped);
            }
        }
        if round.complete() {
            self.phase = Phase::Done;
            actions.push(Action::Done);
        } else {
            self.phase = Phase::Abandoning(round);
        }
    }

    /// A round awaiting every slot's answer.
    fn round(&self, now: Time) -> Round {
        Round {
            replies: vec![None; self.config.members],
            deadline: now + self.config.patience.answer,
        }
    }

    /// Sends `command` to every slot whose role takes it and awaits their answers.
    fn ask_all(&self, now: Time, command: Command, actions: &mut Vec<Action>) -> Round {
        ask(&self.config, &self.roles, now, command, actions)
    }

    /// Every member (not a retired slot, nor one joining for a change) has joined.
    fn all_joined(&self) -> bool {
        self.missing().is_empty()
    }

    fn answer_stops(&mut self, answer: Result<(), String>, actions: &mut Vec<Action>) {
        if self.stops > 0 {
            actions.push(Action::AnswerStops(answer));
        }
        self.stops = 0;
        self.stop_asked = None;
    }

    fn missing(&self) -> Vec<usize> {
        (0..self.config.members)
            .filter(|&m| !self.joined[m] && self.roles[m] == Role::Member)
            .collect()
    }

    fn missing_names(&self) -> String {
        let names: Vec<String> = self.missing().iter().map(|&m| self.name(m)).collect();
        names.join(", ")
    }

    /// How the operator knows member `member`: "node 1 (10.0.0.2:7100)" once names are set.
    pub fn name(&self, member: usize) -> String {
        match self.names.get(member) {
            Some(name) => name.clone(),
            None => format!("node {member}"),
        }
    }

    /// Names members in notes (e.g. by address) rather than by index alone.
    pub fn set_names(&mut self, names: Vec<String>) {
        self.names = names;
    }
}

/// Sends `command` to every slot whose role takes it; the round awaits their answers, and
/// counts the others as having given the neutral one.
fn ask(
    config: &Config,
    roles: &[Role],
    now: Time,
    command: Command,
    actions: &mut Vec<Action>,
) -> Round {
    let replies = roles
        .iter()
        .enumerate()
        .map(|(member, role)| match role.takes(&command) {
            true => {
                actions.push(Action::Send { member, command });
                None
            }
            false => Some(neutral(&command)),
        })
        .collect();
    Round {
        replies,
        deadline: now + config.patience.answer,
    }
}

/// Node `index`, a member, joined again, for `rejoin`: which node is lost, and why. A node
/// leaves when its data stream to another node breaks (that other node is the one lost, e.g.
/// killed), when its control stream fails, or joins afresh after a restart.
pub fn rejoined(index: usize, rejoin: Option<&Rejoin>, members: usize) -> Lost {
    let lost = |member, why| Lost { member, why };
    match rejoin {
        Some(Rejoin {
            peer: Some(peer),
            why,
        }) if (*peer as usize) != index && (*peer as usize) < members => lost(
            *peer as usize,
            format!("node {index}'s data stream to it broke: {why}"),
        ),
        Some(Rejoin { why, .. }) => lost(index, format!("it left and joined again: {why}")),
        None => lost(index, "it restarted and joined again".into()),
    }
}

/// The first member that refused, and why.
fn refusal(replies: &[Reply]) -> Option<(usize, String)> {
    replies.iter().enumerate().find_map(|(i, r)| match r {
        Reply::Refused(why) => Some((i, why.clone())),
        _ => None,
    })
}

/// The first member whose answer to `command` is not Ok, as lost.
fn all_ok(replies: &[Reply], command: &str) -> Result<(), Lost> {
    match replies.iter().position(|r| *r != Reply::Ok) {
        Some(member) => Err(Lost {
            member,
            why: format!("it answered {command} with {:?}", replies[member]),
        }),
        None => Ok(()),
    }
}

/// One drain round's reports: whether the cluster is quiescent, or the member that answered
/// something else, as lost.
fn drained(
    quiescence: &mut crate::quiescence::Quiescence,
    replies: Vec<Reply>,
) -> Result<crate::quiescence::Round, Lost> {
    match reports(replies) {
        Ok(reports) => Ok(quiescence.round(&reports)),
        Err((member, reply)) => Err(Lost {
            member,
            why: format!("it answered Drain with {reply:?}"),
        }),
    }
}

/// Quiescence over the members' reports, for alignment and drain.
fn reports(replies: Vec<Reply>) -> Result<Vec<Alignment>, (usize, Reply)> {
    replies
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Reply::Aligned(a) => Ok(a),
            Reply::Drained {
                in_flight,
                sent,
                received,
            } => Ok(Alignment {
                aligned: true,
                routed_in_flight: in_flight,
                sent,
                received,
            }),
            other => Err((i, other)),
        })
        .collect()
}
