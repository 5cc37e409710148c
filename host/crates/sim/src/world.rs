//! One simulated cluster: the real coordinator and participants, gates per worker, a model
//! engine (inboxes, routed batches, keyed counters, held output), simulated logs, a simulated
//! network of in-order streams, clients, a tagged sink, and faults, all driven by one queue of
//! timed events and one seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use wallaroo_protocol::coordinator::{
    self, Command, Config, Coordinator, Patience, Record, Rejoin, Reply,
};
use wallaroo_protocol::gate::{Admit, Gate, Input};
use wallaroo_protocol::participant::{self, Participant, Resume};
use wallaroo_protocol::quiescence::Alignment;
use wallaroo_protocol::{Lsn, Time};

use crate::rng::Rng;
use crate::wal::{self, Key, Rec, Wal};

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

/// Once faults stop, a checkpoint must commit within this much simulated time. The worst case
/// after the last fault: a broken stream noticed (0.5 s), a crashed member restarted (2 s) and
/// rejoined (0.2 s), the coordinator's back-off after rollbacks in a row (at most 5 s), an
/// answer lost to a break noticed late and timed out (`Patience::answer`, 5 s here), the
/// checkpoint interval (0.5 s) and the checkpoint's own rounds (well under 1 s): about 14 s,
/// doubled for one more rollback a late-noticed break of the faulty period can still cause.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(30);

/// What a run may vary; `None`: chosen from the seed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub members: Option<usize>,
    pub workers: Option<usize>,
    /// Simulated time with faults.
    pub fault_time: Option<Duration>,
    /// Keep every trace line (for replay comparison), not only the last ones.
    pub full_trace: bool,
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub members: usize,
    pub workers: usize,
    pub sim_time: Duration,
    pub events: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub checkpoints: u64,
    pub recoveries: u64,
    /// Swaps asked, answered Ok, answered Err, and unanswered (the coordinator crashed).
    pub swaps: BTreeMap<&'static str, u64>,
    /// Faults injected while a swap was under way, per step of the swap.
    pub swap_faults: BTreeMap<&'static str, u64>,
    /// Data streams broken while the cluster stopped, per step of the stop.
    pub stop_faults: BTreeMap<&'static str, u64>,
    pub violation: Option<String>,
    /// The last trace lines (all of them with `full_trace`).
    pub trace: Vec<String>,
}

const TRACE_TAIL: usize = 50;

type ConnId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Coord,
    Member(usize),
    Client(usize),
    Sink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Control {
        member: usize,
    },
    Data {
        generation: u64,
        from: usize,
        to: usize,
    },
    Client {
        client: usize,
        member: usize,
    },
    Sink {
        member: usize,
        app: u64,
    },
}

#[derive(Debug, Clone)]
enum Msg {
    Join {
        member: usize,
        rejoin: Option<Rejoin>,
    },
    Command(Command),
    Reply(Reply),
    Batch {
        epoch: u64,
        worker: usize,
        keys: Vec<Key>,
    },
    Hello {
        position: u64,
    },
    Frame {
        seq: u64,
        keys: Vec<Key>,
    },
    Ack {
        next: u64,
    },
    Output {
        epoch: u64,
        /// (seq, key, count, version).
        items: Vec<(u64, Key, u64, u64)>,
    },
}

/// A connection: two in-order directions (a to b is 0, b to a is 1) that break together.
#[derive(Debug)]
struct Conn {
    ends: [End; 2],
    kind: Kind,
    queues: [VecDeque<Msg>; 2],
    last_at: [u64; 2],
    broken: bool,
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        conn: ConnId,
        dir: usize,
    },
    Broken {
        conn: ConnId,
        end: End,
        why: String,
    },
    CoordTimer {
        inc: u64,
    },
    Work {
        member: usize,
        app: u64,
        worker: usize,
    },
    AlignDeadline {
        member: usize,
        app: u64,
    },
    Sync {
        member: usize,
        inc: u64,
    },
    RecordDone {
        inc: u64,
    },
    ClientTick {
        client: usize,
    },
    Restart {
        member: usize,
    },
    AgentJoin {
        member: usize,
        inc: u64,
    },
    Fault,
    /// One more fault, aimed at a step of a swap (the steps are short: few random faults
    /// fall in them).
    SwapFault,
    /// A data stream breaks while the cluster stops, after faults stopped: the stop must
    /// still succeed.
    StopFault,
    Heal {
        a: usize,
        b: usize,
    },
    DiskFree {
        member: usize,
    },
    FaultsEnd,
    Liveness {
        committed: u64,
    },
    AskStop,
    AskSwap,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug, Clone)]
enum Item {
    Source { keys: Vec<Key> },
    Routed { epoch: u64, keys: Vec<Key> },
    Barrier,
    Snapshot,
}

#[derive(Debug, Default)]
struct Worker {
    gate: Gate,
    inbox: VecDeque<Item>,
    /// Source input held at the barrier.
    stash: VecDeque<Item>,
    /// Routed input of a later epoch, run right after the snapshot.
    ahead: VecDeque<Item>,
    state: BTreeMap<Key, u64>,
    dirty: BTreeSet<Key>,
    /// (key, count, version).
    held: Vec<(Key, u64, u64)>,
    scheduled: bool,
}

