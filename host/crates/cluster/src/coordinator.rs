//! The coordinator, on the first node of hosts.txt: it waits for every node to join, starts
//! the application everywhere (rolled back to the last checkpoint the whole cluster
//! committed), drives cluster-wide checkpoints, and when a node is lost or restarts, stops the
//! application everywhere and starts it again from that checkpoint.
//!
//! A cluster-wide checkpoint N:
//! 1. `Begin N` on every node: each cuts its log and puts a barrier in its workers.
//! 2. `Align` until every node is aligned with nothing routed in flight, and the routed
//!    batches sent between nodes equal those received, the same twice running (so none is on
//!    the wire).
//! 3. `Prepare` on every node: each logs its state and held output with its own commit record
//!    and waits for its disk.
//! 4. The coordinator writes N as committed (`cluster.json`, synced), then `Commit N`: nodes
//!    release N's output. A node restarted before step 4 rolls back past its own commit of N.

use std::time::Duration;

use std::sync::Arc;
use tokio::sync::oneshot;

use crate::daemon::{Context, Stream};
use crate::manifest::{ClusterRecord, Manifest};
use crate::proto::{Msg, Recovery, Refusal, RefusalKind, Rejoin, Totals};

/// How long a checkpoint may wait for alignment before the coordinator says what holds it up.
const ALIGN_PATIENCE: Duration = Duration::from_secs(10);

/// How long a node may take to answer a command before it counts as lost.
const ANSWER_PATIENCE: Duration = Duration::from_secs(120);

/// How long `wallaroo stop` waits for nodes to rejoin a recovering cluster.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// What reaches the coordinator: a node's control stream, or a client's stop.
pub(crate) enum Joined {
    Node {
        index: u16,
        deployment: String,
        rejoin: Option<Rejoin>,
        stream: Box<Stream>,
    },
    Stop(oneshot::Sender<Msg>),
}

/// A node's control stream failed: the node is lost.
#[derive(Debug, PartialEq, Eq)]
struct Lost(usize, String);

/// Node `index`, a member, joined again, for `rejoin`: which node is lost, and why. A node
/// leaves when its data stream to another node breaks (that other node is the one lost, e.g.
/// killed), when its control stream fails, or joins afresh after a restart.
fn rejoined(index: usize, rejoin: Option<&Rejoin>, nodes: usize) -> Lost {
    match rejoin {
        Some(Rejoin {
            peer: Some(peer),
            why,
        }) if (*peer as usize) != index && (*peer as usize) < nodes => Lost(
            *peer as usize,
            format!("node {index}'s data stream to it broke: {why}"),
        ),
        Some(Rejoin { why, .. }) => Lost(index, format!("it left and joined again: {why}")),
        None => Lost(index, "it restarted and joined again".into()),
    }
}

pub(crate) struct Coordinator {
    ctx: Arc<Context>,
    manifest: Manifest,
    record: ClusterRecord,
    events: flume::Receiver<Joined>,
    /// Events that arrived while waiting for a node's answer, to be handled first.
    pending: std::collections::VecDeque<Joined>,
    members: Vec<Option<Stream>>,
    next_checkpoint: u64,
    app_name: String,
    /// Rollbacks since the last committed checkpoint: recovery waits longer after each (a
    /// node whose disk is full would otherwise have the cluster roll back in a tight loop).
    rollbacks_in_a_row: u32,
    /// `wallaroo stop` asked while the cluster was recovering: carried out once it runs again.
    stops: Vec<oneshot::Sender<Msg>>,
    stop_asked: Option<std::time::Instant>,
    /// Why the cluster last rolled back, for `wallaroo status` while it recovers.
    last_loss: String,
    /// Since when the cluster recovers (None: it runs).
    recovering_since: Option<std::time::Instant>,
}

impl Coordinator {
    pub(crate) fn new(
        ctx: Arc<Context>,
        manifest: Manifest,
        record: ClusterRecord,
        events: flume::Receiver<Joined>,
    ) -> Self {
        let members = (0..manifest.nodes.len()).map(|_| None).collect();
        Self {
            ctx,
            manifest,
            record,
            events,
            pending: Default::default(),
            members,
            next_checkpoint: 1,
            app_name: String::new(),
            rollbacks_in_a_row: 0,
            stops: Vec::new(),
            stop_asked: None,
            last_loss: String::new(),
            recovering_since: None,
        }
    }

