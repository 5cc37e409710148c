//! The coordinator's driver, on the first node of hosts.txt. What the coordinator decides is
//! the protocol core's ([`wallaroo_protocol::coordinator`]): membership, generations,
//! cluster-wide checkpoints, recovery and stop. This file only carries out its actions over
//! QUIC control streams and the cluster record, and turns what happens into its events.
//!
//! Each accepted control stream gets a reader task that hands the node's answers in with the
//! stream's number, so answers from a stream the core has already let go of are dropped.
//! Cluster records are written one after another, in the order asked (the core counts only
//! the answer to the last).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use wallaroo_protocol::coordinator::{
    self as core, Action, Command, Config, Event, Patience, Reply,
};
use wallaroo_transport::FrameSender;

use crate::daemon::{Context, Stream};
use crate::manifest::{ClusterRecord, Manifest};
use crate::proto::{Change, Msg, NodeStatus, Recovery, Refusal, RefusalKind, Rejoin, Totals};

/// How often, with the deployment asked to finish at the end, the coordinator asks the
/// members where their input stands.
const FINISH_POLL: Duration = Duration::from_millis(500);

/// What reaches the coordinator: a node's control stream, or a client's stop.
pub(crate) enum Joined {
    Node {
        index: u16,
        deployment: String,
        rejoin: Option<Rejoin>,
        stream: Box<Stream>,
    },
    Stop(oneshot::Sender<Msg>),
    /// `wallaroo deploy` onto the running application: the deployment as it asks it to be
    /// (another component, other nodes, other options).
    Swap {
        manifest: Box<Manifest>,
        reply: oneshot::Sender<Msg>,
    },
}

/// What the driver's own tasks hand in.
enum Inner {
    /// Member `member`'s stream number `stream` gave `msg` (None: it closed). Boxed: a
    /// `Msg` is large beside the other variant.
    Answer {
        member: usize,
        stream: u64,
        msg: Box<Result<Option<Msg>, String>>,
    },
    Recorded(Result<(), String>),
    /// With the deployment asked to finish at the end: every member's status, by index.
    Finish(Vec<Result<NodeStatus, String>>),
}

/// A member's control stream as the driver holds it.
struct Link {
    number: u64,
    /// None once finished.
    tx: Option<FrameSender<Msg>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Closing the stream stops the application on the node.
        self.reader.abort();
    }
}

pub(crate) struct Coordinator {
    ctx: Arc<Context>,
    manifest: Manifest,
    record: ClusterRecord,
    events: flume::Receiver<Joined>,
}

/// What the driver keeps beside the core.
struct Driver {
    ctx: Arc<Context>,
    manifest: Manifest,
    core: core::Coordinator,
    start: tokio::time::Instant,
    links: Vec<Option<Link>>,
    streams_opened: u64,
    /// The stream of the join being handled, until the core accepts or refuses it.
    joining: Option<Box<Stream>>,
    inner_tx: mpsc::UnboundedSender<Inner>,
    records: mpsc::UnboundedSender<ClusterRecord>,
    deployed: Option<oneshot::Sender<anyhow::Result<Msg>>>,
    stops: Vec<oneshot::Sender<Msg>>,
    app_name: String,
    /// Per member, where its sources listen (from its last Started) and its totals (from its
    /// Stopped).
    sources: Vec<Vec<String>>,
    totals: Vec<Totals>,
    /// The deployment as the running version has it (the one deployed until a change).
    current: Manifest,
    /// A change under way: its version, the deployment it makes, reply and start.
    swap: Option<(u64, Manifest, oneshot::Sender<Msg>, Instant)>,
    /// The stateful steps whose state the change under way drops.
    swap_drops: Vec<String>,
    /// Since when the change under way pauses the stream: its sources were asked to stop
    /// (a change that moves key groups), else every node had committed its checkpoint (the
    /// core then asks for the record of the new version).
    swap_committed: Option<Instant>,
    /// While the cluster recovers: since when (the loss), and why.
    recovering: Option<(Instant, String)>,
    /// The last changes (see [`Change`]), oldest first; published to `ctx.changes`.
    changes: VecDeque<Change>,
    /// With the deployment asked to finish at the end: the members' statuses are being
    /// asked for, and the members were told that every node's input has ended.
    finish_asked: bool,
    input_ended: bool,
    /// The stop that finishes is under way, from this generation.
    finishing: bool,
    finish_generation: u64,
}