impl Worker {
    fn has_work(&self) -> bool {
        !self.inbox.is_empty() || (!self.gate.at_barrier() && !self.stash.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Begin,
    Prepare,
    Commit,
}

/// A worker's share of a checkpoint: its changed (or every) counter, and its held output.
type Part = (Vec<(Key, u64)>, Vec<(Key, u64, u64)>);

#[derive(Debug)]
struct Snapshot {
    checkpoint: u64,
    full: bool,
    cut: Lsn,
    released: Option<u64>,
    parts: Vec<Option<Part>>,
}

#[derive(Debug)]
struct App {
    id: u64,
    generation: u64,
    /// The version of the application it runs (its output is tagged with it).
    version: u64,
    participant: Participant,
    workers: Vec<Worker>,
    sent: u64,
    received: u64,
    routed_in_flight: usize,
    sources_stopped: bool,
    positions: BTreeMap<u32, u64>,
    cut_positions: BTreeMap<u32, u64>,
    pending: Option<(Pending, ConnId)>,
    align: Option<ConnId>,
    snapshot: Option<Snapshot>,
    links: BTreeMap<usize, ConnId>,
    sink: ConnId,
    /// Answered Ok once the sink has written the output of a checkpoint: Move for a member
    /// a change removes (it will not be there to release it again), and a stop's Flush. The
    /// control stream and the checkpoint.
    until_written: Option<(ConnId, u64)>,
}

impl App {
    fn alignment(&self) -> Alignment {
        Alignment {
            aligned: self.participant.aligning()
                && self.workers.iter().all(|w| w.gate.at_barrier()),
            routed_in_flight: self.routed_in_flight,
            sent: self.sent,
            received: self.received,
        }
    }

    fn queued(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.inbox.len() + w.stash.len() + w.ahead.len())
            .sum()
    }
}

#[derive(Debug)]
struct Member {
    up: bool,
    inc: u64,
    wal: Wal,
    control: Option<ConnId>,
    left: Option<Rejoin>,
    app: Option<App>,
    retired: bool,
    /// Holds the deployment (a spare member holds none until a grow adds it).
    assigned: bool,
    sync_pending: bool,
    clients: Vec<ConnId>,
    /// (lsn, client connection, next seq): acknowledged once durable past lsn.
    acks: VecDeque<(Lsn, ConnId, u64)>,
}

struct CoordHost {
    coord: Coordinator,
    streams: Vec<Option<ConnId>>,
    inc: u64,
    writes: VecDeque<Record>,
    writing: bool,
    timer: Option<u64>,
    spins: u32,
}

#[derive(Debug)]
struct Client {
    member: usize,
    frames: Vec<Vec<Key>>,
    acked: u64,
    next: u64,
    conn: Option<ConnId>,
    window: u64,
    /// Time between frames.
    pace: u64,
    /// The member has told where the stream resumes on this connection.
    greeted: bool,
    /// After a `duplicate` fault: resend from what was acknowledged, not from the position.
    resend: bool,
    ticking: bool,
}

/// Relative weights of the fault kinds, chosen per seed.
const FAULT_KINDS: [&str; 9] = [
    "crash",
    "control-drop",
    "data-drop",
    "client-drop",
    "duplicate",
    "partition",
    "fsync-fail",
    "disk-full",
    "record-fail",
];

pub struct World {
    rng: Rng,
    faults_rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    conns: Vec<Conn>,
    members: Vec<Member>,
    workers: usize,
    keys: u32,
    coord: Option<CoordHost>,
    config: Config,
    clients: Vec<Client>,
    next_app: u64,
    partitions: BTreeSet<(usize, usize)>,
    fault_weights: [u64; 9],
    faults_on: bool,
    faults_over: bool,
    fault_end: u64,
    stop_asked: bool,
    /// Data streams left to break while the stop runs (drawn when it is asked).
    stop_faults_left: u64,
    stop_faults: BTreeMap<&'static str, u64>,
    finished: bool,
    net_delay: (u64, u64),
    /// The coordinator's next record write fails.
    record_fails: bool,
    /// Milliseconds between faults, at least and at most.
    fault_gap: (u64, u64),
    // Checks.
    durable: Record,
    cluster_committed: BTreeSet<u64>,
    last_running: u64,
    max_started: u64,
    sink_last: Vec<(u64, u64)>,
    sink_count: BTreeMap<Key, u64>,
    /// Swaps: the version asked and not yet answered, whether its Ready was sent, the
    /// next version to ask for, versions whose swap was answered Err, how often a member
    /// refuses Ready, and time between swaps (ms, at least and at most).
    swap_asked: Option<u64>,
    swap_ready: bool,
    next_version: u64,
    /// The owner of each key, by version: a change that moves keys gives its version another
    /// table (version 0: key modulo members).
    tables: BTreeMap<u64, Vec<usize>>,
    /// Versions that cannot start on a member (as code that traps on restoring the state),
    /// how often a version is so, and the changes back from them (version -> the one back).
    broken: BTreeMap<u64, usize>,
    broken_chance: f64,
    /// How often a change adds a spare member or removes one a grow added; the members and
    /// the member slots (the coordinator's) of each version.
    resize_chance: f64,
    rosters: BTreeMap<u64, Vec<usize>>,
    slots: BTreeMap<u64, usize>,
    changed_back: BTreeMap<u64, u64>,
    /// How often a change moves keys rather than only swapping the component.
    move_chance: f64,
    failed_versions: BTreeSet<u64>,
    refuse_ready: f64,
    swap_gap: (u64, u64),
    swaps_rng: Rng,
    /// The version each generation started with, and the last version each key's output
    /// released had.
    generation_version: BTreeMap<u64, u64>,
    sink_version: BTreeMap<Key, u64>,
    // Numbers.
    events: u64,
    faults: BTreeMap<&'static str, u64>,
    checkpoints: u64,
    recoveries: u64,
    swaps: BTreeMap<&'static str, u64>,
    swap_faults: BTreeMap<&'static str, u64>,
    trace: VecDeque<String>,
    full: Option<Vec<String>>,
    violation: Option<String>,
}

fn secs(nanos: u64) -> String {
    format!(
        "{}.{:06}",
        nanos / 1_000_000_000,
        (nanos % 1_000_000_000) / 1000
    )
}

impl World {
    pub fn new(seed: u64, options: &Options) -> World {
        let mut rng = Rng::new(seed);
        let mut shape = rng.fork();
        let faults_rng = rng.fork();
        let swaps_rng = rng.fork();
        let members = options
            .members
            .unwrap_or_else(|| shape.range(1, 5) as usize);
        let workers = options
            .workers
            .unwrap_or_else(|| shape.range(1, 3) as usize);
        let keys = shape.range(4, 40) as u32;
        let fault_time = options
            .fault_time
            .map_or_else(|| shape.range(3_000, 15_000) * MS, |d| d.as_nanos() as u64);
        let interval = shape.range(100, 500);
        let config = Config {
            deployment: "sim".into(),
            members,
            retired: Vec::new(),
            checkpoint_interval: Some(Duration::from_millis(interval)),
            patience: Patience {
                answer: Duration::from_secs(5),
                align: Duration::from_secs(10),
                stop: Duration::from_secs(30),
                first_join: Duration::from_secs(60),
                drain_poll: Duration::from_millis(10),
                waiting_note: Duration::from_secs(10),
            },
        };
        let nclients = members + shape.below(members + 1);
        let clients = (0..nclients)
            .map(|c| {
                let frames = shape.range(50, 300) as usize;
                Client {
                    member: c % members,
                    frames: (0..frames)
                        .map(|_| {
                            let n = shape.range(1, 4.min(keys as u64)) as usize;
                            let mut ks = BTreeSet::new();
                            while ks.len() < n {
                                ks.insert(shape.below(keys as usize) as Key);
                            }
                            ks.into_iter().collect()
                        })
                        .collect(),
                    acked: 0,
                    next: 0,
                    conn: None,
                    window: shape.range(1, 12),
                    pace: shape.range(5, 60) * MS,
                    greeted: false,
                    resend: false,
                    ticking: false,
                }
            })
            .collect();
        let mut fault_weights = [0; 9];
        for w in &mut fault_weights {
            *w = shape.range(0, 4);
        }
        fault_weights[0] += 1;
        let net_delay = (shape.range(50, 500) * US, shape.range(1, 20) * MS);
        let gap = shape.range(50, 1500);
        let fault_gap = (gap / 4, gap * 2);
        let refuse_ready = shape.range(0, 10) as f64 / 100.0;
        let swap_gap = shape.range(200, 3000);
        let swap_gap = (swap_gap / 4, swap_gap * 2);
        let move_chance = shape.range(0, 70) as f64 / 100.0;
        let broken_chance = shape.range(0, 15) as f64 / 100.0;
        // Members a grow can add (started, holding nothing), and how often a change adds or
        // removes one.
        let spares = shape.range(0, 2) as usize;
        let resize_chance = shape.range(0, 50) as f64 / 100.0;
        let mut w = World {
            rng,
            faults_rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            conns: Vec::new(),
            members: (0..members + spares)
                .map(|m| Member {
                    up: true,
                    inc: 0,
                    wal: Wal::default(),
                    control: None,
                    left: None,
                    app: None,
                    retired: false,
                    assigned: m < members,
                    sync_pending: false,
                    clients: Vec::new(),
                    acks: VecDeque::new(),
                })
                .collect(),
            workers,
            keys,
            coord: None,
            config,
            clients,
            next_app: 0,
            partitions: BTreeSet::new(),
            fault_weights,
            faults_on: false,
            faults_over: false,
            fault_end: fault_time,
            stop_asked: false,
            stop_faults_left: 0,
            stop_faults: BTreeMap::new(),
            finished: false,
            net_delay,
            record_fails: false,
            fault_gap,
            durable: Record::default(),
            cluster_committed: BTreeSet::new(),
            last_running: 0,
            max_started: 0,
            sink_last: vec![(0, 0); members + spares],
            sink_count: BTreeMap::new(),
            events: 0,
            faults: BTreeMap::new(),
            checkpoints: 0,
            recoveries: 0,
            swap_asked: None,
            swap_ready: false,
            next_version: 1,
            broken: BTreeMap::new(),
            broken_chance,
            resize_chance,
            rosters: BTreeMap::from([(0, (0..members).collect())]),
            slots: BTreeMap::from([(0, members)]),
            changed_back: BTreeMap::new(),
            tables: BTreeMap::from([(0, (0..keys as usize).map(|k| k % members).collect())]),
            move_chance,
            failed_versions: BTreeSet::new(),
            refuse_ready,
            swap_gap,
            swaps_rng,
            generation_version: BTreeMap::new(),
            sink_version: BTreeMap::new(),
            swaps: BTreeMap::new(),
            swap_faults: BTreeMap::new(),
            trace: VecDeque::new(),
            full: options.full_trace.then(Vec::new),
            violation: None,
        };
        w.note(format!(
            "seed {seed}: {members} members x {workers} workers, {keys} keys, {nclients} clients, \
             checkpoint every {interval} ms, faults for {} s, weights {:?}, a swap every \
             {}-{} ms, Ready refused {:.0}%, keys move in {:.0}% of changes",
            secs(fault_time),
            w.fault_weights,
            w.swap_gap.0,
            w.swap_gap.1,
            w.refuse_ready * 100.0,
            w.move_chance * 100.0
        ));
        let (coord, actions) =
            Coordinator::new(w.config.clone(), Record::default(), true, Time::ZERO);
        w.coord = Some(CoordHost {
            coord,
            streams: vec![None; members + spares],
            inc: 0,
            writes: VecDeque::new(),
            writing: false,
            timer: None,
            spins: 0,
        });
        w.coord_actions(actions, None);
        for m in 0..members {
            w.at(0, Ev::AgentJoin { member: m, inc: 0 });
        }
        for c in 0..w.clients.len() {
            w.tick_client(c);
        }
        w
    }

    pub fn run(mut self, seed: u64) -> Outcome {
        let hard_stop = self.fault_end + 300_000 * MS;
        while let Some(Reverse(s)) = self.queue.pop() {
            if self.violation.is_some() {
                break;
            }
            if s.at > hard_stop {
                let clients: Vec<String> = self
                    .clients
                    .iter()
                    .map(|c| format!("{}/{}", c.acked, c.frames.len()))
                    .collect();
                self.violate(format!(
                    "the run did not finish within {} s of simulated time (clients acknowledged \
                     {}; stop asked: {})",
                    secs(hard_stop),
                    clients.join(" "),
                    self.stop_asked
                ));
                break;
            }
            self.now = s.at;
            self.events += 1;
            self.step(s.ev);
            if self.finished
                && self
                    .queue
                    .iter()
                    .all(|Reverse(s)| s.at > self.now + 5_000 * MS)
            {
                break;
            }
        }
        if self.violation.is_none() {
            if !self.finished {
                self.violate("the event queue ran dry before the stop finished".into());
            } else {
                self.final_checks();
            }
        }
        let trace = match self.full.take() {
            Some(full) => full,
            None => self.trace.iter().cloned().collect(),
        };
        Outcome {
            seed,
            members: self.members.len(),
            workers: self.workers,
            sim_time: Duration::from_nanos(self.now),
            events: self.events,
            faults: self.faults,
            checkpoints: self.checkpoints,
            recoveries: self.recoveries,
            swaps: self.swaps,
            swap_faults: self.swap_faults,
            stop_faults: self.stop_faults,
            violation: self.violation,
            trace,
        }
    }

    // ---- plumbing ------------------------------------------------------------------------

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    fn after(&mut self, delay: u64, ev: Ev) {
        self.at(self.now + delay, ev);
    }

    fn note(&mut self, line: String) {
        let line = format!("{} {line}", secs(self.now));
        if let Some(full) = &mut self.full {
            full.push(line.clone());
        }
        if self.trace.len() == TRACE_TAIL {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.note(format!("VIOLATION: {what}"));
            self.violation = Some(what);
        }
    }

    fn delay(&mut self) -> u64 {
        let (lo, hi) = self.net_delay;
        if self.rng.chance(0.02) {
            self.rng.range(hi, hi * 5)
        } else {
            self.rng.range(lo, hi)
        }
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.members[a].up && self.members[b].up && !self.partitions.contains(&(a.min(b), a.max(b)))
    }

    fn open(&mut self, a: End, b: End, kind: Kind) -> ConnId {
        self.conns.push(Conn {
            ends: [a, b],
            kind,
            queues: [VecDeque::new(), VecDeque::new()],
            last_at: [0, 0],
            broken: false,
        });
        self.conns.len() - 1
    }

    fn send(&mut self, conn: ConnId, from: End, msg: Msg) {
        if self.conns[conn].broken {
            return;
        }
        let dir = usize::from(self.conns[conn].ends[0] != from);
        let at = (self.now + self.delay()).max(self.conns[conn].last_at[dir]);
        let c = &mut self.conns[conn];
        c.last_at[dir] = at;
        c.queues[dir].push_back(msg);
        self.at(at, Ev::Deliver { conn, dir });
    }

    /// Breaks a connection; each end notices after its own delay.
    fn break_conn(&mut self, conn: ConnId, why: &str) {
        let c = &mut self.conns[conn];
        if c.broken {
            return;
        }
        c.broken = true;
        c.queues = [VecDeque::new(), VecDeque::new()];
        let ends = c.ends;
        for end in ends {
            let notice = self.rng.range(US, 500 * MS);
            self.after(
                notice,
                Ev::Broken {
                    conn,
                    end,
                    why: why.to_string(),
                },
            );
        }
    }

    fn live_app(&self, member: usize, app: u64) -> bool {
        self.members[member]
            .app
            .as_ref()
            .is_some_and(|a| a.id == app)
    }