    fn checkpoints(&self) -> bool {
        self.manifest.settings.resilience != "none"
    }

    pub(crate) async fn run(mut self, mut deployed: Option<oneshot::Sender<anyhow::Result<Msg>>>) {
        let interval = Duration::from_millis(self.manifest.settings.checkpoint_interval_ms.max(1));
        let mut running = false;
        let mut started = std::time::Instant::now();
        if deployed.is_none() {
            tracing::info!(
                "coordinating deployment {} again: the cluster rolls back to checkpoint {} once \
                 every node has joined",
                self.manifest.deployment,
                self.record.committed
            );
            self.announce_restart();
        }
        loop {
            if !running {
                if deployed.is_none() {
                    if started.elapsed() > Duration::from_secs(30) {
                        // The last generation ran a while: this is a new failure.
                        self.rollbacks_in_a_row = 0;
                    }
                    let k = self.rollbacks_in_a_row.min(6);
                    self.rollbacks_in_a_row += 1;
                    if k > 0 {
                        tokio::time::sleep(
                            Duration::from_millis(100 << k).min(Duration::from_secs(5)),
                        )
                        .await;
                    }
                }
                match self.recover(deployed.is_some()).await {
                    Ok(sources) => {
                        running = true;
                        started = std::time::Instant::now();
                        if let Some(d) = deployed.take() {
                            let app = self.app_name.clone();
                            let _ = d.send(Ok(Msg::Deployed { app, sources }));
                        }
                        if !self.stops.is_empty() {
                            if self.stop().await {
                                return;
                            }
                            running = false;
                            continue;
                        }
                    }
                    Err(e) => {
                        if let Some(d) = deployed.take() {
                            let _ = d.send(Err(e));
                            // A deployment that never started: forget it here too.
                            self.abandon().await;
                            return;
                        }
                        tracing::warn!("cannot start the application: {e:#}; trying again");
                        if self.stop_waited_too_long() {
                            let why = format!("the application cannot start again: {e:#}");
                            self.answer_stops(Msg::Refused(Refusal::new(
                                RefusalKind::Recovering,
                                why,
                            )));
                        }
                        continue;
                    }
                }
            }
            let tick = tokio::time::sleep(interval);
            tokio::select! {
                event = self.next_event() => match event {
                    Ok(Joined::Node { index, deployment, rejoin, stream }) => {
                        if let Some(Lost(i, why)) = self.admit(index, deployment, rejoin, stream).await {
                            self.lost(i, &why, "");
                            running = false;
                        }
                    }
                    Ok(Joined::Stop(reply)) => {
                        self.take_stop(reply);
                        if self.stop().await {
                            return;
                        }
                        running = false;
                    }
                    Err(_) => return,
                },
                _ = tick, if self.checkpoints() => {
                    if let Err(Lost(i, why)) = self.checkpoint().await {
                        self.lost(i, &why, "");
                        running = false;
                    }
                }
            }
        }
    }