impl Coordinator {
    pub(crate) fn new(
        ctx: Arc<Context>,
        manifest: Manifest,
        record: ClusterRecord,
        events: flume::Receiver<Joined>,
    ) -> Self {
        Self {
            ctx,
            manifest,
            record,
            events,
        }
    }

    pub(crate) async fn run(self, deployed: Option<oneshot::Sender<anyhow::Result<Msg>>>) {
        let Coordinator {
            ctx,
            manifest,
            record,
            events,
        } = self;
        let current = record.manifest.clone().unwrap_or_else(|| Manifest {
            component: record
                .component
                .clone()
                .unwrap_or_else(|| manifest.component.clone()),
            ..manifest.clone()
        });
        let members = current.nodes.len();
        let config = Config {
            deployment: manifest.deployment.clone(),
            members,
            retired: current.retired.iter().map(|&m| m as usize).collect(),
            checkpoint_interval: checkpoint_interval(&current),
            patience: Patience::default(),
        };
        let first_deploy = deployed.is_some();
        let start = tokio::time::Instant::now();
        let record = core::Record {
            generation: record.generation,
            committed: record.committed,
            version: record.version,
        };
        let (mut core, actions) =
            core::Coordinator::new(config, record, first_deploy, Duration::ZERO);
        core.set_names(names(&current));
        let (inner_tx, mut inner) = mpsc::unbounded_channel();
        let records = record_writer(ctx.clone(), inner_tx.clone());
        let mut driver = Driver {
            ctx,
            manifest,
            core,
            start,
            links: (0..members).map(|_| None).collect(),
            streams_opened: 0,
            joining: None,
            inner_tx,
            records,
            deployed,
            stops: Vec::new(),
            app_name: String::new(),
            sources: vec![Vec::new(); members],
            totals: vec![Totals::default(); members],
            current,
            swap: None,
            swap_drops: Vec::new(),
            swap_committed: None,
            recovering: None,
            changes: VecDeque::new(),
            finish_asked: false,
            input_ended: false,
            finishing: false,
            finish_generation: 0,
        };
        if !first_deploy {
            driver.announce_restart(record.generation);
        }
        driver.carry_out(actions).await;
        let mut finish_poll = tokio::time::interval(FINISH_POLL);
        while !driver.core.done() {
            let deadline = driver.core.poll_timeout().map(|at| start + at);
            let finishing = driver.current.settings.finish;
            let event = tokio::select! {
                _ = finish_poll.tick(), if finishing => {
                    driver.ask_finish();
                    None
                }
                joined = events.recv_async() => match joined {
                    Ok(Joined::Node { index, deployment, rejoin, stream }) => {
                        driver.joining = Some(stream);
                        Some(Event::Join { member: index, deployment, rejoin })
                    }
                    Ok(Joined::Stop(reply)) => {
                        driver.stops.push(reply);
                        Some(Event::Stop)
                    }
                    Ok(Joined::Swap { manifest, reply }) => driver.swap_asked(*manifest, reply),
                    // The node is stopping.
                    Err(_) => return,
                },
                Some(got) = inner.recv() => driver.inner_event(got),
                _ = sleep_until(deadline) => Some(Event::Timeout),
            };
            if let Some(event) = event {
                driver.handle(event).await;
            }
        }
    }
}

