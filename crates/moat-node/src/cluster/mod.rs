//! Several nodes, one fleet: how a node shares its registry changes with the others.
//!
//! Every domain event a node emits is appended to the cluster's event log in the shared
//! PostgreSQL registry (`cluster_events`, one sequence for the whole cluster, appends commit
//! in sequence order), then announced on NATS (`{prefix}.events`). Every node applies the
//! other nodes' events in sequence order through [`Hub::apply_remote`]: its caches forget
//! what changed and its followers act (sessions of a revoked device close, the client
//! verifier refuses the certificate). NATS is the fast path; the log is the record:
//!
//! ```text
//!  node A: registry commit ─▶ Hub::emit ─▶ Relay ─▶ append to cluster_events (seq n)
//!                                                 └▶ NATS {prefix}.events {first: n, events}
//!  node B: NATS message ─┬─ seq n = applied + 1 ─▶ Hub::apply_remote, applied = n
//!                        └─ a gap ─▶ read cluster_events after `applied` ─▶ apply in order
//!          every catch_up_interval: read cluster_events after `applied` (NATS lost it)
//! ```
//!
//! So a change made on any node is applied everywhere within milliseconds while NATS is up,
//! and within `catch_up_interval` while it is not. A node that finds the log pruned past
//! what it has applied, cannot decode an event, or sees another node restart (which may
//! have died between a registry commit and its append) resynchronises in full
//! ([`Hub::resynchronise`]): caches dropped, the client verifier reloaded, every live
//! session checked again against the registry.

mod fabric;
mod subjects;

pub use fabric::FabricCounts;

use crate::config::ClusterConfig;
use crate::error::{Context, Error};
use moat_core::{Event, Hub, NodeStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// The lease whose holder runs the work one node does at a time.
pub const LEADER_LEASE: &str = "leader";

/// Events read from the log per query while catching up.
const CATCH_UP_PAGE: u32 = 500;
/// Events appended to the log in one transaction at most.
const APPEND_BATCH: usize = 256;

/// What a node announces on NATS after appending a batch to the log.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// The emitting node.
    node: String,
    /// Seq of the first event.
    first: u64,
    /// The events, in order.
    events: Vec<Event>,
}

/// This node's membership of a cluster.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    started_at: OffsetDateTime,
    cfg: ClusterSettings,
    nats: async_nats::Client,
    nats_ok: Arc<AtomicBool>,
    /// The last seq of the log this node has applied (its own events included).
    applied: AtomicU64,
    /// Rings when the receiver should read the log now.
    wake: Notify,
    /// The MQTT message fabric's counters.
    fabric: Arc<FabricCounts>,
    /// Rings when the NATS connection is (re)established.
    reconnected: Arc<Notify>,
}

#[derive(Debug, Clone)]
struct ClusterSettings {
    prefix: String,
    subject: String,
    catch_up_interval: Duration,
    event_retention: Duration,
    heartbeat_interval: Duration,
}

/// The [`moat_core::Relay`] of a cluster node: hands events to the appender task.
#[derive(Debug)]
struct LogRelay {
    tx: mpsc::UnboundedSender<Event>,
}

impl moat_core::Relay for LogRelay {
    fn relay(&self, event: &Event) {
        // Unbounded: events come from registry writes, which the registry paces; a full
        // channel would have to drop one, and a dropped event is a missed revocation.
        if self.tx.send(event.clone()).is_err() {
            tracing::error!(?event, "the cluster appender has stopped; event not shared");
        }
    }
}

/// What a node tells its caller about the cluster (metrics, readiness, status).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// Whether it is connected to NATS.
    pub nats_connected: bool,
    /// The last event of the cluster's log it has applied.
    pub applied_seq: u64,
}