    // ---- events --------------------------------------------------------------------------

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { conn, dir } => self.deliver(conn, dir),
            Ev::Broken { conn, end, why } => self.broken(conn, end, why),
            Ev::CoordTimer { inc } => self.coord_timer(inc),
            Ev::Work {
                member,
                app,
                worker,
            } => {
                if self.live_app(member, app) {
                    self.work(member, worker);
                }
            }
            Ev::AlignDeadline { member, app } => {
                if self.live_app(member, app) {
                    self.answer_align(member, true);
                }
            }
            Ev::Sync { member, inc } => {
                if self.members[member].inc == inc && self.members[member].up {
                    self.sync(member);
                }
            }
            Ev::RecordDone { inc } => self.record_done(inc),
            Ev::ClientTick { client } => self.client_tick(client),
            Ev::Restart { member } => self.restart(member),
            Ev::AgentJoin { member, inc } => self.agent_join(member, inc),
            Ev::Fault => {
                if self.faults_on && !self.faults_over {
                    self.fault();
                    let d = self.faults_rng.range(self.fault_gap.0, self.fault_gap.1) * MS;
                    self.after(d, Ev::Fault);
                }
            }
            Ev::SwapFault => self.fault(),
            Ev::StopFault => self.stop_fault(),
            Ev::Heal { a, b } => {
                if self.partitions.remove(&(a, b)) {
                    self.note(format!("heal {a}-{b}"));
                }
            }
            Ev::DiskFree { member } => self.members[member].wal.full = false,
            Ev::FaultsEnd => self.faults_end(),
            Ev::AskStop => self.ask_stop(),
            Ev::AskSwap => self.ask_swap(),
            Ev::Liveness { committed } => {
                if !self.finished && self.durable.committed <= committed {
                    self.violate(format!(
                        "liveness: no checkpoint committed within {} s after faults stopped \
                         (still {committed}; coordinator {})",
                        LIVENESS_BOUND.as_secs(),
                        self.coord.as_ref().map_or("down", |c| c.coord.state())
                    ));
                }
            }
        }
    }

    fn deliver(&mut self, conn: ConnId, dir: usize) {
        let c = &self.conns[conn];
        if c.broken {
            return;
        }
        let to = c.ends[1 - dir];
        if let (Kind::Data { generation, to, .. }, Some(Msg::Batch { .. })) =
            (c.kind, c.queues[dir].front())
        {
            match self.members[to].app.as_ref().map(|a| a.generation) {
                Some(g) if g == generation => {}
                Some(g) if g > generation => {
                    self.conns[conn].queues[dir].pop_front();
                    return;
                }
                // Taken once the receiver runs this generation.
                _ => {
                    self.after(20 * MS, Ev::Deliver { conn, dir });
                    return;
                }
            }
        }
        let Some(msg) = self.conns[conn].queues[dir].pop_front() else {
            return;
        };
        let kind = self.conns[conn].kind;
        match to {
            End::Coord => self.coord_msg(conn, msg),
            End::Member(m) => self.member_msg(m, conn, kind, msg),
            End::Client(c) => self.client_msg(c, conn, msg),
            End::Sink => self.sink_msg(kind, msg),
        }
    }

    fn broken(&mut self, conn: ConnId, end: End, why: String) {
        let kind = self.conns[conn].kind;
        match (end, kind) {
            (End::Coord, Kind::Control { member }) => {
                let Some(host) = &mut self.coord else { return };
                if host.streams[member] == Some(conn) {
                    host.streams[member] = None;
                    let why = format!("its control stream broke ({why})");
                    self.coord_event(coordinator::Event::Lost { member, why }, None);
                }
            }
            (End::Member(m), Kind::Control { .. }) if self.members[m].control == Some(conn) => {
                self.members[m].control = None;
                let left = self.members[m].left.take().unwrap_or(Rejoin {
                    peer: None,
                    why: format!("the control stream broke ({why})"),
                });
                self.members[m].left = Some(left);
                self.abort_app(m, "control stream closed");
                let inc = self.members[m].inc;
                self.after(100 * MS, Ev::AgentJoin { member: m, inc });
            }
            (
                End::Member(m),
                Kind::Data {
                    generation,
                    from,
                    to,
                },
            ) if m == from => {
                let ours = self.members[m]
                    .app
                    .as_ref()
                    .is_some_and(|a| a.generation == generation && a.links.get(&to) == Some(&conn));
                if ours {
                    self.leave(
                        m,
                        Rejoin {
                            peer: Some(to as u16),
                            why: format!("the data stream broke ({why})"),
                        },
                    );
                }
            }
            (End::Member(m), Kind::Client { .. }) => self.members[m].clients.retain(|&c| c != conn),
            (End::Client(c), _) if self.clients[c].conn == Some(conn) => {
                self.clients[c].conn = None;
                self.tick_client(c);
            }
            _ => {}
        }
    }

    // ---- coordinator ---------------------------------------------------------------------

    fn coord_msg(&mut self, conn: ConnId, msg: Msg) {
        let Some(host) = &self.coord else { return };
        match msg {
            Msg::Join { member, rejoin } => {
                self.note(format!("coord <- join {member} {rejoin:?}"));
                let event = coordinator::Event::Join {
                    member: member as u16,
                    deployment: "sim".into(),
                    rejoin,
                };
                self.coord_event(event, Some(conn));
            }
            Msg::Reply(reply) => {
                let Kind::Control { member } = self.conns[conn].kind else {
                    return;
                };
                if host.streams[member] != Some(conn) {
                    return;
                }
                self.note(format!("coord <- {member}: {reply:?}"));
                self.coord_event(coordinator::Event::Reply { member, reply }, None);
            }
            _ => {}
        }
    }

    fn coord_event(&mut self, event: coordinator::Event, via: Option<ConnId>) {
        let now = Duration::from_nanos(self.now);
        let Some(host) = &mut self.coord else { return };
        let actions = host.coord.handle(now, event);
        self.coord_actions(actions, via);
    }

    fn coord_actions(&mut self, actions: Vec<coordinator::Action>, via: Option<ConnId>) {
        use coordinator::Action as A;
        for action in actions {
            let Some(host) = &mut self.coord else { return };
            match action {
                A::Accept { member } => {
                    let old = match via {
                        Some(c) => host.streams[member].replace(c),
                        None => None,
                    };
                    if let Some(old) = old.filter(|&o| Some(o) != via) {
                        self.break_conn(old, "replaced by a new join");
                    }
                }
                A::Refuse { member, why } => {
                    self.note(format!("coord refuses {member}: {why}"));
                    // Removed, or added by a change that failed, and not told: it leaves now.
                    let member = member as usize;
                    if self.members[member].assigned
                        && !self.roster(self.durable.version).contains(&member)
                        && self.swap_asked.is_none()
                    {
                        self.leave_deployment(member);
                    } else if let Some(c) = via {
                        // Too early (before the change made its slot): it joins again.
                        self.break_conn(c, "refused");
                    }
                }
                A::Send { member, command } => {
                    match command {
                        Command::Ready { .. } if member == 0 => {
                            self.swap_ready = true;
                            self.aim_fault();
                        }
                        Command::Start { version, .. }
                            if member == 0 && version > self.durable_started_version() =>
                        {
                            self.aim_fault()
                        }
                        // A change that moves keys: its drain and its hand-over.
                        Command::Move { .. } if member == 0 => self.aim_fault(),
                        Command::StopSources if member == 0 && self.swap_asked.is_some() => {
                            self.aim_fault()
                        }
                        Command::StopSources
                        | Command::Drain
                        | Command::Flush { .. }
                        | Command::Shutdown
                            if member == 0 && self.stop_asked =>
                        {
                            self.aim_stop_fault()
                        }
                        _ => {}
                    }
                    let Some(host) = &mut self.coord else { return };
                    if let Some(c) = host.streams[member] {
                        self.note(format!("coord -> {member}: {command:?}"));
                        self.send(c, End::Coord, Msg::Command(command));
                    }
                }
                A::Disconnect { member } => {
                    if let Some(c) = host.streams[member].take() {
                        self.break_conn(c, "the coordinator closed it");
                    }
                }
                A::Record(record) => {
                    if record.version > self.durable.version {
                        self.aim_fault();
                    }
                    let Some(host) = &mut self.coord else { return };
                    host.writes.push_back(record);
                    if !host.writing {
                        host.writing = true;
                        let inc = host.inc;
                        let d = self.record_time();
                        self.after(d, Ev::RecordDone { inc });
                    }
                    self.note(format!("coord records {record:?}"));
                }
                A::Running {
                    generation,
                    checkpoint,
                    first,
                } => {
                    self.note(format!(
                        "RUNNING generation {generation} from checkpoint {checkpoint}"
                    ));
                    self.running(generation, first);
                }
                A::DeployFailed(why) => self.violate(format!("the deploy failed: {why}")),
                A::AnswerStops(result) => {
                    self.note(format!("stop answered {result:?}"));
                    if let Err(e) = result {
                        self.violate(format!("the stop failed after faults stopped: {e}"));
                    }
                }
                A::Swapped(answer) => self.swapped(answer),
                A::ChangingBack {
                    version,
                    from,
                    like,
                } => {
                    self.note(format!(
                        "coord changes back from version {from} as version {version}, like \
                         version {like}"
                    ));
                    let table = self.table(like).to_vec();
                    self.tables.insert(version, table);
                    let roster = self.roster(like).to_vec();
                    self.rosters.insert(version, roster);
                    self.slots.insert(version, self.slots[&from]);
                    self.changed_back.insert(from, version);
                    self.next_version = self.next_version.max(version + 1);
                }
                A::Note { warn, text } => self.note(format!(
                    "coord {}: {text}",
                    if warn { "warns" } else { "notes" }
                )),
                A::Done => {
                    self.note("coord done".into());
                    if self.stop_asked {
                        self.finished = true;
                    } else {
                        self.violate("the coordinator ended without a stop".into());
                    }
                }
            }
        }
        self.arm_coord_timer();
    }

    fn arm_coord_timer(&mut self) {
        let now = self.now;
        let Some(host) = &mut self.coord else { return };
        let Some(t) = host.coord.poll_timeout() else {
            return;
        };
        let t = (t.as_nanos() as u64).max(now);
        if host.timer.is_some_and(|armed| armed <= t && armed >= now) {
            return;
        }
        host.timer = Some(t);
        let inc = host.inc;
        self.at(t, Ev::CoordTimer { inc });
    }

    fn coord_timer(&mut self, inc: u64) {
        let now = self.now;
        let Some(host) = &mut self.coord else { return };
        if host.inc != inc {
            return;
        }
        if host.timer == Some(now) {
            host.timer = None;
        }
        let due = host
            .coord
            .poll_timeout()
            .is_some_and(|t| t.as_nanos() as u64 <= now);
        if !due {
            self.arm_coord_timer();
            return;
        }
        self.coord_event(coordinator::Event::Timeout, None);
        let Some(host) = &mut self.coord else { return };
        if host
            .coord
            .poll_timeout()
            .is_some_and(|t| t.as_nanos() as u64 <= now)
        {
            host.spins += 1;
            if host.spins > 1000 {
                let state = host.coord.state();
                self.violate(format!(
                    "the coordinator asks for a timeout in the past again and again ({state})"
                ));
            }
        } else {
            host.spins = 0;
        }
    }

    fn record_done(&mut self, inc: u64) {
        let Some(host) = &mut self.coord else { return };
        if host.inc != inc {
            return;
        }
        let Some(record) = host.writes.pop_front() else {
            return;
        };
        let fail = std::mem::take(&mut self.record_fails);
        let result = if fail {
            self.note(format!("record {record:?} failed"));
            Err("the disk failed (simulated)".to_string())
        } else {
            self.make_durable(record);
            Ok(())
        };
        let Some(host) = &mut self.coord else { return };
        if host.writes.is_empty() {
            host.writing = false;
        } else {
            let inc = host.inc;
            let d = self.record_time();
            self.after(d, Ev::RecordDone { inc });
        }
        self.coord_event(coordinator::Event::Recorded(result), None);
    }

    /// The coordinator's record is durable: the checks of the record and of a commit.
    fn make_durable(&mut self, record: Record) {
        let before = self.durable;
        if record.committed < before.committed {
            self.violate(format!(
                "the durable record's committed checkpoint went back from {} to {}",
                before.committed, record.committed
            ));
        }
        if record.generation < before.generation {
            self.violate(format!(
                "the durable record's generation went back from {} to {}",
                before.generation, record.generation
            ));
        }
        if record.version < before.version {
            self.violate(format!(
                "the durable record's version went back from {} to {}",
                before.version, record.version
            ));
        }
        if self.failed_versions.contains(&record.version) {
            self.violate(format!(
                "the durable record holds version {}, whose swap was answered with an error",
                record.version
            ));
        }
        self.durable = record;
        self.note(format!("record durable {record:?}"));
        if record.committed > before.committed {
            self.checkpoints += 1;
            self.cluster_committed.insert(record.committed);
            self.check_commit(record.committed);
        }
    }

    /// Checkpoint `n` was recorded committed: every member holds a durable commit of it, and
    /// the state it restores counts exactly the input each member logged before its cut.
    fn check_commit(&mut self, n: u64) {
        let mut expected = BTreeMap::new();
        let mut actual = BTreeMap::new();
        // Checkpoint n was taken by the version the durable record held when it committed,
        // by its members.
        let roster = self.roster(self.durable.version).to_vec();
        for &m in &roster {
            let wal = &self.members[m].wal;
            let Some((lsn, cut)) = wal.commit_of(n) else {
                self.violate(format!(
                    "checkpoint {n} recorded committed, but member {m}'s log holds no commit of it"
                ));
                return;
            };
            if lsn > wal.durable() {
                self.violate(format!(
                    "checkpoint {n} recorded committed, but member {m}'s commit of it is not durable"
                ));
                return;
            }
            wal::counted_before(wal, cut, &mut expected);
        }
        for &m in &roster {
            actual.extend(self.owned_state(m, n, self.durable.version));
        }
        actual.retain(|_, v| *v > 0);
        if expected != actual {
            let diff: Vec<String> = (0..self.keys)
                .filter(|k| expected.get(k) != actual.get(k))
                .map(|k| {
                    format!(
                        "key {k}: logged {} restored {}",
                        expected.get(&k).unwrap_or(&0),
                        actual.get(&k).unwrap_or(&0)
                    )
                })
                .collect();
            self.violate(format!(
                "checkpoint {n} is not consistent: its state does not count the input before \
                 the cuts exactly once ({})",
                diff.join(", ")
            ));
        }
    }

    fn running(&mut self, generation: u64, first: bool) {
        if generation <= self.last_running {
            self.violate(format!(
                "generation {generation} runs after generation {} ran",
                self.last_running
            ));
        }
        self.last_running = generation;
        let version = self.generation_version.get(&generation).copied();
        let roster = self.roster(self.durable.version);
        for (m, member) in self.members.iter().enumerate() {
            if !roster.contains(&m) {
                // Removed, and told to leave: it may not have heard yet.
                continue;
            }
            if let Some(app) = &member.app
                && app.generation != generation
            {
                let g = app.generation;
                self.violate(format!(
                    "generation {generation} runs while member {m} runs generation {g}"
                ));
                return;
            }
            if let Some(app) = &member.app
                && Some(app.version) != version
            {
                let v = app.version;
                self.violate(format!(
                    "generation {generation} runs version {version:?}, but member {m} runs \
                     version {v}"
                ));
                return;
            }
        }
        if first {
            let d = self.swaps_rng.range(self.swap_gap.0, self.swap_gap.1) * MS;
            self.after(d, Ev::AskSwap);
            self.faults_on = true;
            self.fault_end += self.now;
            let d = self.faults_rng.range(50, 400) * MS;
            self.after(d, Ev::Fault);
            let end = self.fault_end;
            self.at(end, Ev::FaultsEnd);
        } else {
            self.recoveries += 1;
        }
    }

    // ---- members: the agent --------------------------------------------------------------

    fn agent_join(&mut self, m: usize, inc: u64) {
        let member = &self.members[m];
        if !member.up
            || member.inc != inc
            || member.retired
            || !member.assigned
            || member.control.is_some()
        {
            return;
        }
        if self.coord.is_none() || !self.reachable(m, 0) {
            self.after(200 * MS, Ev::AgentJoin { member: m, inc });
            return;
        }
        let conn = self.open(End::Member(m), End::Coord, Kind::Control { member: m });
        let rejoin = self.members[m].left.take();
        self.members[m].control = Some(conn);
        self.send(conn, End::Member(m), Msg::Join { member: m, rejoin });
    }

    /// This member leaves its control stream (a data stream of its generation broke): the
    /// cluster must roll back, and the coordinator is told which link broke.
    fn leave(&mut self, m: usize, rejoin: Rejoin) {
        self.note(format!("member {m} leaves: {rejoin:?}"));
        self.members[m].left.get_or_insert(rejoin);
        if let Some(c) = self.members[m].control.take() {
            self.break_conn(c, "the member left");
        }
        self.abort_app(m, "left the cluster");
        let inc = self.members[m].inc;
        self.after(100 * MS, Ev::AgentJoin { member: m, inc });
    }

    fn abort_app(&mut self, m: usize, why: &str) {
        let Some(app) = self.members[m].app.take() else {
            return;
        };
        self.note(format!(
            "member {m} stops generation {} ({why})",
            app.generation
        ));
        for (_, c) in app.links {
            self.break_conn(c, "the application stopped");
        }
        // A shutdown flushes the sinks; anything else may lose what is on the way to them.
        if why != "shutdown" {
            self.break_conn(app.sink, "the application stopped");
        }
        for c in std::mem::take(&mut self.members[m].clients) {
            self.break_conn(c, "the application stopped");
        }
        self.members[m].acks.clear();
    }

    fn member_msg(&mut self, m: usize, conn: ConnId, kind: Kind, msg: Msg) {
        match (kind, msg) {
            (Kind::Control { .. }, Msg::Command(command))
                if self.members[m].control == Some(conn) =>
            {
                self.note(format!("member {m} <- {command:?}"));
                self.obey(m, conn, command);
            }
            (
                Kind::Data { .. },
                Msg::Batch {
                    epoch,
                    worker,
                    keys,
                },
            ) => {
                let Some(app) = &mut self.members[m].app else {
                    return;
                };
                app.received += 1;
                app.routed_in_flight += 1;
                app.workers[worker]
                    .inbox
                    .push_back(Item::Routed { epoch, keys });
                self.schedule_work(m, worker);
            }
            (Kind::Client { client, .. }, Msg::Frame { seq, keys }) => {
                self.frame(m, conn, client, seq, keys)
            }
            _ => {}
        }
    }

    fn reply(&mut self, m: usize, conn: ConnId, reply: Reply) {
        self.note(format!("member {m} -> {reply:?}"));
        self.send(conn, End::Member(m), Msg::Reply(reply));
    }

    fn obey(&mut self, m: usize, conn: ConnId, command: Command) {
        match command {
            Command::Start {
                generation,
                recover_to,
                version,
            } => {
                let reply = self.start_app(m, generation, recover_to, version);
                self.reply(m, conn, reply);
                if self.members[m].app.is_some() {
                    self.start_actions(m);
                }
            }
            Command::Shutdown => {
                self.abort_app(m, "shutdown");
                self.members[m].retired = true;
                self.reply(m, conn, Reply::Stopped);
            }
            // Any version of the model can take over any state, unless this member
            // is made to refuse (as a new version that cannot restore a key would).
            Command::Ready { version } => {
                let reply = if self.rng.chance(self.refuse_ready) {
                    Reply::Refused(format!(
                        "version {version} cannot restore key 0 (simulated)"
                    ))
                } else {
                    Reply::Ok
                };
                self.reply(m, conn, reply);
            }
            Command::Move {
                checkpoint,
                version,
            } => {
                if let Some(reply) = self.hand_over(m, conn, checkpoint, version) {
                    self.reply(m, conn, reply);
                }
            }
            Command::Leave => {
                self.reply(m, conn, Reply::Ok);
                self.leave_deployment(m);
            }
            command => {
                let Some(app) = &mut self.members[m].app else {
                    self.reply(
                        m,
                        conn,
                        Reply::Refused("the application is not running here".into()),
                    );
                    return;
                };
                match command {
                    Command::Begin { checkpoint } => {
                        app.pending = Some((Pending::Begin, conn));
                        self.drive(m, participant::Event::Begin { checkpoint });
                    }
                    Command::Align => {
                        app.align = Some(conn);
                        let id = app.id;
                        self.after(20 * MS, Ev::AlignDeadline { member: m, app: id });
                        self.answer_align(m, false);
                    }
                    Command::Prepare => {
                        app.pending = Some((Pending::Prepare, conn));
                        self.drive(m, participant::Event::Prepare);
                    }
                    Command::Commit { checkpoint } => {
                        app.pending = Some((Pending::Commit, conn));
                        self.drive(m, participant::Event::Commit { checkpoint });
                    }
                    Command::StopSources => {
                        app.sources_stopped = true;
                        for c in std::mem::take(&mut self.members[m].clients) {
                            self.break_conn(c, "sources stopped");
                        }
                        self.reply(m, conn, Reply::Ok);
                    }
                    Command::Flush { checkpoint } => {
                        if app.participant.written() >= checkpoint {
                            self.reply(m, conn, Reply::Ok);
                        } else {
                            app.until_written = Some((conn, checkpoint));
                        }
                    }
                    Command::Drain => {
                        let reply = Reply::Drained {
                            in_flight: app.queued(),
                            sent: app.sent,
                            received: app.received,
                        };
                        self.reply(m, conn, reply);
                    }
                    Command::Start { .. }
                    | Command::Shutdown
                    | Command::Ready { .. }
                    | Command::Move { .. }
                    | Command::Leave => unreachable!(),
                }
            }
        }
    }

    /// Move: member `m`, drained at committed checkpoint `checkpoint`, hands the state of
    /// the keys version `version` gives to other members to them; each logs it durably (as
    /// `wallaroo node` does on a `Handoff`) before `m` answers.
    fn hand_over(
        &mut self,
        m: usize,
        conn: ConnId,
        checkpoint: u64,
        version: u64,
    ) -> Option<Reply> {
        let Some(app) = &self.members[m].app else {
            // A member the change adds holds nothing to hand over.
            return Some(match self.roster(self.durable.version).contains(&m) {
                false => Reply::Ok,
                true => Reply::Refused("the application is not running here".into()),
            });
        };
        if app.participant.last_committed() != checkpoint {
            return Some(Reply::Refused(format!(
                "asked to hand over at checkpoint {checkpoint}, but the last committed here is {}",
                app.participant.last_committed()
            )));
        }
        let (old, new) = (self.table(app.version), self.table(version));
        let mut by_owner: BTreeMap<usize, Vec<(Key, u64)>> = BTreeMap::new();
        for w in &app.workers {
            for (&k, &v) in &w.state {
                let (from, to) = (old[k as usize], new[k as usize]);
                if from == m && to != m {
                    by_owner.entry(to).or_default().push((k, v));
                }
            }
        }
        // Drained at the checkpoint: what the workers hold is what the log holds for it.
        let logged = wal::restore(&self.members[m].wal, checkpoint).state;
        for (k, v) in by_owner.values().flatten() {
            if logged.get(k).copied().unwrap_or(0) != *v {
                self.violate(format!(
                    "member {m} hands key {k} over with count {v} at checkpoint {checkpoint}, \
                     but its log holds {:?} there: the cluster was not drained",
                    logged.get(k)
                ));
            }
        }
        let moved: usize = by_owner.values().map(Vec::len).sum();
        for (to, entries) in by_owner {
            if !self.members[to].up || !self.reachable(m, to) {
                return Some(Reply::Refused(format!("member {to} cannot be reached")));
            }
            let wal = &mut self.members[to].wal;
            let record = Rec::State {
                checkpoint,
                entries,
            };
            let mut last = wal.append(record);
            // A member the change adds has no commit of the checkpoint: it logs one with the
            // state, as `wallaroo node` does.
            if last.is_some() && wal.commit_of(checkpoint).is_none() {
                let cut = wal.next_lsn();
                last = wal.append(Rec::Commit {
                    checkpoint,
                    cut,
                    streams: BTreeMap::new(),
                });
            }
            if last.is_none_or(|lsn| !wal.sync_to(lsn)) {
                return Some(Reply::Refused(format!("member {to}'s log failed")));
            }
        }
        self.note(format!(
            "member {m} hands {moved} keys over at checkpoint {checkpoint} for version {version}"
        ));
        let removed = !self.roster(version).contains(&m);
        let app = self.members[m].app.as_mut()?;
        if removed && app.participant.written() < checkpoint {
            app.until_written = Some((conn, checkpoint));
            return None;
        }
        Some(Reply::Ok)
    }

    /// Answers a pending Align once settled, or at its deadline whatever the state.
    fn answer_align(&mut self, m: usize, deadline: bool) {
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        let Some(conn) = app.align else { return };
        let a = app.alignment();
        if a.settled() || deadline {
            app.align = None;
            self.reply(m, conn, Reply::Aligned(a));
        }
    }

    fn start_app(&mut self, m: usize, generation: u64, recover_to: u64, version: u64) -> Reply {
        self.abort_app(m, "a new generation starts");
        let first = *self.generation_version.entry(generation).or_insert(version);
        if first != version {
            self.violate(format!(
                "member {m} starts generation {generation} with version {version}, another \
                 member with version {first}"
            ));
        }
        if version < self.durable.version {
            self.violate(format!(
                "member {m} starts version {version} after the durable record holds version {}",
                self.durable.version
            ));
        }
        if generation < self.max_started {
            self.violate(format!(
                "member {m} starts generation {generation} after generation {} started",
                self.max_started
            ));
        }
        self.max_started = self.max_started.max(generation);
        // A version that cannot start here, while the change to it is answered by the
        // coordinator that asked it (a restarted one retries it: see the README).
        if self.broken.get(&version) == Some(&m) && self.swap_asked == Some(version) {
            return Reply::Refused(format!(
                "version {version} traps restoring key 0 (simulated)"
            ));
        }
        let member = &mut self.members[m];
        if let Some(torn) = member.wal.reopen(&mut self.rng) {
            self.note(format!("member {m} reopens its failed log: {torn:?}"));
        }
        let member = &mut self.members[m];
        let restored = wal::restore(&member.wal, recover_to);
        if restored.point.rolls_back
            && member
                .wal
                .append(Rec::Rollback { to: recover_to })
                .is_none_or(|lsn| !member.wal.sync_to(lsn))
        {
            return Reply::Refused(format!(
                "cannot log the rollback to checkpoint {recover_to}: the disk failed"
            ));
        }
        let w = self.workers;
        let mut workers: Vec<Worker> = (0..w).map(|_| Worker::default()).collect();
        for (k, v) in &restored.state {
            // Keys the log holds that another member owns now (handed over) stay there.
            let (om, ow) = self.owner(version, *k);
            if om == m {
                workers[ow].state.insert(*k, *v);
            }
        }
        for (stream, _, keys) in &restored.replay {
            workers[*stream as usize % w]
                .inbox
                .push_back(Item::Source { keys: keys.clone() });
        }
        let resume = Resume {
            committed: restored.point.checkpoint,
            highest_seen: restored.point.highest_seen,
            released: restored.point.released,
            unreleased: restored.unreleased.clone(),
        };
        let participant = Participant::new(resume, true);
        let next_checkpoint = participant.next_number();
        self.next_app += 1;
        let id = self.next_app;
        let sink = self.open(End::Member(m), End::Sink, Kind::Sink { member: m, app: id });
        self.note(format!(
            "member {m} starts generation {generation} version {version} at checkpoint {} \
             (asked {recover_to}), \
             replays {} frames, releases again {:?}",
            restored.point.checkpoint,
            restored.replay.len(),
            restored.unreleased
        ));
        self.members[m].app = Some(App {
            id,
            generation,
            version,
            participant,
            workers,
            sent: 0,
            received: 0,
            routed_in_flight: 0,
            sources_stopped: false,
            positions: restored.positions,
            cut_positions: BTreeMap::new(),
            pending: None,
            align: None,
            snapshot: None,
            links: BTreeMap::new(),
            sink,
            until_written: None,
        });
        for worker in 0..w {
            self.schedule_work(m, worker);
        }
        Reply::Started { next_checkpoint }
    }

    /// The members of version `version`.
    fn roster(&self, version: u64) -> &[usize] {
        &self.rosters[&version]
    }

    /// The coordinator's configuration for a cluster whose durable record holds `version`.
    fn config_of(&self, version: u64) -> Config {
        let slots = self.slots[&version];
        let roster = self.roster(version);
        Config {
            members: slots,
            retired: (0..slots).filter(|m| !roster.contains(m)).collect(),
            ..self.config.clone()
        }
    }

    /// Member `m` is no longer of the deployment (removed, or added by a change that failed):
    /// it stops its application (its sink flushed, as a stop does), forgets the deployment
    /// and keeps its old data aside (here: a fresh log).
    fn leave_deployment(&mut self, m: usize) {
        self.abort_app(m, "shutdown");
        let member = &mut self.members[m];
        member.assigned = false;
        member.wal = Wal::default();
        if let Some(c) = member.control.take() {
            self.break_conn(c, "the member left the deployment");
        }
        self.note(format!("member {m} leaves the deployment"));
    }

    /// The key table of version `version` (every version asked has one).
    fn table(&self, version: u64) -> &[usize] {
        &self.tables[&version]
    }

    /// Which member and worker own `key` in version `version`.
    fn owner(&self, version: u64, key: Key) -> (usize, usize) {
        let k = key as usize;
        let member = self.table(version)[k];
        (member, (k / self.members.len()) % self.workers)
    }

    /// The state member `m` restores at checkpoint `upto`: of the keys it owns in `version`.
    fn owned_state(&self, m: usize, upto: u64, version: u64) -> BTreeMap<Key, u64> {
        let table = self.table(version);
        let mut state = wal::restore(&self.members[m].wal, upto).state;
        state.retain(|k, _| table[*k as usize] == m);
        state
    }

    // ---- members: the participant --------------------------------------------------------

    fn drive(&mut self, m: usize, event: participant::Event) {
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        let actions = app.participant.handle(event);
        self.carry_out(m, actions);
    }

    fn start_actions(&mut self, m: usize) {
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        let actions = app.participant.start();
        self.carry_out(m, actions);
    }

    fn carry_out(&mut self, m: usize, actions: Vec<participant::Action>) {
        use participant::Action as A;
        let mut todo: VecDeque<A> = actions.into();
        while let Some(action) = todo.pop_front() {
            let member = &mut self.members[m];
            let Some(app) = &mut member.app else { return };
            let mut next = None;
            match action {
                A::CutAndBarrier { .. } => {
                    let cut = (!member.wal.failed()).then(|| member.wal.next_lsn());
                    if cut.is_some() {
                        app.cut_positions = app.positions.clone();
                        for w in &mut app.workers {
                            w.inbox.push_back(Item::Barrier);
                        }
                        for w in 0..self.workers {
                            self.schedule_work(m, w);
                        }
                    }
                    next = Some(participant::Event::Cut { cut });
                }
                A::Snapshot {
                    checkpoint,
                    full,
                    cut,
                    released,
                } => {
                    app.snapshot = Some(Snapshot {
                        checkpoint,
                        full,
                        cut,
                        released,
                        parts: vec![None; self.workers],
                    });
                    for w in &mut app.workers {
                        w.inbox.push_back(Item::Snapshot);
                    }
                    for w in 0..self.workers {
                        self.schedule_work(m, w);
                    }
                }
                A::AwaitDurable { lsn } => {
                    if member.wal.durable() >= lsn {
                        next = Some(participant::Event::Durable {
                            lsn: member.wal.durable(),
                        });
                    } else {
                        self.request_sync(m);
                    }
                }
                A::Release { epoch } => self.release(m, epoch),
                A::Compact { keep_from } => member.wal.compact(keep_from),
                A::Reply(r) => {
                    let Some((pending, conn)) = app.pending.take() else {
                        self.violate(format!(
                            "member {m}'s participant answered {r:?} to nothing"
                        ));
                        return;
                    };
                    let reply = match (pending, r) {
                        (Pending::Prepare, participant::Reply::Prepared) => Reply::Prepared(true),
                        (Pending::Prepare, participant::Reply::Refused(why)) => {
                            self.note(format!("member {m} cannot prepare: {why}"));
                            Reply::Prepared(false)
                        }
                        (_, participant::Reply::Refused(why)) => Reply::Refused(why),
                        _ => Reply::Ok,
                    };
                    self.reply(m, conn, reply);
                }
            }
            if let Some(event) = next
                && let Some(app) = &mut self.members[m].app
            {
                todo.extend(app.participant.handle(event));
            }
        }
    }

    fn release(&mut self, m: usize, epoch: u64) {
        if !self.cluster_committed.contains(&epoch) {
            self.violate(format!(
                "member {m} releases epoch {epoch}'s output, which the coordinator's durable \
                 record does not hold committed (committed so far: {:?})",
                self.cluster_committed
                    .iter()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
            ));
            return;
        }
        let items: Vec<(u64, Key, u64, u64)> = self.members[m]
            .wal
            .output(epoch)
            .into_iter()
            .enumerate()
            .map(|(i, (k, c, v))| (i as u64, k, c, v))
            .collect();
        let Some(app) = &self.members[m].app else {
            return;
        };
        let sink = app.sink;
        self.note(format!(
            "member {m} releases epoch {epoch} ({} outputs)",
            items.len()
        ));
        self.send(sink, End::Member(m), Msg::Output { epoch, items });
    }

    fn sink_msg(&mut self, kind: Kind, msg: Msg) {
        let (Kind::Sink { member, app }, Msg::Output { epoch, items }) = (kind, msg) else {
            return;
        };
        for (seq, key, count, version) in items {
            if (epoch, seq) <= self.sink_last[member] {
                continue;
            }
            self.sink_last[member] = (epoch, seq);
            let last_version = self.sink_version.entry(key).or_default();
            if version < *last_version {
                let was = *last_version;
                self.violate(format!(
                    "released output of key {key} goes from version {was} back to {version} \
                     (member {member}, epoch {epoch}, seq {seq})"
                ));
                return;
            }
            *last_version = version;
            let last = self.sink_count.entry(key).or_default();
            if count != *last + 1 {
                let was = *last;
                self.violate(format!(
                    "released output of key {key} goes from count {was} to {count} \
                     (member {member}, epoch {epoch}, seq {seq}): a gap or a repeat"
                ));
                return;
            }
            *last = count;
        }
        if self.live_app(member, app) {
            self.drive(member, participant::Event::Written { epoch });
            let app = self.members[member].app.as_mut().expect("live");
            if let Some((conn, checkpoint)) = app.until_written
                && app.participant.written() >= checkpoint
            {
                app.until_written = None;
                self.reply(member, conn, Reply::Ok);
            }
        }
    }

    // ---- members: the log ----------------------------------------------------------------

    fn request_sync(&mut self, m: usize) {
        let member = &mut self.members[m];
        if member.sync_pending || member.wal.durable() >= member.wal.end() {
            return;
        }
        member.sync_pending = true;
        let inc = member.inc;
        let d = self.rng.range(100 * US, 3 * MS);
        self.after(d, Ev::Sync { member: m, inc });
    }

    fn sync(&mut self, m: usize) {
        let member = &mut self.members[m];
        member.sync_pending = false;
        let target = member.wal.end();
        if !member.wal.sync_to(target) {
            self.note(format!("member {m}'s log failed (sync)"));
            return;
        }
        let durable = member.wal.durable();
        self.flush_acks(m);
        let member = &mut self.members[m];
        if member.app.is_some() {
            self.drive(m, participant::Event::Durable { lsn: durable });
        }
        self.request_sync(m);
    }

    /// Acknowledges frames the log is durable past.
    fn flush_acks(&mut self, m: usize) {
        let member = &mut self.members[m];
        let durable = member.wal.durable();
        let mut acks = Vec::new();
        while member.acks.front().is_some_and(|(l, _, _)| *l <= durable) {
            acks.extend(member.acks.pop_front());
        }
        for (_, conn, next) in acks {
            self.send(conn, End::Member(m), Msg::Ack { next });
        }
    }

    // ---- members: the workers ------------------------------------------------------------

    fn schedule_work(&mut self, m: usize, w: usize) {
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        let worker = &mut app.workers[w];
        if worker.scheduled || !worker.has_work() {
            return;
        }
        worker.scheduled = true;
        let id = app.id;
        let d = self.rng.range(10 * US, 300 * US);
        self.after(
            d,
            Ev::Work {
                member: m,
                app: id,
                worker: w,
            },
        );
    }

    fn work(&mut self, m: usize, w: usize) {
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        let worker = &mut app.workers[w];
        worker.scheduled = false;
        let item = match worker.stash.pop_front() {
            Some(item) if !worker.gate.at_barrier() => Some(item),
            stashed => {
                if let Some(item) = stashed {
                    worker.stash.push_front(item);
                }
                worker.inbox.pop_front()
            }
        };
        match item {
            None => {}
            Some(Item::Barrier) => {
                worker.gate.barrier();
            }
            Some(Item::Snapshot) => self.snapshot(m, w),
            Some(item) => self.take(m, w, item),
        }
        self.schedule_work(m, w);
        self.answer_align(m, false);
    }

    /// An input item through the gate: processed, held or kept for after the snapshot.
    fn take(&mut self, m: usize, w: usize, item: Item) {
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        let worker = &mut app.workers[w];
        let input = match &item {
            Item::Source { .. } => Input::Source,
            Item::Routed { epoch, .. } => Input::Routed { epoch: *epoch },
            _ => return,
        };
        match worker.gate.admit(input) {
            Admit::Hold => worker.stash.push_back(item),
            Admit::Ahead => worker.ahead.push_back(item),
            Admit::Process => self.process(m, w, item),
        }
    }

    fn process(&mut self, m: usize, w: usize, item: Item) {
        match item {
            Item::Source { keys } => {
                let version = self.members[m].app.as_ref().map_or(0, |a| a.version);
                let mut routes: BTreeMap<(usize, usize), Vec<Key>> = BTreeMap::new();
                for k in keys {
                    routes.entry(self.owner(version, k)).or_default().push(k);
                }
                for ((om, ow), keys) in routes {
                    if (om, ow) == (m, w) {
                        self.count(m, w, &keys);
                    } else {
                        self.route(m, w, om, ow, keys);
                    }
                }
            }
            Item::Routed { keys, .. } => {
                self.count(m, w, &keys);
                if let Some(app) = &mut self.members[m].app {
                    app.routed_in_flight -= 1;
                }
            }
            _ => {}
        }
    }

    fn count(&mut self, m: usize, w: usize, keys: &[Key]) {
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        let version = app.version;
        let worker = &mut app.workers[w];
        for &k in keys {
            let c = worker.state.entry(k).or_default();
            *c += 1;
            worker.dirty.insert(k);
            worker.held.push((k, *c, version));
        }
    }

    fn route(&mut self, m: usize, w: usize, om: usize, ow: usize, keys: Vec<Key>) {
        let reachable = self.reachable(m, om);
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        let epoch = app.workers[w].gate.epoch();
        if om == m {
            app.routed_in_flight += 1;
            app.workers[ow]
                .inbox
                .push_back(Item::Routed { epoch, keys });
            self.schedule_work(m, ow);
            return;
        }
        app.sent += 1;
        let generation = app.generation;
        let conn = match app.links.get(&om) {
            Some(&c) => c,
            None => {
                let c = self.open(
                    End::Member(m),
                    End::Member(om),
                    Kind::Data {
                        generation,
                        from: m,
                        to: om,
                    },
                );
                if let Some(app) = &mut self.members[m].app {
                    app.links.insert(om, c);
                }
                if !reachable {
                    self.break_conn(c, "the peer is unreachable");
                }
                c
            }
        };
        self.send(
            conn,
            End::Member(m),
            Msg::Batch {
                epoch,
                worker: ow,
                keys,
            },
        );
    }

    fn snapshot(&mut self, m: usize, w: usize) {
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        let Some(snap) = &mut app.snapshot else {
            self.violate(format!(
                "member {m} worker {w} met a snapshot nobody asked for"
            ));
            return;
        };
        let worker = &mut app.workers[w];
        let dirty = std::mem::take(&mut worker.dirty);
        let entries: Vec<(Key, u64)> = if snap.full {
            worker.state.iter().map(|(k, v)| (*k, *v)).collect()
        } else {
            dirty.iter().map(|k| (*k, worker.state[k])).collect()
        };
        let held = std::mem::take(&mut worker.held);
        snap.parts[w] = Some((entries, held));
        worker.gate.snapshot();
        let ahead = std::mem::take(&mut worker.ahead);
        for item in ahead {
            self.process(m, w, item);
        }
        let Some(app) = &mut self.members[m].app else {
            return;
        };
        if app
            .snapshot
            .as_ref()
            .is_some_and(|s| s.parts.iter().all(Option::is_some))
        {
            self.log_snapshot(m);
        }
    }

    fn log_snapshot(&mut self, m: usize) {
        let member = &mut self.members[m];
        let Some(app) = &mut member.app else { return };
        let Some(snap) = app.snapshot.take() else {
            return;
        };
        let wal = &mut member.wal;
        let mut ok = true;
        let mut first_output = None;
        let mut parts = Vec::new();
        for part in snap.parts.into_iter().flatten() {
            parts.push(part);
        }
        for (entries, _) in &parts {
            if !entries.is_empty() {
                ok &= wal
                    .append(Rec::State {
                        checkpoint: snap.checkpoint,
                        entries: entries.clone(),
                    })
                    .is_some();
            }
        }
        for (_, held) in parts {
            if !held.is_empty() {
                let lsn = wal.append(Rec::Output {
                    epoch: snap.checkpoint,
                    payloads: held,
                });
                ok &= lsn.is_some();
                first_output = first_output.or(lsn);
            }
        }
        if let Some(epoch) = snap.released {
            ok &= wal.append(Rec::Released { epoch }).is_some();
        }
        let commit = wal.append(Rec::Commit {
            checkpoint: snap.checkpoint,
            cut: snap.cut,
            streams: std::mem::take(&mut app.cut_positions),
        });
        let commit = commit.filter(|_| ok);
        self.request_sync(m);
        self.drive(
            m,
            participant::Event::Logged {
                commit,
                first_output: first_output.filter(|_| ok),
            },
        );
    }

    // ---- clients and sources -------------------------------------------------------------

    /// Schedules the client's next step, unless one is due or it is done.
    fn tick_client(&mut self, c: usize) {
        let client = &self.clients[c];
        if client.ticking || client.acked as usize >= client.frames.len() {
            return;
        }
        let d = if client.conn.is_some() {
            client.pace
        } else {
            self.rng.range(20 * MS, 200 * MS)
        };
        self.clients[c].ticking = true;
        self.after(d, Ev::ClientTick { client: c });
    }

    fn client_tick(&mut self, c: usize) {
        self.clients[c].ticking = false;
        if self.clients[c].conn.is_some() {
            self.pump(c);
            self.tick_client(c);
            return;
        }
        let m = self.clients[c].member;
        let member = &self.members[m];
        let open = member.up
            && !member.wal.failed()
            && member.app.as_ref().is_some_and(|a| !a.sources_stopped);
        if !open {
            self.tick_client(c);
            return;
        }
        let conn = self.open(
            End::Client(c),
            End::Member(m),
            Kind::Client {
                client: c,
                member: m,
            },
        );
        self.clients[c].conn = Some(conn);
        self.clients[c].greeted = false;
        let member = &mut self.members[m];
        member.clients.push(conn);
        let position = member
            .app
            .as_ref()
            .and_then(|a| a.positions.get(&(c as u32)).copied())
            .unwrap_or(0);
        // Frames below the position are acknowledged once the log is durable past them.
        let end = member.wal.end();
        member.acks.push_back((end, conn, position));
        self.note(format!(
            "client {c} connects to member {m} at position {position}"
        ));
        self.send(conn, End::Member(m), Msg::Hello { position });
        self.request_sync(m);
        self.flush_acks(m);
        self.tick_client(c);
    }

    fn client_msg(&mut self, c: usize, conn: ConnId, msg: Msg) {
        if self.clients[c].conn != Some(conn) {
            return;
        }
        match msg {
            Msg::Hello { position } => {
                let client = &mut self.clients[c];
                if position < client.acked {
                    let acked = client.acked;
                    self.violate(format!(
                        "client {c}'s stream resumes at {position}, but {acked} frames were \
                         acknowledged: acknowledged input was lost"
                    ));
                    return;
                }
                client.greeted = true;
                client.next = if std::mem::take(&mut client.resend) {
                    client.acked
                } else {
                    position
                };
            }
            Msg::Ack { next } => {
                let client = &mut self.clients[c];
                client.acked = client.acked.max(next);
                self.maybe_stop();
            }
            _ => {}
        }
    }

    fn pump(&mut self, c: usize) {
        let Some(conn) = self.clients[c].conn else {
            return;
        };
        let client = &self.clients[c];
        if client.greeted
            && client.next < client.acked + client.window
            && (client.next as usize) < client.frames.len()
        {
            let seq = client.next;
            let keys = client.frames[seq as usize].clone();
            self.clients[c].next += 1;
            self.send(conn, End::Client(c), Msg::Frame { seq, keys });
        }
    }

    fn frame(&mut self, m: usize, conn: ConnId, client: usize, seq: u64, keys: Vec<Key>) {
        let member = &mut self.members[m];
        let Some(app) = &mut member.app else {
            self.break_conn(conn, "no application");
            return;
        };
        if app.sources_stopped || member.wal.failed() {
            self.break_conn(conn, "the source does not accept input");
            return;
        }
        let stream = client as u32;
        let position = app.positions.get(&stream).copied().unwrap_or(0);
        if seq < position {
            return; // a repeat after a reconnect: already logged
        }
        if seq > position {
            self.violate(format!(
                "client {client} sent frame {seq} at position {position}"
            ));
            return;
        }
        let Some(lsn) = member.wal.append(Rec::Input {
            stream,
            seq,
            keys: keys.clone(),
        }) else {
            self.note(format!("member {m}'s log failed (append)"));
            self.break_conn(conn, "the log failed");
            return;
        };
        app.positions.insert(stream, seq + 1);
        let w = client % self.workers;
        app.workers[w].inbox.push_back(Item::Source { keys });
        member.acks.push_back((lsn, conn, seq + 1));
        self.schedule_work(m, w);
        self.request_sync(m);
    }

    fn maybe_stop(&mut self) {
        if self.stop_asked || !self.faults_over {
            return;
        }
        if self
            .clients
            .iter()
            .any(|c| (c.acked as usize) < c.frames.len())
        {
            return;
        }
        self.stop_asked = true;
        // Drawn only now, so that what happens before the stop is as it was for this seed.
        if self.faults_on && self.faults_rng.chance(0.5) {
            self.stop_faults_left = self.faults_rng.range(1, 3);
        }
        self.note("every client is done: stop".into());
        self.ask_stop();
    }

    /// `wallaroo stop`: asked of the coordinator, again later while its node is down.
    fn ask_stop(&mut self) {
        if self.coord.is_none() {
            self.after(200 * MS, Ev::AskStop);
            return;
        }
        self.coord_event(coordinator::Event::Stop, None);
    }

    // ---- swaps ---------------------------------------------------------------------------

    /// `wallaroo deploy` of the next version, at random times until the stop, during faults
    /// too. Versions asked are never asked again, so one answered Err can be checked never to
    /// be recorded later.
    fn ask_swap(&mut self) {
        if self.stop_asked {
            return;
        }
        let d = self.swaps_rng.range(self.swap_gap.0, self.swap_gap.1) * MS;
        self.after(d, Ev::AskSwap);
        if self.coord.is_none() || self.swap_asked.is_some() {
            return;
        }
        let version = self.next_version;
        self.next_version += 1;
        self.swap_asked = Some(version);
        self.swap_ready = false;
        *self.swaps.entry("asked").or_default() += 1;
        let base = self.durable.version;
        let mut roster = self.roster(base).to_vec();
        let mut slots = self.slots[&base];
        let mut change = coordinator::Change::swap(version, slots, self.config.checkpoint_interval);
        let mut table = self.table(base).to_vec();
        let mut what = "";
        if self.swaps_rng.chance(self.resize_chance) {
            // Members with clients keep their sources: only one a grow added is removed.
            let removable: Vec<usize> = roster
                .iter()
                .copied()
                .filter(|&m| m != 0 && self.clients.iter().all(|c| c.member != m))
                .collect();
            if slots < self.members.len() && (removable.is_empty() || self.swaps_rng.chance(0.5)) {
                // Grow: the next spare member is handed the deployment and joins.
                let new = slots;
                slots += 1;
                roster.push(new);
                change.members = slots;
                let member = &mut self.members[new];
                member.assigned = true;
                member.wal = Wal::default();
                let inc = member.inc;
                self.after(MS, Ev::AgentJoin { member: new, inc });
                for owner in table.iter_mut() {
                    if self.swaps_rng.chance(1.0 / roster.len() as f64) {
                        *owner = new;
                    }
                }
                change.moves = true;
                what = ", grows";
            } else if !removable.is_empty() {
                // Shrink: its keys go to the others.
                let gone = removable[self.swaps_rng.below(removable.len())];
                roster.retain(|&m| m != gone);
                change.removed = vec![gone];
                for owner in table.iter_mut().filter(|o| **o == gone) {
                    *owner = roster[self.swaps_rng.below(roster.len())];
                }
                change.moves = true;
                what = ", shrinks";
            }
        }
        if what.is_empty() && roster.len() > 1 && self.swaps_rng.chance(self.move_chance) {
            // Another owner for some keys: the state of each goes with it.
            for owner in table.iter_mut() {
                if self.swaps_rng.chance(0.4) {
                    *owner = roster[self.swaps_rng.below(roster.len())];
                }
            }
            change.moves = true;
            what = ", keys move";
        }
        if !what.is_empty() {
            *self.swaps.entry(&what[2..]).or_default() += 1;
        }
        self.tables.insert(version, table);
        // A shrink that cannot start is not gone back from (the removed members left): the
        // product's shrinks keep the component, so the model's do not break it.
        if change.removed.is_empty() && self.swaps_rng.chance(self.broken_chance) {
            // Its code cannot restore the state on one member: found only at the start.
            let m = roster[self.swaps_rng.below(roster.len())];
            self.broken.insert(version, m);
        }
        self.rosters.insert(version, roster);
        self.slots.insert(version, slots);
        self.note(format!("SWAP to version {version} asked{what}"));
        self.coord_event(coordinator::Event::Change(change), None);
    }

    fn swapped(&mut self, answer: Result<u64, String>) {
        self.note(format!("coord: swap answered {answer:?}"));
        let Some(version) = self.swap_asked.take() else {
            self.violate(format!("a swap answered {answer:?}, none asked"));
            return;
        };
        match answer {
            Ok(v) => {
                *self.swaps.entry("ok").or_default() += 1;
                if v != version || self.durable.version != version {
                    self.violate(format!(
                        "the swap to version {version} answered Ok({v}), but the durable record \
                         holds version {}",
                        self.durable.version
                    ));
                }
            }
            Err(_) if self.changed_back.contains_key(&version) => {
                // Recorded, could not start, and the cluster went back: to a later version.
                *self.swaps.entry("changed back").or_default() += 1;
                let back = self.changed_back[&version];
                if self.durable.version < back {
                    self.violate(format!(
                        "the change to version {version} was answered as changed back to \
                         version {back}, but the durable record holds version {}",
                        self.durable.version
                    ));
                }
            }
            Err(_) => {
                *self.swaps.entry("err").or_default() += 1;
                self.failed_versions.insert(version);
                if self.durable.version >= version {
                    self.violate(format!(
                        "the swap to version {version} answered with an error, but the durable \
                         record holds version {}",
                        self.durable.version
                    ));
                }
            }
        }
    }

    /// How long a record write of the coordinator takes: now and then long (a slow disk), so
    /// that losses fall while a record is unanswered.
    fn record_time(&mut self) -> u64 {
        if self.rng.chance(0.05) {
            self.rng.range(20 * MS, 300 * MS)
        } else {
            self.rng.range(200 * US, 5 * MS)
        }
    }

    /// The highest version any generation started with.
    fn durable_started_version(&self) -> u64 {
        self.generation_version.values().copied().max().unwrap_or(0)
    }

    /// The step of the swap under way, if any: for the faults injected during each.
    fn swap_step(&self) -> Option<&'static str> {
        self.swap_asked?;
        let state = self.coord.as_ref()?.coord.state();
        Some(match state {
            "changing: ready" => "ready",
            "changing: stop sources" | "changing: drain" => "drain",
            "changing: move" => "move",
            "changing: record" => "record",
            s if s.starts_with("checkpoint") && self.swap_ready => "checkpoint",
            s if s.starts_with("checkpoint") => "waiting",
            "starting" => "start",
            _ => "recovery",
        })
    }

    // ---- faults --------------------------------------------------------------------------

    fn fault(&mut self) {
        if !self.faults_on || self.faults_over {
            return;
        }
        let total: u64 = self.fault_weights.iter().sum();
        let mut pick = self.faults_rng.range(0, total - 1);
        let mut kind = 0;
        for (i, w) in self.fault_weights.iter().enumerate() {
            if pick < *w {
                kind = i;
                break;
            }
            pick -= w;
        }
        let n = self.members.len();
        let m = self.faults_rng.below(n);
        let phase = self.swap_step();
        let did = match FAULT_KINDS[kind] {
            "crash" => self.crash(m),
            "control-drop" => match self.members[m].control {
                Some(c) if self.members[m].up => {
                    self.break_conn(c, "dropped (simulated)");
                    true
                }
                _ => false,
            },
            "data-drop" => {
                let links: Vec<ConnId> = self.members[m]
                    .app
                    .as_ref()
                    .map(|a| a.links.values().copied().collect())
                    .unwrap_or_default();
                match links.get(self.faults_rng.below(links.len().max(1))) {
                    Some(&c) if !self.conns[c].broken => {
                        self.break_conn(c, "dropped (simulated)");
                        true
                    }
                    _ => false,
                }
            }
            kind @ ("client-drop" | "duplicate") => {
                let c = self.faults_rng.below(self.clients.len());
                match self.clients[c].conn {
                    Some(conn) => {
                        self.clients[c].resend = kind == "duplicate";
                        self.break_conn(conn, "dropped (simulated)");
                        true
                    }
                    None => false,
                }
            }
            "partition" if n > 1 => {
                let mut b = self.faults_rng.below(n - 1);
                if b >= m {
                    b += 1;
                }
                self.partition(m.min(b), m.max(b));
                true
            }
            "fsync-fail" => {
                self.members[m].wal.fail_next_sync = true;
                true
            }
            "disk-full" => {
                self.members[m].wal.full = true;
                let d = self.faults_rng.range(50, 800) * MS;
                self.after(d, Ev::DiskFree { member: m });
                true
            }
            "record-fail" => {
                self.record_fails = true;
                true
            }
            _ => false,
        };
        if did {
            if let Some(step) = phase {
                *self.swap_faults.entry(step).or_default() += 1;
            }
            let kind = FAULT_KINDS[kind];
            *self.faults.entry(kind).or_default() += 1;
            self.note(format!("FAULT {kind} (member {m})"));
        }
    }

    /// A swap's step begins: now and then a fault falls in it.
    fn aim_fault(&mut self) {
        if self.faults_on && !self.faults_over && self.faults_rng.chance(0.25) {
            let d = self.faults_rng.range(0, 8_000) * US;
            self.after(d, Ev::SwapFault);
        }
    }

    fn aim_stop_fault(&mut self) {
        if self.stop_faults_left > 0 && self.faults_rng.chance(0.3) {
            self.stop_faults_left -= 1;
            let d = self.faults_rng.range(0, 8_000) * US;
            self.after(d, Ev::StopFault);
        }
    }

    /// Breaks one data stream between members, as a network fault may while the cluster
    /// stops: the member sending on it leaves and joins again.
    fn stop_fault(&mut self) {
        let links: Vec<ConnId> = self
            .members
            .iter()
            .filter_map(|m| m.app.as_ref())
            .flat_map(|a| a.links.values().copied())
            .filter(|&c| !self.conns[c].broken)
            .collect();
        if links.is_empty() {
            return;
        }
        let c = links[self.faults_rng.below(links.len())];
        let step = self
            .coord
            .as_ref()
            .map_or("coordinator down", |c| c.coord.state());
        self.note(format!("a data stream breaks while {step} (simulated)"));
        *self.stop_faults.entry(step).or_default() += 1;
        self.break_conn(c, "dropped while stopping (simulated)");
    }

    fn crash(&mut self, m: usize) -> bool {
        if !self.members[m].up {
            return false;
        }
        self.abort_app(m, "crash");
        let member = &mut self.members[m];
        member.up = false;
        member.inc += 1;
        member.sync_pending = false;
        member.left = None;
        if let Some(c) = member.control.take() {
            self.break_conn(c, "the node crashed");
        }
        let torn = self.members[m].wal.tear(&mut self.rng);
        self.note(format!("member {m} crashes, its log torn: {torn:?}"));
        if m == 0 {
            if let Some(mut host) = self.coord.take() {
                // A write under way when the node died may have reached the disk.
                if host.writing
                    && self.rng.chance(0.5)
                    && let Some(record) = host.writes.pop_front()
                {
                    self.make_durable(record);
                }
                for c in host.streams.iter().flatten() {
                    self.break_conn(*c, "the coordinator's node crashed");
                }
            }
            self.record_fails = false;
            // The deploy that asked for a swap hears nothing: its node is gone.
            if let Some(version) = self.swap_asked.take() {
                self.note(format!("the swap to version {version} is never answered"));
                *self.swaps.entry("unanswered").or_default() += 1;
            }
        }
        // Every connection to the crashed node breaks.
        let mine: Vec<ConnId> = (0..self.conns.len())
            .filter(|&c| !self.conns[c].broken && self.conns[c].ends.contains(&End::Member(m)))
            .collect();
        for c in mine {
            self.break_conn(c, "the node crashed");
        }
        if m == 0 {
            let coord: Vec<ConnId> = (0..self.conns.len())
                .filter(|&c| !self.conns[c].broken && self.conns[c].ends.contains(&End::Coord))
                .collect();
            for c in coord {
                self.break_conn(c, "the coordinator's node crashed");
            }
        }
        let d = self.faults_rng.range(50, 2000) * MS;
        self.after(d, Ev::Restart { member: m });
        true
    }

    fn restart(&mut self, m: usize) {
        if self.members[m].up {
            return;
        }
        let member = &mut self.members[m];
        member.up = true;
        member.inc += 1;
        let inc = member.inc;
        self.note(format!("member {m} restarts"));
        if m == 0 {
            let now = Duration::from_nanos(self.now);
            let config = self.config_of(self.durable.version);
            let (coord, actions) = Coordinator::new(config, self.durable, false, now);
            self.coord = Some(CoordHost {
                coord,
                streams: vec![None; self.members.len()],
                inc,
                writes: VecDeque::new(),
                writing: false,
                timer: None,
                spins: 0,
            });
            self.coord_actions(actions, None);
        }
        self.after(US, Ev::AgentJoin { member: m, inc });
    }

    fn partition(&mut self, a: usize, b: usize) {
        self.partitions.insert((a, b));
        let cross: Vec<ConnId> = (0..self.conns.len())
            .filter(|&c| {
                let conn = &self.conns[c];
                !conn.broken && {
                    let node = |e: End| match e {
                        End::Coord => Some(0),
                        End::Member(m) => Some(m),
                        _ => None,
                    };
                    let (x, y) = (node(conn.ends[0]), node(conn.ends[1]));
                    matches!((x, y), (Some(x), Some(y)) if (x.min(y), x.max(y)) == (a, b))
                }
            })
            .collect();
        for c in cross {
            self.break_conn(c, "partitioned");
        }
        let d = self.faults_rng.range(100, 2000) * MS;
        self.after(d, Ev::Heal { a, b });
    }

    fn faults_end(&mut self) {
        self.faults_over = true;
        self.partitions.clear();
        for m in 0..self.members.len() {
            self.members[m].wal.full = false;
            self.members[m].wal.fail_next_sync = false;
            if !self.members[m].up {
                self.after(MS, Ev::Restart { member: m });
            }
        }
        self.record_fails = false;
        self.note("faults stop".into());
        let committed = self.durable.committed;
        self.after(LIVENESS_BOUND.as_nanos() as u64, Ev::Liveness { committed });
        self.maybe_stop();
    }

    // ---- the end -------------------------------------------------------------------------

    fn final_checks(&mut self) {
        let mut totals: BTreeMap<Key, u64> = BTreeMap::new();
        for c in &self.clients {
            for f in &c.frames {
                for k in f {
                    *totals.entry(*k).or_default() += 1;
                }
            }
        }
        let mut logged = BTreeMap::new();
        let mut state = BTreeMap::new();
        for m in self.roster(self.durable.version).to_vec() {
            wal::counted_before(&self.members[m].wal, Lsn::MAX, &mut logged);
            state.extend(self.owned_state(m, self.durable.committed, self.durable.version));
        }
        state.retain(|_, v| *v > 0);
        if logged != totals {
            self.violate(format!(
                "the logs do not hold every acknowledged frame exactly once: logged {logged:?}, \
                 sent {totals:?}"
            ));
        } else if state != totals {
            self.violate(format!(
                "committed state does not count every acknowledged frame exactly once: \
                 committed {state:?}, sent {totals:?}"
            ));
        } else if self.sink_count != totals {
            self.violate(format!(
                "released output does not reach every count: released up to {:?}, sent {totals:?}",
                self.sink_count
            ));
        }
    }
}