    /// Tells every other node that this coordinator restarted, so that nodes still following
    /// its previous life join again now rather than when their connection times out. A node
    /// that cannot be reached will join when it can.
    fn announce_restart(&self) {
        let announce = Msg::Restarted {
            deployment: self.manifest.deployment.clone(),
            generation: self.record.generation,
        };
        for addr in self.manifest.nodes.iter().skip(1) {
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

    /// Takes a node's control stream. If the node was thought to be running, the cluster must
    /// roll back: returns the node lost and why.
    async fn admit(
        &mut self,
        index: u16,
        deployment: String,
        rejoin: Option<Rejoin>,
        stream: Box<Stream>,
    ) -> Option<Lost> {
        if !self.belongs(index, &deployment) {
            self.refuse(index, &deployment, stream).await;
            return None;
        }
        let was_member = self.members[index as usize].replace(*stream).is_some();
        (was_member || self.members.iter().all(Option::is_some))
            .then(|| rejoined(index as usize, rejoin.as_ref(), self.members.len()))
    }

    /// Node `i` is lost (`why`) `during` a step ("" while running): the cluster rolls back.
    fn lost(&mut self, i: usize, why: &str, during: &str) {
        tracing::warn!(
            node = i,
            "node {i} ({}) lost{during} ({why}): rolling the cluster back to checkpoint {}",
            self.manifest.nodes[i],
            self.record.committed
        );
        self.last_loss = format!("node {i} lost{during}: {why}");
        self.members[i] = None;
    }

    /// Publishes what recovery waits for (None: the cluster runs), for `wallaroo status`.
    fn publish_recovery(&self, since: Option<std::time::Instant>) {
        let recovery = since.map(|since| {
            (
                since,
                Recovery {
                    waited_ms: 0,
                    missing: self.missing(),
                    checkpoint: self.record.committed,
                    reason: self.last_loss.clone(),
                },
            )
        });
        *self.ctx.recovery.lock().unwrap() = recovery;
    }

    /// A join from node `index` of `deployment` is one of this deployment's nodes.
    fn belongs(&self, index: u16, deployment: &str) -> bool {
        deployment == self.manifest.deployment && (index as usize) < self.members.len()
    }

    /// Tells a node of another deployment (one a failed stop left behind) that this is not
    /// its cluster.
    async fn refuse(&self, index: u16, deployment: &str, mut stream: Box<Stream>) {
        let _ = stream
            .0
            .send(&Msg::Refused(Refusal::new(
                RefusalKind::WrongDeployment,
                format!(
                    "this cluster runs deployment {}, not {deployment} (node {index})",
                    self.manifest.deployment
                ),
            )))
            .await;
    }

    fn missing(&self) -> Vec<String> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_none())
            .map(|(i, _)| format!("node {i} ({})", self.manifest.nodes[i]))
            .collect()
    }