impl Cluster {
    /// Joins the cluster `cfg` describes as `name`: connects to NATS (in the background: a
    /// node starts, and serves its own devices, while NATS is unreachable), makes `hub`
    /// relay its events, and notes where the log stands so nothing committed from now on
    /// is missed. Call before the node loads anything it caches from the registry.
    pub async fn join(
        cfg: &ClusterConfig,
        name: String,
        hub: &Arc<Hub>,
    ) -> crate::Result<Arc<Self>> {
        if name.is_empty() {
            return Err(Error::Config(
                "this machine has no host name to name the cluster node: set [cluster] node".into(),
            ));
        }
        let nats_ok = Arc::new(AtomicBool::new(false));
        let mut opts = match &cfg.nats_credentials {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .with_context(|| {
                    format!("cannot read cluster.nats_credentials {}", path.display())
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(ca) = &cfg.nats_tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        let flag = nats_ok.clone();
        let who = name.clone();
        let fabric = Arc::new(FabricCounts::default());
        let counts = fabric.clone();
        let reconnected = Arc::new(Notify::new());
        let on_reconnect = reconnected.clone();
        let warned = Arc::new(AtomicU64::new(0));
        opts = opts
            .name(format!("moat-{name}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * attempts as u64).min(2_000))
            })
            .event_callback(move |ev| {
                let flag = flag.clone();
                let who = who.clone();
                let counts = counts.clone();
                let warned = warned.clone();
                let on_reconnect = on_reconnect.clone();
                async move {
                    match ev {
                        async_nats::Event::Connected => {
                            flag.store(true, Ordering::Release);
                            tracing::info!(node = %who, "connected to NATS");
                            on_reconnect.notify_one();
                        }
                        async_nats::Event::Disconnected => {
                            flag.store(false, Ordering::Release);
                            tracing::warn!(node = %who, "NATS connection lost; cross-node events come from the registry's log until it is back");
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            // One per dropped message: counted, and said at most once a minute.
                            let n = counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_secs());
                            let last = warned.load(Ordering::Relaxed);
                            if now >= last + 60
                                && warned
                                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                                    .is_ok()
                            {
                                tracing::warn!(node = %who, dropped_so_far = n, "messages from other nodes arrive faster than this node takes them; dropping (moat_cluster_messages_total{{outcome=\"dropped\"}})");
                            }
                        }
                        other => tracing::debug!(event = %other, "NATS"),
                    }
                }
            });
        let addrs = cfg
            .nats
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("cluster.nats: {e}")))?;
        let nats = opts
            .connect(addrs)
            .await
            .map_err(|e| Error::Config(format!("cannot start the NATS client: {e}")))?;
        let applied = hub
            .cluster_log_head()
            .await
            .context("cannot read the cluster's event log")?;
        // Not leading until the first heartbeat takes the lease.
        hub.set_leader(false);
        if cfg.admission_view {
            hub.keep_admission_view();
        }
        let cluster = Arc::new(Cluster {
            name,
            started_at: OffsetDateTime::now_utc(),
            cfg: ClusterSettings {
                prefix: cfg.subject_prefix.clone(),
                subject: format!("{}.events", cfg.subject_prefix),
                catch_up_interval: cfg.catch_up_interval,
                event_retention: cfg.event_retention,
                heartbeat_interval: cfg.heartbeat_interval,
            },
            nats,
            nats_ok,
            applied: AtomicU64::new(applied),
            wake: Notify::new(),
            fabric,
            reconnected,
        });
        Ok(cluster)
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How often the node records itself (and renews the leader lease when it holds it).
    pub fn heartbeat_interval(&self) -> Duration {
        self.cfg.heartbeat_interval
    }

    /// Where the node stands.
    pub fn view(&self) -> ClusterView {
        ClusterView {
            node: self.name.clone(),
            nats_connected: self.nats_ok.load(Ordering::Acquire),
            applied_seq: self.applied.load(Ordering::Acquire),
        }
    }

    /// The MQTT message fabric's counters.
    pub fn fabric_counts(&self) -> &FabricCounts {
        &self.fabric
    }

    /// Starts the node's cluster tasks: the appender (this node's events into the log and
    /// onto NATS), the receiver (the others' events, from NATS and the log), the heartbeat,
    /// and the MQTT message fabric that joins `broker` to the other nodes' brokers. `mqtt`
    /// and `api` are the node's addresses as `moat cluster status` shows them.
    pub(crate) async fn start(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        broker: &Arc<moat_broker::Broker>,
        persistence: Arc<crate::mqtt::RegistryPersistence>,
        addresses: (String, String),
        shutdown: CancellationToken,
    ) -> crate::Result<Vec<tokio::task::JoinHandle<()>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        hub.set_relay(Arc::new(LogRelay { tx }))?;
        let sessions = broker.clone();
        let sessions: Arc<dyn Fn() -> u64 + Send + Sync> =
            Arc::new(move || sessions.sessions().len() as u64);
        let mut tasks = vec![
            tokio::spawn(self.clone().append(hub.clone(), rx, shutdown.clone())),
            tokio::spawn(self.clone().receive(hub.clone(), shutdown.clone())),
            tokio::spawn(
                self.clone()
                    .heartbeat(hub, sessions, addresses, shutdown.clone()),
            ),
        ];
        tasks.push(tokio::spawn(Self::after_reconnections(
            self.reconnected.clone(),
            broker.clone(),
            self.clone(),
            shutdown.clone(),
        )));
        tasks.extend(
            fabric::start(
                broker,
                self.nats.clone(),
                self.cfg.prefix.clone(),
                self.name.clone(),
                persistence,
                self.fabric.clone(),
                shutdown,
            )
            .await,
        );
        Ok(tasks)
    }