/// Asks each of `members` (indexes into `nodes`) `msg` on a request stream of its own, one
/// after another, and returns each one's answer.
async fn ask_each(
    ctx: &Context,
    nodes: &[String],
    members: Vec<usize>,
    msg: &Msg,
) -> Vec<(usize, anyhow::Result<Msg>)> {
    let mut answers = Vec::with_capacity(members.len());
    for m in members {
        let asked = async {
            let conn = ctx.connection(&nodes[m]).await?;
            crate::daemon::request(&conn, msg).await
        };
        answers.push((m, asked.await));
    }
    answers
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes cluster records one after another, in the order asked, and hands in each result.
fn record_writer(
    ctx: Arc<Context>,
    done: mpsc::UnboundedSender<Inner>,
) -> mpsc::UnboundedSender<ClusterRecord> {
    let (tx, mut rx) = mpsc::unbounded_channel::<ClusterRecord>();
    tokio::spawn(async move {
        while let Some(record) = rx.recv().await {
            let data = ctx.data.clone();
            let written = tokio::task::spawn_blocking(move || data.write_cluster_record(&record))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
                .map_err(|e| format!("{e:#}"));
            if done.send(Inner::Recorded(written)).is_err() {
                return;
            }
        }
    });
    tx
}

impl Driver {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn handle(&mut self, event: Event) {
        let before = self.core.state();
        let actions = self.core.handle(self.now(), event);
        let after = self.core.state();
        if self.swap.is_some() && after != before {
            // Where a change's time goes (benches/grow.py reads these).
            tracing::debug!("change under way: {after}");
        }
        self.carry_out(actions).await;
    }

    /// Carries out actions, and the actions that follow from events they cause at once (a
    /// failed send).
    async fn carry_out(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            if let Some(event) = self.carry_out_one(action).await {
                queue.extend(self.core.handle(self.now(), event));
            }
        }
        // A join neither accepted nor refused (the coordinator is done): dropped.
        self.joining = None;
        self.publish_recovery();
    }

    async fn carry_out_one(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Accept { member } => {
                let (tx, rx) = *self.joining.take()?;
                self.streams_opened += 1;
                let number = self.streams_opened;
                let reader = tokio::spawn(read_answers(rx, member, number, self.inner_tx.clone()));
                self.links[member] = Some(Link {
                    number,
                    tx: Some(tx),
                    reader,
                });
                None
            }
            Action::Refuse { member, why } => {
                if let Some(mut stream) = self.joining.take() {
                    // A node a shrink removed stops when told so.
                    let kind = match self.current.retired.contains(&member) {
                        true => RefusalKind::Removed,
                        false => RefusalKind::WrongDeployment,
                    };
                    let refusal = Refusal::new(kind, why);
                    let _ = stream.0.send(&Msg::Refused(refusal)).await;
                }
                None
            }
            Action::Send { member, command } => {
                if command == Command::StopSources && self.swap.is_some() {
                    // A change that moves key groups pauses the stream from here.
                    self.swap_committed.get_or_insert_with(Instant::now);
                }
                let command = self.message(command);
                let Some(tx) = self.links[member].as_mut().and_then(|l| l.tx.as_mut()) else {
                    let why = "not joined".to_string();
                    return Some(Event::Lost { member, why });
                };
                match tx.send(&command).await {
                    Ok(()) => None,
                    Err(e) => {
                        self.links[member] = None;
                        Some(Event::Lost {
                            member,
                            why: format!("{e:#}"),
                        })
                    }
                }
            }
            Action::Disconnect { member } => {
                self.links[member] = None;
                None
            }
            Action::Record(record) => {
                if matches!(&self.swap, Some((v, ..)) if *v == record.version) {
                    self.swap_committed.get_or_insert_with(Instant::now);
                }
                let running = self.manifest_of(record.version);
                let component = running.component.clone();
                let _ = self.records.send(ClusterRecord {
                    generation: record.generation,
                    committed: record.committed,
                    version: record.version,
                    component: (component != self.manifest.component).then_some(component),
                    manifest: (*running != self.manifest).then(|| running.clone()),
                });
                None
            }
            Action::Swapped(answer) => {
                let (version, asked, reply, started) = self.swap.take()?;
                let drops = std::mem::take(&mut self.swap_drops);
                let committed = self.swap_committed.take();
                let component = asked.component.clone();
                let (kind, what) = describe_change(&self.current, &asked);
                let mut change = Change {
                    kind: kind.into(),
                    generation: self.core.record().generation,
                    from: self.current.component.clone(),
                    to: component.clone(),
                    took_ms: millis(started.elapsed()),
                    ..Change::default()
                };
                let answer = match answer {
                    Ok(_) => {
                        self.current = asked;
                        change.paused_ms = committed.map(|at| millis(at.elapsed()));
                        let paused = match change.paused_ms {
                            Some(ms) => format!(", the stream paused {ms} ms"),
                            None => String::new(),
                        };
                        let mut line = format!(
                            "{what} (version {version}) in {} ms{paused}",
                            change.took_ms,
                        );
                        if !drops.is_empty() {
                            line += &format!(
                                "; the state of stateful step '{}' was dropped (--drop-state)",
                                drops.join("', '")
                            );
                        }
                        tracing::info!("{line}");
                        Msg::Changed {
                            app: self.app_name.clone(),
                            what: line,
                        }
                    }
                    Err(why) => {
                        if self.core.record().version == version {
                            // A change back to what ran before (see `ChangingBack`): it runs.
                            self.current = asked;
                        }
                        // Slots of new nodes the failed change added are gone.
                        self.forget_slots_above(self.core.members());
                        change.failed = true;
                        change.reason = why.clone();
                        // The cluster not running (starting, recovering from a lost node):
                        // the same deploy can succeed once it runs again.
                        let kind = match self.core.running() {
                            true => RefusalKind::Failed,
                            false => RefusalKind::Recovering,
                        };
                        Msg::Refused(Refusal::new(kind, why))
                    }
                };
                self.changed(change);
                let _ = reply.send(answer);
                None
            }
            Action::ChangingBack { version, from, .. } => {
                let (v, asked, reply, started) = self.swap.take()?;
                if v != from {
                    self.swap = Some((v, asked, reply, started));
                    return None;
                }
                // What ran before, with the nodes the failed change added kept, removed.
                let mut back = self.current.clone();
                back.nodes = asked.nodes.clone();
                back.retired
                    .extend((self.current.nodes.len()..asked.nodes.len()).map(|i| i as u16));
                self.swap = Some((version, back, reply, started));
                None
            }
            Action::Running {
                generation,
                checkpoint,
                first,
            } => {
                let recovered = self.recovering.take();
                if first {
                    self.changed(Change {
                        kind: "deploy".into(),
                        generation,
                        to: self.current.component.clone(),
                        took_ms: millis(self.start.elapsed()),
                        ..Change::default()
                    });
                } else if let Some((since, reason)) = recovered {
                    let ms = millis(since.elapsed());
                    self.changed(Change {
                        kind: "recovery".into(),
                        generation,
                        from: self.current.component.clone(),
                        to: self.current.component.clone(),
                        reason,
                        paused_ms: Some(ms),
                        took_ms: ms,
                        ..Change::default()
                    });
                }
                if let (true, Some(d)) = (first, self.deployed.take()) {
                    let sources = self.sources_text();
                    let app = self.app_name.clone();
                    let _ = d.send(Ok(Msg::Deployed { app, sources }));
                } else {
                    tracing::info!("generation {generation} running from checkpoint {checkpoint}");
                }
                None
            }
            Action::DeployFailed(why) => {
                if let Some(d) = self.deployed.take() {
                    let _ = d.send(Err(anyhow::anyhow!("{why}")));
                }
                None
            }
            Action::AnswerStops(answer) => {
                if std::mem::take(&mut self.finishing) {
                    match &answer {
                        Ok(()) => self.changed(Change {
                            kind: "finish".into(),
                            generation: self.finish_generation,
                            ..Change::default()
                        }),
                        // It runs on (or recovers): the next rounds of asking finish again.
                        Err(why) => tracing::warn!("the finish's stop failed: {why}"),
                    }
                }
                let answer = match answer {
                    Ok(()) => Msg::Deployed {
                        app: self.app_name.clone(),
                        sources: self.totals_text(),
                    },
                    // Refused during a recovery (waiting for nodes): asking again once the
                    // cluster runs can succeed.
                    Err(why) if self.core.recovery().is_some() => {
                        Msg::Refused(Refusal::new(RefusalKind::Recovering, why))
                    }
                    Err(why) => Msg::Refused(Refusal::new(RefusalKind::Failed, why)),
                };
                for reply in self.stops.drain(..) {
                    let _ = reply.send(answer.clone());
                }
                None
            }
            Action::Note { warn: true, text } => {
                tracing::warn!("{text}");
                None
            }
            Action::Note { warn: false, text } => {
                tracing::info!("{text}");
                None
            }
            Action::Done => {
                // Let the nodes read their last answer before the streams go.
                for link in self.links.iter_mut().flatten() {
                    if let Some(tx) = link.tx.take() {
                        let _ = tx.finish().await;
                    }
                }
                None
            }
        }
    }

    /// With the deployment asked to finish at the end: asks every member where its input
    /// stands (one round at a time, while the application runs).
    fn ask_finish(&mut self) {
        if self.finish_asked || self.finishing || !self.core.running() {
            return;
        }
        self.finish_asked = true;
        let (ctx, tx) = (self.ctx.clone(), self.inner_tx.clone());
        let nodes = self.current.nodes.clone();
        let members: Vec<usize> = self.current.members().map(|(m, _)| m).collect();
        tokio::spawn(async move {
            let answers = ask_each(&ctx, &nodes, members, &Msg::Status).await;
            let statuses = answers.into_iter().map(|(m, answer)| match answer {
                Ok(Msg::NodeStatus(s)) => Ok(*s),
                Ok(other) => Err(format!("node {m}: unexpected answer {}", other.name())),
                Err(e) => Err(format!("node {m}: {e:#}")),
            });
            let _ = tx.send(Inner::Finish(statuses.collect()));
        });
    }

    /// The members' statuses came: once every node's input has ended, each is told so; once
    /// each is at the end (every window fired, nothing queued), the cluster stops.
    fn finish_answers(&mut self, answers: Vec<Result<NodeStatus, String>>) -> Option<Event> {
        self.finish_asked = false;
        if self.finishing || !self.core.running() {
            return None;
        }
        let statuses: Vec<NodeStatus> = answers
            .into_iter()
            .filter_map(|a| a.map_err(|e| tracing::debug!("finish: {e}")).ok())
            .filter(|s| s.state == "running")
            .collect();
        if statuses.len() < self.current.members().count() {
            return None;
        }
        let inputs = statuses.iter().map(|s| s.input.unwrap_or_default());
        if !self.input_ended && wallaroo_engine::InputEnd::all_over(inputs) {
            self.input_ended = true;
            tracing::info!("every node's input has ended: event time moves to its end");
        }
        if self.input_ended && statuses.iter().all(|s| s.at_end) {
            tracing::info!("every source's stream has ended and every window has fired: finishing");
            self.finishing = true;
            self.finish_generation = statuses[0].generation;
            return Some(Event::Stop);
        }
        if self.input_ended {
            // Told again every round: a node that restarted since has to hear it too.
            let (ctx, nodes) = (self.ctx.clone(), self.current.nodes.clone());
            let members: Vec<usize> = statuses.iter().map(|s| s.index as usize).collect();
            tokio::spawn(async move {
                for (m, told) in ask_each(&ctx, &nodes, members, &Msg::EndInput).await {
                    if let Err(e) = told {
                        tracing::debug!("finish: telling node {m} its input ended: {e:#}");
                    }
                }
            });
        }
        None
    }

    /// An answer read from a member's control stream, as the core's event.
    fn inner_event(&mut self, got: Inner) -> Option<Event> {
        let (member, stream, msg) = match got {
            Inner::Recorded(result) => return Some(Event::Recorded(result)),
            Inner::Finish(answers) => return self.finish_answers(answers),
            Inner::Answer {
                member,
                stream,
                msg,
            } => (member, stream, *msg),
        };
        if self.links[member].as_ref().map(|l| l.number) != Some(stream) {
            // From a stream let go of already.
            return None;
        }
        let msg = match msg {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                self.links[member] = None;
                let why = "control stream closed".to_string();
                return Some(Event::Lost { member, why });
            }
            Err(why) => {
                self.links[member] = None;
                return Some(Event::Lost { member, why });
            }
        };
        let reply = match msg {
            Msg::Leaving(rejoin) => {
                // The node whose link broke is the one lost (see `rejoined`).
                let lost = core::rejoined(member, Some(&rejoin), self.links.len());
                return Some(Event::Lost {
                    member: lost.member,
                    why: lost.why,
                });
            }
            Msg::Started {
                app,
                next_checkpoint,
                sources,
            } => {
                self.app_name = app;
                self.sources[member] = sources;
                Reply::Started { next_checkpoint }
            }
            Msg::Ok => Reply::Ok,
            Msg::Aligned(a) => Reply::Aligned(a),
            Msg::Prepared(ok) => Reply::Prepared(ok),
            Msg::Drained {
                in_flight,
                sent,
                received,
            } => Reply::Drained {
                in_flight,
                sent,
                received,
            },
            Msg::Stopped(totals) => {
                self.totals[member] = totals;
                Reply::Stopped
            }
            Msg::Refused(refusal) => Reply::Refused(refusal.message),
            other => Reply::Refused(format!("unexpected answer {}", other.name())),
        };
        Some(Event::Reply { member, reply })
    }

    fn sources_text(&self) -> Vec<String> {
        self.sources
            .iter()
            .enumerate()
            .flat_map(|(i, at)| at.iter().map(move |s| format!("node {i}: {s}")))
            .collect()
    }

    fn totals_text(&self) -> Vec<String> {
        self.totals
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "node {i}: {} received, {} emitted, {} dead-lettered, {} messages to other \
                     nodes in {} bytes",
                    t.received, t.emitted, t.dead_lettered, t.remote_messages, t.remote_bytes
                )
            })
            .collect()
    }

    /// Keeps a change, and publishes the last ones for `wallaroo status`.
    fn changed(&mut self, change: Change) {
        let change = Change {
            at_ms: crate::manifest::unix_ms(std::time::SystemTime::now()).unwrap_or(0),
            ..change
        };
        self.changes.push_back(change);
        while self.changes.len() > Change::KEPT {
            self.changes.pop_front();
        }
        *self.ctx.changes.lock().unwrap() = self.changes.iter().cloned().collect();
    }

    /// Publishes what recovery waits for (None: the cluster runs), for `wallaroo status`,
    /// and keeps since when the cluster recovers and why, for its [`Change`].
    fn publish_recovery(&mut self) {
        if let Some(r) = self.core.recovery() {
            let since = Instant::now() - self.now().saturating_sub(r.since);
            let reason = match r.reason.as_str() {
                "" => "the coordinator restarted".to_string(),
                why => why.to_string(),
            };
            // Since the first loss, if another follows before the cluster runs again.
            let since = self.recovering.as_ref().map_or(since, |(at, _)| *at);
            self.recovering = Some((since, reason));
        }
        let recovery = self.core.recovery().map(|r| {
            let since = Instant::now() - self.now().saturating_sub(r.since);
            let missing = r.missing.iter().map(|&m| self.core.name(m)).collect();
            (
                since,
                Recovery {
                    waited_ms: 0,
                    missing,
                    checkpoint: r.checkpoint,
                    reason: r.reason,
                },
            )
        });
        *self.ctx.recovery.lock().unwrap() = recovery;
    }

    /// Tells every other node that this coordinator restarted, so that nodes still following
    /// its previous life join again now rather than when their connection times out. A node
    /// that cannot be reached will join when it can.
    fn announce_restart(&self, generation: u64) {
        let announce = Msg::Restarted {
            deployment: self.manifest.deployment.clone(),
            generation,
        };
        for (_, addr) in self.current.members().skip(1) {
            let (ctx, addr, announce) = (self.ctx.clone(), addr.clone(), announce.clone());
            tokio::spawn(async move {
                let told = async {
                    let conn = ctx.connection(&addr).await?;
                    crate::daemon::request(&conn, &announce).await
                };
                if let Err(e) = tokio::time::timeout(Duration::from_secs(10), told)
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)
                {
                    tracing::debug!("cannot tell {addr} that the coordinator restarted: {e:#}");
                }
            });
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads a member's answers until its stream ends, handing each in with the stream's number.
async fn read_answers(
    mut rx: wallaroo_transport::FrameReceiver<Msg>,
    member: usize,
    stream: u64,
    inner: mpsc::UnboundedSender<Inner>,
) {
    loop {
        let msg = rx.recv().await.map_err(|e| format!("{e:#}"));
        let end = !matches!(msg, Ok(Some(_)));
        if inner
            .send(Inner::Answer {
                member,
                stream,
                msg: Box::new(msg),
            })
            .is_err()
            || end
        {
            return;
        }
    }
}

impl Driver {
    /// A change asked by `wallaroo deploy` (see `daemon::deploy::reconcile`): the core's
    /// event, or the answer at once.
    fn swap_asked(&mut self, mut asked: Manifest, reply: oneshot::Sender<Msg>) -> Option<Event> {
        // Said at Ready only; the deployment as it runs does not keep it.
        let drop_state = std::mem::take(&mut asked.drop_state);
        if self.swap.is_some() {
            let why = "another change of the application is under way; try again once it is done";
            let refusal = Refusal::new(RefusalKind::Recovering, why);
            let _ = reply.send(Msg::Refused(refusal));
            return None;
        }
        if asked == self.current {
            let _ = reply.send(Msg::Changed {
                app: self.app_name.clone(),
                what: format!(
                    "the cluster already runs component {} on these nodes with these options: \
                     nothing to change",
                    short(&asked.component)
                ),
            });
            return None;
        }
        let version = self.core.record().version + 1;
        let members = asked.nodes.len();
        let change = core::Change {
            version,
            members,
            removed: asked
                .retired
                .iter()
                .filter(|m| !self.current.retired.contains(m))
                .map(|&m| m as usize)
                .collect(),
            checkpoint_interval: checkpoint_interval(&asked),
            moves: asked.table != self.current.table,
        };
        // Slots for the nodes the change adds: they join before it begins.
        self.links
            .resize_with(members.max(self.links.len()), || None);
        self.sources
            .resize(members.max(self.sources.len()), Vec::new());
        self.totals
            .resize(members.max(self.totals.len()), Totals::default());
        self.core.set_names(names(&asked));
        self.swap = Some((version, asked, reply, Instant::now()));
        self.swap_drops = drop_state;
        Some(Event::Change(change))
    }

    /// A change that added slots failed: the links of the nodes it added go (each was told to
    /// leave), and the names are the running version's again.
    fn forget_slots_above(&mut self, members: usize) {
        for link in self.links.iter_mut().skip(members) {
            if let Some(mut l) = link.take()
                && let Some(tx) = l.tx.take()
            {
                tokio::spawn(async move {
                    let _ = tx.finish().await;
                });
            }
        }
        self.links.truncate(members);
        self.sources.truncate(members);
        self.totals.truncate(members);
        self.core.set_names(names(&self.current));
    }

    /// The deployment as application version `version` has it.
    fn manifest_of(&self, version: u64) -> &Manifest {
        match &self.swap {
            Some((v, manifest, ..)) if *v == version => manifest,
            _ => &self.current,
        }
    }

    /// The wire message for a core command.
    fn message(&self, command: Command) -> Msg {
        let mut msg = message(command, |version| self.manifest_of(version));
        // Only the change under way is made ready.
        if let Msg::Ready { drop_state, .. } = &mut msg {
            drop_state.clone_from(&self.swap_drops);
        }
        msg
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Members' names for the core's notes: "node 1 (10.0.0.2:7100)".
fn names(m: &Manifest) -> Vec<String> {
    m.nodes
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("node {i} ({addr})"))
        .collect()
}

fn checkpoint_interval(m: &Manifest) -> Option<Duration> {
    let interval = Duration::from_millis(m.settings.checkpoint_interval_ms.max(1));
    (m.settings.resilience != wallaroo_engine::Resilience::None).then_some(interval)
}

/// What a change from `from` to `to` is (`swap`, `grow`, `shrink`, `resize`, `options`), and
/// a line saying what it did.
fn describe_change(from: &Manifest, to: &Manifest) -> (&'static str, String) {
    let members = |m: &Manifest| -> Vec<String> { m.members().map(|(_, a)| a.clone()).collect() };
    let (before, after) = (members(from), members(to));
    let added: Vec<&String> = after.iter().filter(|a| !before.contains(a)).collect();
    let removed: Vec<&String> = before.iter().filter(|a| !after.contains(a)).collect();
    let moved = from
        .table
        .iter()
        .zip(&to.table)
        .filter(|(a, b)| a != b)
        .count();
    let mut parts = Vec::new();
    if from.component != to.component {
        parts.push(format!("swapped to component {}", short(&to.component)));
    }
    let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if !added.is_empty() {
        parts.push(format!("added {}", list(&added)));
    }
    if !removed.is_empty() {
        parts.push(format!("removed {}", list(&removed)));
    }
    if moved > 0 {
        parts.push(format!(
            "moved {moved} key groups, {} nodes now",
            after.len()
        ));
    }
    if from.settings != to.settings {
        parts.push("changed options".into());
    }
    let kind = match (added.is_empty(), removed.is_empty()) {
        (false, true) => "grow",
        (true, false) => "shrink",
        (false, false) => "resize",
        (true, true) if from.component != to.component => "swap",
        (true, true) => "options",
    };
    (kind, parts.join("; "))
}

/// The wire message for a core command; `manifest` gives a version's deployment.
fn message<'m>(command: Command, manifest: impl Fn(u64) -> &'m Manifest) -> Msg {
    match command {
        Command::Start {
            generation,
            recover_to,
            version,
        } => Msg::Start {
            generation,
            recover_to,
            component: manifest(version).component.clone(),
            manifest: Some(Box::new(manifest(version).clone())),
        },
        Command::Ready { version } => Msg::Ready {
            component: manifest(version).component.clone(),
            drop_state: Vec::new(),
        },
        Command::Move {
            checkpoint,
            version,
        } => Msg::Move {
            checkpoint,
            manifest: Box::new(manifest(version).clone()),
        },
        Command::Leave => Msg::Leave,
        Command::Begin { checkpoint } => Msg::Begin { checkpoint },
        Command::Align => Msg::Align,
        Command::Prepare => Msg::Prepare,
        Command::Commit { checkpoint } => Msg::Commit { checkpoint },
        Command::StopSources => Msg::StopSources,
        Command::Drain => Msg::Drain,
        Command::Flush { checkpoint } => Msg::Flush { checkpoint },
        Command::Shutdown => Msg::Shutdown,
    }
}