    /// Stops the application everywhere, waits for every node, and starts the next
    /// generation from the last committed checkpoint. Returns where sources listen.
    async fn recover(&mut self, first_deploy: bool) -> anyhow::Result<Vec<String>> {
        if !self.stops.is_empty() {
            // A stop waits for the nodes to rejoin from now, however long it waited before.
            self.stop_asked = Some(std::time::Instant::now());
        }
        if !first_deploy {
            // Every generation runs on fresh control streams: closing the old ones stops the
            // application on every node, and no answer to an earlier command is left unread.
            for m in &mut self.members {
                *m = None;
            }
        }
        let waited = std::time::Instant::now();
        let since = *self.recovering_since.get_or_insert(waited);
        let mut told = std::time::Instant::now();
        while self.members.iter().any(Option::is_none) {
            self.publish_recovery(Some(since));
            if first_deploy && waited.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("{} did not join within 60 s", self.missing().join(", "));
            }
            if self.stop_waited_too_long() {
                let why = format!(
                    "the cluster is recovering and {} did not join within {} s; start the \
                     missing nodes (their data directories hold the deployment) and stop again",
                    self.missing().join(", "),
                    STOP_PATIENCE.as_secs()
                );
                self.answer_stops(Msg::Refused(Refusal::new(RefusalKind::Recovering, why)));
            }
            if told.elapsed() > Duration::from_secs(10) {
                tracing::info!("waiting for {} to join", self.missing().join(", "));
                told = std::time::Instant::now();
            }
            match tokio::time::timeout(Duration::from_millis(500), self.next_event()).await {
                Ok(Ok(Joined::Node {
                    index,
                    deployment,
                    rejoin,
                    stream,
                })) => {
                    self.admit(index, deployment, rejoin, stream).await;
                }
                Ok(Ok(Joined::Stop(reply))) => {
                    // Nodes that lost the application rejoin within seconds: the stop
                    // waits for them, and for the application to run again everywhere.
                    tracing::info!(
                        "stop asked while {} rejoin: stopping once the cluster has recovered",
                        self.missing().join(", ")
                    );
                    self.take_stop(reply);
                }
                Ok(Err(_)) => anyhow::bail!("the node is stopping"),
                Err(_) => {}
            }
        }
        self.record.generation += 1;
        let record = self.record;
        let data = self.ctx.data.clone();
        tokio::task::spawn_blocking(move || data.write_cluster_record(&record)).await??;
        let generation = self.record.generation;
        let recover_to = self.record.committed;
        let replies = self
            .all(|_| Msg::Start {
                generation,
                recover_to,
            })
            .await;
        let replies = match replies {
            Ok(r) => r,
            Err(Lost(i, why)) => {
                self.members[i] = None;
                self.last_loss = format!("node {i} lost while starting: {why}");
                anyhow::bail!("node {i} lost while starting: {why}");
            }
        };
        let mut sources = Vec::new();
        let mut next = self.record.committed + 1;
        for (i, reply) in replies.into_iter().enumerate() {
            match reply {
                Msg::Started {
                    app,
                    next_checkpoint,
                    sources: at,
                } => {
                    self.app_name = app;
                    next = next.max(next_checkpoint);
                    sources.extend(at.into_iter().map(|s| format!("node {i}: {s}")));
                }
                Msg::Refused(why) => return Err(why.into()),
                other => anyhow::bail!("node {i}: unexpected answer {}", other.name()),
            }
        }
        self.next_checkpoint = next;
        self.recovering_since = None;
        self.publish_recovery(None);
        if !first_deploy {
            tracing::info!(
                generation,
                checkpoint = self.record.committed,
                "generation {generation} running from checkpoint {}",
                self.record.committed
            );
        }
        Ok(sources)
    }

    /// One cluster-wide checkpoint (see the module's documentation).
    async fn checkpoint(&mut self) -> Result<(), Lost> {
        let n = self.next_checkpoint;
        self.next_checkpoint += 1;
        // A node that cannot take part (its log failed: a full disk) holds the cluster back
        // like a lost node: the cluster rolls back and tries again, and loses nothing.
        for (i, reply) in self
            .all(|_| Msg::Begin { checkpoint: n })
            .await?
            .into_iter()
            .enumerate()
        {
            if let Msg::Refused(why) = reply {
                return Err(Lost(i, format!("it cannot begin checkpoint {n}: {why}")));
            }
        }
        let mut last = None;
        let began = std::time::Instant::now();
        let mut told = began;
        loop {
            let replies = self.all(|_| Msg::Align).await?;
            let (mut aligned, mut sent, mut received) = (true, 0, 0);
            let mut behind = Vec::new();
            for (i, reply) in replies.into_iter().enumerate() {
                match reply {
                    Msg::Aligned(a) => {
                        if !a.aligned || a.routed_in_flight > 0 {
                            behind.push(format!(
                                "node {i} ({} routed batches queued{})",
                                a.routed_in_flight,
                                if a.aligned {
                                    ""
                                } else {
                                    ", workers not at the barrier"
                                }
                            ));
                        }
                        aligned &= a.aligned && a.routed_in_flight == 0;
                        sent = a.sent.saturating_add(sent);
                        received = a.received.saturating_add(received);
                    }
                    other => {
                        return Err(Lost(i, format!("it answered Align with {}", other.name())));
                    }
                }
            }
            let now = (sent, received);
            if aligned && sent == received && last == Some(now) {
                break;
            }
            last = aligned.then_some(now);
            // Alignment waits for the work queued before the barrier; say what it waits for
            // when that takes long (a slow guest, a slow link).
            if told.elapsed() > ALIGN_PATIENCE {
                told = std::time::Instant::now();
                if behind.is_empty() {
                    behind.push(format!(
                        "{} routed batches on the wire",
                        sent.abs_diff(received)
                    ));
                }
                tracing::warn!(
                    "checkpoint {n} still aligning after {} s: waiting for {}",
                    began.elapsed().as_secs(),
                    behind.join(", ")
                );
            }
        }
        for (i, reply) in self.all(|_| Msg::Prepare).await?.into_iter().enumerate() {
            if !matches!(reply, Msg::Prepared(true)) {
                return Err(Lost(i, format!("it could not log checkpoint {n}")));
            }
        }
        let mut record = self.record;
        record.committed = n;
        let data = self.ctx.data.clone();
        let written = tokio::task::spawn_blocking(move || data.write_cluster_record(&record))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        if let Err(e) = written {
            return Err(Lost(0, format!("cannot record checkpoint {n}: {e:#}")));
        }
        self.record = record;
        self.all(|_| Msg::Commit { checkpoint: n }).await?;
        self.rollbacks_in_a_row = 0;
        Ok(())
    }

    /// `wallaroo stop`: stop the sources, wait until everything accepted is processed
    /// everywhere, take a last checkpoint, then stop the application on every node, and answer
    /// every stop asked. False if a node was lost before the application stopped anywhere:
    /// the cluster then recovers, and the stop is tried again once it runs.
    async fn stop(&mut self) -> bool {
        let answer = match self.drain_and_stop().await {
            Err(Lost(i, why)) => {
                self.lost(i, &why, " while stopping");
                tracing::info!("the stop follows once it runs again");
                return false;
            }
            Ok(Ok(totals)) => {
                let mut text = Vec::new();
                for (i, t) in totals.iter().enumerate() {
                    text.push(format!(
                        "node {i}: {} received, {} emitted, {} dead-lettered, {} messages to \
                         other nodes in {} bytes",
                        t.received, t.emitted, t.dead_lettered, t.remote_messages, t.remote_bytes
                    ));
                }
                Msg::Deployed {
                    app: self.app_name.clone(),
                    sources: text,
                }
            }
            Ok(Err(e)) => Msg::Refused(Refusal::from_error(RefusalKind::Failed, &e)),
        };
        // Stops asked while this one ran were put aside: they get the same answer.
        let events = std::mem::take(&mut self.pending);
        for event in events {
            match event {
                Joined::Stop(reply) => self.stops.push(reply),
                other => self.pending.push_back(other),
            }
        }
        self.answer_stops(answer);
        true
    }

    /// Keeps a stop's reply until the stop is carried out (or refused).
    fn take_stop(&mut self, reply: oneshot::Sender<Msg>) {
        self.stops.push(reply);
        self.stop_asked.get_or_insert_with(std::time::Instant::now);
    }

    /// A stop asked during recovery has waited longer than [`STOP_PATIENCE`].
    fn stop_waited_too_long(&self) -> bool {
        self.stop_asked
            .is_some_and(|at| at.elapsed() > STOP_PATIENCE)
    }

    /// Answers every stop asked so far.
    fn answer_stops(&mut self, answer: Msg) {
        for reply in self.stops.drain(..) {
            let _ = reply.send(answer.clone());
        }
        self.stop_asked = None;
    }

    /// The steps of a stop. Losing a node before the last step is `Err` (the cluster can
    /// recover and stop again); failing in the last step, when some nodes may have stopped
    /// already, is final.
    async fn drain_and_stop(&mut self) -> Result<anyhow::Result<Vec<Totals>>, Lost> {
        self.all(|_| Msg::StopSources).await?;
        let mut last = None;
        loop {
            let mut idle = true;
            let (mut sent, mut received) = (0, 0);
            for reply in self.all(|_| Msg::Drain).await? {
                if let Msg::Drained {
                    in_flight,
                    sent: s,
                    received: r,
                } = reply
                {
                    idle &= in_flight == 0;
                    sent = s.saturating_add(sent);
                    received = r.saturating_add(received);
                }
            }
            let now = (sent, received);
            if idle && sent == received && last == Some(now) {
                break;
            }
            last = idle.then_some(now);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.checkpoints() {
            self.checkpoint().await?;
        }
        let replies = match self.all(|_| Msg::Shutdown).await {
            Ok(replies) => replies,
            Err(Lost(i, why)) => {
                return Ok(Err(anyhow::anyhow!(
                    "node {i} lost while stopping: {why}; restart it (its data directory holds \
                     the deployment) and stop again"
                )));
            }
        };
        let mut totals = Vec::new();
        for reply in replies {
            match reply {
                Msg::Stopped(t) => totals.push(t),
                other => return Ok(Err(anyhow::anyhow!("unexpected answer {}", other.name()))),
            }
        }
        Ok(Ok(totals))
    }

    /// A deployment that could not start: tell every node to forget it.
    async fn abandon(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].is_some() {
                let _ = self.ask(i, &Msg::Shutdown).await;
            }
        }
    }

    /// Sends `msg(i)` to every node, then collects every answer.
    async fn all(&mut self, msg: impl Fn(usize) -> Msg) -> Result<Vec<Msg>, Lost> {
        for i in 0..self.members.len() {
            let m = msg(i);
            let Some((tx, _)) = self.members[i].as_mut() else {
                return Err(Lost(i, "not joined".into()));
            };
            tx.send(&m).await.map_err(|e| Lost(i, format!("{e:#}")))?;
        }
        let mut replies = Vec::with_capacity(self.members.len());
        for i in 0..self.members.len() {
            replies.push(self.answer(i).await?);
        }
        Ok(replies)
    }

    async fn ask(&mut self, i: usize, msg: &Msg) -> Result<Msg, Lost> {
        let Some((tx, _)) = self.members[i].as_mut() else {
            return Err(Lost(i, "not joined".into()));
        };
        tx.send(msg).await.map_err(|e| Lost(i, format!("{e:#}")))?;
        self.answer(i).await
    }

    /// Node `i`'s answer to the last command. A member that joins again meanwhile has
    /// restarted: waiting for anyone's answer is then pointless, the cluster rolls back.
    async fn answer(&mut self, i: usize) -> Result<Msg, Lost> {
        let deadline = tokio::time::Instant::now() + ANSWER_PATIENCE;
        loop {
            let Some((_, rx)) = self.members[i].as_mut() else {
                return Err(Lost(i, "not joined".into()));
            };
            let event = tokio::select! {
                answer = tokio::time::timeout_at(deadline, rx.recv()) => {
                    return match answer {
                        Ok(Ok(Some(m))) => Ok(m),
                        Ok(Ok(None)) => Err(Lost(i, "control stream closed".into())),
                        Ok(Err(e)) => Err(Lost(i, format!("{e:#}"))),
                        Err(_) => Err(Lost(i, format!("no answer in {} s", ANSWER_PATIENCE.as_secs()))),
                    };
                }
                event = self.events.recv_async() => event,
            };
            let Ok(event) = event else {
                return Err(Lost(i, "the node is stopping".into()));
            };
            let event = match event {
                Joined::Node {
                    index,
                    deployment,
                    stream,
                    ..
                } if !self.belongs(index, &deployment) => {
                    self.refuse(index, &deployment, stream).await;
                    continue;
                }
                event => event,
            };
            let restarted = match &event {
                Joined::Node { index, rejoin, .. } => self
                    .members
                    .get(*index as usize)
                    .is_some_and(Option::is_some)
                    .then(|| rejoined(*index as usize, rejoin.as_ref(), self.members.len())),
                Joined::Stop(_) => None,
            };
            self.pending.push_back(event);
            if let Some(lost) = restarted {
                return Err(lost);
            }
        }
    }

    /// The next event: one put aside while waiting for an answer, or a new one.
    async fn next_event(&mut self) -> Result<Joined, flume::RecvError> {
        match self.pending.pop_front() {
            Some(event) => Ok(event),
            None => self.events.recv_async().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_left_because_its_link_to_another_broke_names_the_other_as_lost() {
        let link = Rejoin {
            peer: Some(1),
            why: "the connection to 10.0.0.3:7100 closed (timed out)".into(),
        };
        assert_eq!(
            rejoined(0, Some(&link), 3),
            Lost(
                1,
                "node 0's data stream to it broke: the connection to 10.0.0.3:7100 closed \
                 (timed out)"
                    .into()
            )
        );
        let control = Rejoin {
            peer: None,
            why: "the coordinator closed the control stream".into(),
        };
        assert_eq!(rejoined(2, Some(&control), 3).0, 2);
        assert!(
            rejoined(2, Some(&control), 3)
                .1
                .starts_with("it left and joined again")
        );
        assert_eq!(
            rejoined(2, None, 3),
            Lost(2, "it restarted and joined again".into())
        );
        // A peer index out of range names the node that joined.
        let odd = Rejoin {
            peer: Some(7),
            why: "x".into(),
        };
        assert_eq!(rejoined(2, Some(&odd), 3).0, 2);
    }
}