    /// This node's events → the log → NATS, in order, batched. A failed append is retried
    /// (the registry may be restarting); the events wait in memory meanwhile.
    async fn append(
        self: Arc<Self>,
        hub: Arc<Hub>,
        mut rx: mpsc::UnboundedReceiver<Event>,
        shutdown: CancellationToken,
    ) {
        let mut batch: Vec<Event> = Vec::new();
        loop {
            if batch.is_empty() {
                tokio::select! {
                    // Events emitted before shutdown are still appended: drain first.
                    biased;
                    ev = rx.recv() => match ev {
                        Some(ev) => batch.push(ev),
                        None => return,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
            while batch.len() < APPEND_BATCH {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            let texts: Result<Vec<String>, _> = batch.iter().map(serde_json::to_string).collect();
            let texts = match texts {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode an event for the cluster; dropped");
                    batch.clear();
                    continue;
                }
            };
            let mut delay = Duration::from_millis(50);
            let first = loop {
                match hub.append_cluster_events(&self.name, &texts).await {
                    Ok(first) => break first,
                    Err(e) => {
                        tracing::error!(error = %e, events = texts.len(), "cannot append to the cluster's event log; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.cancelled() => return,
                        }
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            };
            let announcement = Announcement {
                node: self.name.clone(),
                first,
                events: std::mem::take(&mut batch),
            };
            match serde_json::to_vec(&announcement) {
                // NATS buffers while disconnected; the other nodes read the log anyway.
                Ok(body) => {
                    if let Err(e) = self
                        .nats
                        .publish(self.cfg.subject.clone(), body.into())
                        .await
                    {
                        tracing::warn!(error = %e, "cannot announce events on NATS; the other nodes will read them from the log");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode an announcement"),
            }
        }
    }

    /// The other nodes' events, applied in log order: from NATS when they follow on, from
    /// the log after a gap and every `catch_up_interval`.
    async fn receive(self: Arc<Self>, hub: Arc<Hub>, shutdown: CancellationToken) {
        let mut sub = None;
        let mut tick = tokio::time::interval(self.cfg.catch_up_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if sub.is_none() {
                match self.nats.subscribe(self.cfg.subject.clone()).await {
                    Ok(s) => sub = Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to the cluster's events on NATS")
                    }
                }
            }
            let next = async {
                match sub.as_mut() {
                    Some(s) => futures_util::StreamExt::next(s).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = next => match msg {
                    Some(msg) => {
                        if self.apply_announcement(&hub, &msg.payload) {
                            continue;
                        }
                    }
                    None => sub = None,
                },
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            self.catch_up(&hub).await;
        }
    }

    /// Applies an announcement that follows on from what this node applied; false when it
    /// does not (a gap, or undecodable: read the log instead).
    fn apply_announcement(&self, hub: &Hub, payload: &[u8]) -> bool {
        let a: Announcement = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable cluster announcement; reading the log");
                return false;
            }
        };
        let applied = self.applied.load(Ordering::Acquire);
        let last = a.first + a.events.len() as u64 - 1;
        if a.events.is_empty() || last <= applied {
            return true;
        }
        if a.first > applied + 1 {
            return false;
        }
        for (i, ev) in a.events.into_iter().enumerate() {
            let seq = a.first + i as u64;
            if seq > applied && a.node != self.name {
                hub.apply_remote(ev);
            }
        }
        self.applied.store(last, Ordering::Release);
        true
    }

    /// Reads the log after what this node applied and applies it.
    async fn catch_up(&self, hub: &Hub) {
        loop {
            let applied = self.applied.load(Ordering::Acquire);
            let page = match hub.cluster_events_after(applied, CATCH_UP_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster's event log");
                    return;
                }
            };
            let Some(first) = page.first() else { return };
            if first.seq != applied + 1 {
                // Pruned past us: what we missed is no longer listed.
                let missed = first.seq - applied - 1;
                tracing::warn!(
                    missed,
                    "the cluster's event log no longer has events this node missed"
                );
                hub.resynchronise(missed);
            }
            let full = page.len() == CATCH_UP_PAGE as usize;
            let mut undecodable = 0;
            for e in &page {
                if e.node != self.name {
                    match serde_json::from_str::<Event>(&e.event) {
                        Ok(ev) => hub.apply_remote(ev),
                        Err(err) => {
                            tracing::warn!(seq = e.seq, error = %err, "cannot decode a cluster event (a newer node's?)");
                            undecodable += 1;
                        }
                    }
                }
                self.applied.store(e.seq, Ordering::Release);
            }
            if undecodable > 0 {
                hub.resynchronise(undecodable);
            }
            if !full {
                return;
            }
        }
    }

    /// Records this node's status every `heartbeat_interval`, prunes the log, and
    /// resynchronises when another node restarted or went silent: it may have committed a
    /// change and died before appending the event.
    async fn heartbeat(
        self: Arc<Self>,
        hub: Arc<Hub>,
        sessions: Arc<dyn Fn() -> u64 + Send + Sync>,
        (mqtt, api): (String, String),
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut peers: BTreeMap<String, (OffsetDateTime, bool)> = BTreeMap::new();
        let mut first = true;
        let mut last_prune = std::time::Instant::now() - Duration::from_secs(3600);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // The leader lease: held while this node renews it every heartbeat; taken by
            // another node three heartbeats after this one stops.
            let leader = match hub
                .acquire_cluster_lease(LEADER_LEASE, &self.name, self.cfg.heartbeat_interval * 3)
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader lease; not leading");
                    false
                }
            };
            if leader != hub.is_leader() {
                tracing::info!(node = %self.name, leader, "cluster leadership changed");
            }
            hub.set_leader(leader);
            let now = OffsetDateTime::now_utc();
            let status = NodeStatus {
                name: self.name.clone(),
                started_at: self.started_at,
                heartbeat_at: now,
                heartbeat_interval: self.cfg.heartbeat_interval,
                sessions: sessions(),
                applied_seq: self.applied.load(Ordering::Acquire),
                nats_ok: self.nats_ok.load(Ordering::Acquire),
                mqtt: mqtt.clone(),
                api: api.clone(),
            };
            if let Err(e) = hub.record_cluster_node(&status).await {
                tracing::warn!(error = %e, "cannot record this node's cluster status");
                continue;
            }
            let nodes = match hub.cluster_nodes().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster's nodes");
                    continue;
                }
            };
            let mut resync = false;
            for n in nodes.iter().filter(|n| n.name != self.name) {
                let alive = n.alive(now);
                match peers.insert(n.name.clone(), (n.started_at, alive)) {
                    Some((started, _)) if started != n.started_at => {
                        tracing::info!(node = %n.name, "another node restarted");
                        resync = true;
                    }
                    Some((_, true)) if !alive => {
                        tracing::warn!(node = %n.name, "another node went silent");
                        resync = true;
                    }
                    _ => {}
                }
            }
            if resync && !first {
                hub.resynchronise(0);
            }
            first = false;
            if last_prune.elapsed() >= Duration::from_secs(3600) {
                last_prune = std::time::Instant::now();
                let before = now - self.cfg.event_retention;
                match hub.prune_cluster_events(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "pruned the cluster's event log"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune the cluster's event log"),
                }
            }
        }
    }

    /// After NATS comes back: what was retained elsewhere meanwhile is read from the
    /// registry (retained messages travel on NATS; the registry holds them all), and the
    /// event log is read at once.
    async fn after_reconnections(
        reconnected: Arc<Notify>,
        broker: Arc<moat_broker::Broker>,
        cluster: Arc<Self>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = reconnected.notified() => {}
            }
            if let Err(e) = broker.reload_retained().await {
                tracing::warn!(error = ?e, "cannot reload retained messages after NATS came back");
            }
            cluster.catch_up_now();
        }
    }

    /// Reads the log now (tests, and after a reconnection).
    pub fn catch_up_now(&self) {
        self.wake.notify_one();
    }
}
