//! The broker: shared state (sessions, subscription tree, retained messages, pending wills)
//! and the operations the hub calls (kicks, session listing, publishing, persistence).

use crate::codec::Version;
use crate::error::reason;
use crate::persistence::{Change, Delivery, Durability, MemoryPersistence, Message, Persistence};
use crate::retained::Retained;
use crate::router::Router;
use crate::session::{Enqueued, Link, Session, SessionState};
use crate::topic::parse_subscription;
use crate::{Authority, BrokerConfig, Error, Interceptor, Refusal};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a session shows of itself while it has a connection.
fn session_info(client_id: &str, st: &crate::session::SessionState) -> Option<SessionInfo> {
    st.link.as_ref().map(|l| SessionInfo {
        client_id: client_id.to_string(),
        identity: l.identity.clone(),
        mode: l.mode,
        peer: l.peer,
        protocol_version: l.version.level(),
        connected_at: l.connected_at,
        queued_messages: st.queue.len(),
        queued_bytes: st.queued_bytes,
        inflight: st.inflight.len(),
    })
}

/// One live session, for `moat session list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Client identifier.
    pub client_id: String,
    /// Authenticated identity.
    pub identity: String,
    /// `mtls`, `tls` or `plain`.
    pub mode: &'static str,
    /// Peer address.
    pub peer: SocketAddr,
    /// 4 (3.1.1) or 5.
    pub protocol_version: u8,
    /// When the connection was accepted by CONNACK.
    pub connected_at: SystemTime,
    /// Messages waiting beyond the in-flight window.
    pub queued_messages: usize,
    /// Their topic and payload bytes (bounded by `max_queued_bytes`).
    pub queued_bytes: usize,
    /// Messages sent and not yet acknowledged.
    pub inflight: usize,
}

/// What routing one message did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Routed {
    /// Sessions it was queued for.
    pub queued: usize,
    /// Subscribers that wanted it at QoS 1/2 but whose queue was full (not queued for them).
    pub full: usize,
    /// It changed durable state (queued for a persistent session, retained).
    pub durable: bool,
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed (bad or refused client certificate, protocol error).
    pub tls_handshake_failures: u64,
    /// TLS handshakes that did not finish in time.
    pub tls_handshake_timeouts: u64,
    /// TLS handshakes that waited for a handshake slot (pacing at work).
    pub tls_handshakes_paced: u64,
    /// CONNECTs accepted.
    pub connects_accepted: u64,
    /// CONNECTs refused.
    pub connects_refused: u64,
    /// PUBLISH packets received.
    pub messages_received: u64,
    /// PUBLISH packets sent.
    pub messages_sent: u64,
    /// Messages dropped by queue policy, expiry or the client's maximum packet size.
    pub messages_dropped: u64,
    /// Publishes refused by ACL.
    pub publishes_denied: u64,
    /// Times a publisher's reads paused for a congested subscriber.
    pub publisher_pauses: u64,
    /// Times a subscriber was marked stalled (it did not drain within the pause bound).
    pub subscribers_stalled: u64,
    /// Messages a hub tap ([`Broker::tap`]) could not take because its queue was full.
    pub taps_dropped: u64,
    /// Messages an interceptor ([`Broker::intercept`]) routed.
    pub intercepted_routed: u64,
    /// Messages an interceptor refused (or did not decide about in time).
    pub intercepted_refused: u64,
    /// PUBLISH packets and wills whose reserved user properties
    /// ([`BrokerConfig::reserved_user_properties`]) were stripped.
    pub reserved_properties_stripped: u64,
    /// QoS 1/2 messages refused because durable state could not be written.
    pub messages_refused_storage: u64,
    /// Batches of durable state written (each one transaction: one fsync on SQLite).
    pub state_batches_written: u64,
    /// Changes of durable state written (queued messages, their acknowledgements, sessions,
    /// retained messages), over all batches.
    pub state_changes_written: u64,
    /// Sessions (live and offline persistent).
    pub sessions: u64,
    /// Subscriptions in the tree.
    pub subscriptions: u64,
    /// Retained topics.
    pub retained: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub connections_accepted: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub tls_handshake_timeouts: AtomicU64,
    pub tls_handshakes_paced: AtomicU64,
    pub connects_accepted: AtomicU64,
    pub connects_refused: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_dropped: AtomicU64,
    pub publishes_denied: AtomicU64,
    pub publisher_pauses: AtomicU64,
    pub subscribers_stalled: AtomicU64,
    pub taps_dropped: AtomicU64,
    pub intercepted_routed: AtomicU64,
    pub intercepted_refused: AtomicU64,
    pub reserved_properties_stripped: AtomicU64,
    pub messages_refused_storage: AtomicU64,
    pub state_batches_written: AtomicU64,
    pub state_changes_written: AtomicU64,
}

/// A hub-internal subscriber ([`Broker::tap`]): a filter and the queue its messages go to.
#[derive(Debug)]
struct Tap {
    filter: String,
    queue: tokio::sync::mpsc::Sender<Arc<Message>>,
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A will waiting for its delay (or for the session to end).
#[derive(Debug)]
struct PendingWill {
    deadline: Instant,
    client_id: String,
    generation: u64,
    message: Message,
}

/// What [`Broker::attach`] hands the connection.
#[derive(Debug)]
pub(crate) struct Attached {
    pub session: Arc<Session>,
    pub session_present: bool,
    pub generation: u64,
    /// Peer of the connection taken over, if any.
    pub taken_over: Option<SocketAddr>,
}

/// The MQTT broker. Cheap to share (`Arc`); all methods are safe to call from any task.
#[derive(Debug)]
pub struct Broker {
    pub(crate) cfg: BrokerConfig,
    pub(crate) authority: Arc<dyn Authority>,
    persistence: Arc<dyn Persistence>,
    pub(crate) sessions: Mutex<HashMap<String, Arc<Session>>>,
    pub(crate) router: RwLock<Router>,
    pub(crate) retained: Mutex<Retained>,
    wills: Mutex<Vec<PendingWill>>,
    /// Recent kicks (epoch, identity), so a CONNECT authenticated just before a kick
    /// cannot attach just after it.
    kicks: Mutex<(u64, VecDeque<(u64, String)>)>,
    /// Durable changes not yet collected by the writer.
    pending: Mutex<Pending>,
    /// The durable-state writer (see [`crate::persistence`]).
    journal: Journal,
    pub(crate) conn_limit: Arc<Semaphore>,
    /// TLS handshakes past their ClientHello ([`BrokerConfig::max_concurrent_handshakes`]).
    pub(crate) handshake_slots: Arc<Semaphore>,
    next_conn_id: AtomicU64,
    pub(crate) metrics: Metrics,
    housekeeping: AtomicBool,
    /// Hub-internal subscribers; read on every routed message, written when a tap is added
    /// or found closed.
    taps: RwLock<Vec<Tap>>,
    /// The other nodes of a cluster, if any ([`Broker::set_fabric`]).
    fabric: std::sync::OnceLock<Arc<dyn crate::Fabric>>,
    /// Client ids another node took over, with the epoch of its claim: a CONNECT here whose
    /// own claim is older must not attach (it lost the race). Cluster only.
    released: Mutex<HashMap<String, u64>>,
    /// Publish interceptors by filter, first match wins; read on every client publish.
    interceptors: RwLock<Vec<(String, Arc<dyn Interceptor>)>>,
}

/// The router, locked for writing: on release, the filters that gained their first or lost
/// their last subscription are reported to the fabric (still under the lock, so in order).
pub(crate) struct RouterWrite<'a> {
    guard: std::sync::RwLockWriteGuard<'a, Router>,
    fabric: Option<&'a Arc<dyn crate::Fabric>>,
}

impl std::ops::Deref for RouterWrite<'_> {
    type Target = Router;
    fn deref(&self) -> &Router {
        &self.guard
    }
}

impl std::ops::DerefMut for RouterWrite<'_> {
    fn deref_mut(&mut self) -> &mut Router {
        &mut self.guard
    }
}

impl Drop for RouterWrite<'_> {
    fn drop(&mut self) {
        let changes = self.guard.take_interest_changes();
        if let Some(fabric) = self.fabric {
            for (filter, wanted) in changes {
                fabric.interest(&filter, wanted);
            }
        }
    }
}

const KICK_MEMORY: usize = 4096;

/// Changes waiting for the writer: sessions to delete, then sessions with changes, taken
/// together so a deletion is never written after a newer session of the same client id.
#[derive(Debug, Default)]
struct Pending {
    removed: Vec<String>,
    sessions: Vec<Arc<Session>>,
}

/// The writer's state.
#[derive(Debug)]
struct Journal {
    /// Batches started (collected): a change made now is in batch `collected + 1` or earlier.
    collected: AtomicU64,
    /// The last batch written; acknowledgements waiting for a batch watch this.
    durable: watch::Sender<u64>,
    /// Something to write (sync durability).
    wake: Arc<Notify>,
    /// Held while a batch is written (one at a time, in order); holds the changes of a batch
    /// whose write failed, written again first.
    writing: tokio::sync::Mutex<Vec<Change>>,
    /// The last write failed: new durable work is refused until one succeeds.
    failing: AtomicBool,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            collected: AtomicU64::new(0),
            durable: watch::Sender::new(0),
            wake: Arc::new(Notify::new()),
            writing: tokio::sync::Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
        }
    }
}

impl Broker {
    /// A broker whose durable state lives in memory ([`MemoryPersistence`]).
    pub fn new(cfg: BrokerConfig, authority: Arc<dyn Authority>) -> Arc<Broker> {
        Broker::with_persistence(cfg, authority, Arc::new(MemoryPersistence::default()))
    }

    /// A broker that writes retained messages and persistent sessions to `persistence`.
    /// Call [`Broker::restore`] before serving to load what it holds.
    pub fn with_persistence(
        cfg: BrokerConfig,
        authority: Arc<dyn Authority>,
        persistence: Arc<dyn Persistence>,
    ) -> Arc<Broker> {
        let conn_limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
        let handshake_slots = Arc::new(Semaphore::new(cfg.max_concurrent_handshakes.max(1)));
        Arc::new(Broker {
            cfg,
            authority,
            persistence,
            sessions: Mutex::default(),
            router: RwLock::default(),
            retained: Mutex::default(),
            wills: Mutex::default(),
            kicks: Mutex::default(),
            pending: Mutex::default(),
            journal: Journal::default(),
            conn_limit,
            handshake_slots,
            next_conn_id: AtomicU64::new(1),
            metrics: Metrics::default(),
            housekeeping: AtomicBool::new(false),
            taps: RwLock::default(),
            fabric: std::sync::OnceLock::new(),
            released: Mutex::default(),
            interceptors: RwLock::default(),
        })
    }

    /// Joins this broker to the other nodes of a cluster: messages routed here are
    /// forwarded through `fabric`, which is told the filters this node's sessions want (all
    /// of them now, then every change). Set once; false if one was set already.
    pub fn set_fabric(&self, fabric: Arc<dyn crate::Fabric>) -> bool {
        let mut router = self.router.write().unwrap_or_else(PoisonError::into_inner);
        router.take_interest_changes();
        if self.fabric.set(fabric.clone()).is_err() {
            return false;
        }
        for filter in router.interest() {
            fabric.interest(&filter, true);
        }
        true
    }

    /// What a SUBACK waits for on a cluster node (see [`crate::Fabric::settled`]).
    pub(crate) fn fabric_settled(
        &self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        self.fabric.get().and_then(|f| f.settled())
    }

    /// Routes a message another node of the cluster forwarded (see [`crate::Fabric`]) to
    /// this node's subscribers; not forwarded again. Its retained copy comes through
    /// [`Self::retain_from_peer`]. Returns the number of sessions it was queued for.
    pub fn deliver_from_peer(&self, message: Message) -> usize {
        self.route_from(Arc::new(message), &mut Vec::new(), true)
            .queued
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.cfg
    }

    /// Loads retained messages and persistent sessions from the persistence back end.
    pub async fn restore(&self) -> Result<(), Error> {
        self.reload_retained().await?;
        let now = SystemTime::now();
        for stored in self.persistence.load_sessions().await? {
            self.adopt(stored, now);
        }
        Ok(())
    }

    /// Makes the retained set what persistence holds (a cluster node once it hears the
    /// others' retained messages, at start and after NATS was away: the shared registry has
    /// what was retained or cleared meanwhile). Messages retained here and not yet written
    /// stay.
    pub async fn reload_retained(&self) -> Result<(), Error> {
        let retained = self.persistence.load_retained().await?;
        lock(&self.retained).reload(retained);
        Ok(())
    }

    /// Takes a stored session into memory (its subscriptions into the router), unless this
    /// node has a session of that client id already.
    fn adopt(&self, stored: crate::persistence::StoredSession, now: SystemTime) {
        let client_id = stored.client_id.clone();
        let subs = stored.subscriptions.clone();
        let session = Session::from_stored(stored, now);
        {
            let mut map = lock(&self.sessions);
            if map.contains_key(&client_id) {
                return;
            }
            map.insert(client_id.clone(), session);
        }
        let mut router = self.router_write();
        for s in &subs {
            if let Ok(split) = parse_subscription(&s.filter) {
                router.insert(
                    &client_id,
                    split,
                    crate::router::SubEntry {
                        options: s.options,
                        id: s.id,
                    },
                );
            }
        }
    }

    /// Before a CONNECT attaches on a cluster node: claims the client id, and takes the
    /// session handed over by the node it was on. Returns the claim's epoch.
    pub(crate) async fn claim(
        &self,
        client_id: &str,
        peer: SocketAddr,
    ) -> Result<Option<u64>, crate::ClaimError> {
        let Some(fabric) = self.fabric.get() else {
            return Ok(None);
        };
        let claim = fabric.claim(client_id, peer).await?;
        if let Some(stored) = claim.session
            && stored.client_id == client_id
        {
            self.adopt(stored, SystemTime::now());
        }
        Ok(Some(claim.epoch))
    }

    /// Another node of the cluster took `client_id` over with a claim of `epoch`: its live
    /// connection here closes (v5 DISCONNECT 0x8E Session taken over), its session leaves
    /// this node with its subscriptions, once what is pending of it is written (the other
    /// node resumes it from there). A CONNECT here with an older claim will not attach.
    /// `new_peer` is where it connected (a different address reports a possible clone).
    /// Returns whether this node had it.
    pub async fn release(&self, client_id: &str, epoch: u64, new_peer: Option<SocketAddr>) -> bool {
        let session = {
            let mut map = lock(&self.sessions);
            {
                let mut released = lock(&self.released);
                let e = released.entry(client_id.to_owned()).or_default();
                *e = (*e).max(epoch);
            }
            map.remove(client_id)
        };
        let Some(session) = session else {
            return false;
        };
        let (subs, old_peer) = {
            let mut st = session.lock();
            let old_peer = st.link.take().map(|l| {
                l.kick.kick(reason::SESSION_TAKEN_OVER);
                l.peer
            });
            (
                st.subscriptions.keys().cloned().collect::<Vec<_>>(),
                old_peer,
            )
        };
        {
            let mut router = self.router_write();
            for f in &subs {
                if let Ok(split) = parse_subscription(f) {
                    router.remove(client_id, split);
                }
            }
        }
        if let (Some(old), Some(new)) = (old_peer, new_peer)
            && old.ip() != new.ip()
        {
            self.authority
                .security_event(crate::SecurityEvent::PossibleClone {
                    client_id: client_id.to_owned(),
                    old_peer: old,
                    new_peer: new,
                });
        }
        // What was queued or changed for it before now is written before the other node
        // reads it; after that, nothing of it is written from here.
        if let Err(e) = self.flush().await {
            tracing::error!(%client_id, error = ?e, "cannot write a session handed to another node");
        }
        let mut st = session.lock();
        st.removed = true;
        st.journal.clear();
        st.meta_dirty = false;
        true
    }

    pub(crate) fn router_read(&self) -> std::sync::RwLockReadGuard<'_, Router> {
        self.router.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn router_write(&self) -> RouterWrite<'_> {
        RouterWrite {
            guard: self.router.write().unwrap_or_else(PoisonError::into_inner),
            fabric: self.fabric.get(),
        }
    }

    /// After changing `st` (the state of `session`): lists the session for the writer if it
    /// now has changes to write.
    pub(crate) fn note(&self, session: &Arc<Session>, st: &mut SessionState) {
        if st.listed || !st.has_changes() {
            return;
        }
        st.listed = true;
        lock(&self.pending).sessions.push(session.clone());
        self.wake_writer();
    }

    /// Lists a stored session for deletion (under its state's lock: nothing more of it is
    /// written).
    fn remove_stored(&self, client_id: &str, st: &mut SessionState) {
        st.removed = true;
        st.journal.clear();
        st.meta_dirty = false;
        if st.stored {
            lock(&self.pending).removed.push(client_id.to_owned());
            self.wake_writer();
        }
    }

    /// With sync durability, the batch a change made before this call will be written in:
    /// acknowledge it once [`Self::durable`] reaches it. None with periodic durability.
    pub(crate) fn ticket(&self) -> Option<u64> {
        if self.cfg.durability != Durability::Sync {
            return None;
        }
        let ticket = self.journal.collected.load(Ordering::SeqCst) + 1;
        // The change may have gone into the batch being written now: make sure the writer
        // runs once more, or this would wait for its next periodic run.
        self.journal.wake.notify_one();
        Some(ticket)
    }

    /// Sync durability: something to write, the writer runs now.
    fn wake_writer(&self) {
        if self.cfg.durability == Durability::Sync {
            self.journal.wake.notify_one();
        }
    }

    /// The last batch written, to wait on.
    pub(crate) fn durable(&self) -> watch::Receiver<u64> {
        self.journal.durable.subscribe()
    }

    /// True while the last write of durable state failed (a full disk…): new QoS 1/2
    /// messages and subscriptions are refused rather than acknowledged and kept in memory
    /// only.
    pub(crate) fn refusing_durable_work(&self) -> bool {
        self.cfg.durability == Durability::Sync && self.journal.failing.load(Ordering::Relaxed)
    }

    /// A connection id, taken at accept: unique for the broker's life and never 0 (the
    /// generation of a session restored from storage), so it also tells a session's
    /// connections apart. Logged as `conn_id` in the connection's span.
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Closes every live session of `identity` at once (v5 clients get DISCONNECT 0x98
    /// Administrative action first). Returns how many were closed. A CONNECT of that identity
    /// already past authentication is refused too.
    pub fn kick_identity(&self, identity: &str) -> usize {
        {
            let mut k = lock(&self.kicks);
            k.0 += 1;
            let epoch = k.0;
            k.1.push_back((epoch, identity.to_owned()));
            if k.1.len() > KICK_MEMORY {
                k.1.pop_front();
            }
        }
        let sessions = lock(&self.sessions);
        let mut n = 0;
        for s in sessions.values() {
            let st = s.lock();
            if let Some(link) = st.link.as_ref().filter(|l| l.identity == identity) {
                link.kick.kick(reason::ADMINISTRATIVE_ACTION);
                n += 1;
            }
        }
        n
    }

    /// Closes the live session of `client_id`; false if it is not connected.
    pub fn kick_client(&self, client_id: &str) -> bool {
        let sessions = lock(&self.sessions);
        let Some(s) = sessions.get(client_id) else {
            return false;
        };
        let st = s.lock();
        match &st.link {
            Some(link) => {
                link.kick.kick(reason::ADMINISTRATIVE_ACTION);
                true
            }
            None => false,
        }
    }

    /// Live sessions, sorted by client id.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let sessions = lock(&self.sessions);
        let mut v: Vec<SessionInfo> = sessions
            .iter()
            .filter_map(|(id, s)| session_info(id, &s.lock()))
            .collect();
        v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        v
    }

    /// The live session of `client_id`, if it is connected (one map lookup).
    pub fn session(&self, client_id: &str) -> Option<SessionInfo> {
        let sessions = lock(&self.sessions);
        let s = sessions.get(client_id)?;
        session_info(client_id, &s.lock())
    }

    /// Counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        let m = &self.metrics;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_accepted: g(&m.connections_accepted),
            tls_handshakes: g(&m.tls_handshakes),
            tls_handshake_failures: g(&m.tls_handshake_failures),
            tls_handshake_timeouts: g(&m.tls_handshake_timeouts),
            tls_handshakes_paced: g(&m.tls_handshakes_paced),
            connects_accepted: g(&m.connects_accepted),
            connects_refused: g(&m.connects_refused),
            messages_received: g(&m.messages_received),
            messages_sent: g(&m.messages_sent),
            messages_dropped: g(&m.messages_dropped),
            publishes_denied: g(&m.publishes_denied),
            publisher_pauses: g(&m.publisher_pauses),
            subscribers_stalled: g(&m.subscribers_stalled),
            taps_dropped: g(&m.taps_dropped),
            intercepted_routed: g(&m.intercepted_routed),
            intercepted_refused: g(&m.intercepted_refused),
            reserved_properties_stripped: g(&m.reserved_properties_stripped),
            messages_refused_storage: g(&m.messages_refused_storage),
            state_batches_written: g(&m.state_batches_written),
            state_changes_written: g(&m.state_changes_written),
            sessions: lock(&self.sessions).len() as u64,
            subscriptions: self.router_read().len() as u64,
            retained: lock(&self.retained).len() as u64,
        }
    }

    /// Publishes a message from the hub itself (no ACL check), e.g. an OTA notification.
    /// Returns the number of subscribers it was queued for.
    pub fn publish(&self, message: Message) -> usize {
        self.route(Arc::new(message))
    }

    /// Delivers to the hub itself every message routed on a topic matching `filter` (an
    /// MQTT filter with `+`/`#`), e.g. device reports for the OTA service. The hub is not a
    /// session: no ACL, no QoS exchange, no retained messages replayed; messages go into a
    /// queue of `capacity` and, when the hub falls that far behind, are dropped and counted
    /// (`taps_dropped`) rather than slowing the publishers. The tap ends when the receiver
    /// is dropped.
    pub fn tap(
        &self,
        filter: &str,
        capacity: usize,
    ) -> Result<tokio::sync::mpsc::Receiver<Arc<Message>>, crate::topic::TopicError> {
        crate::topic::validate_filter(filter)?;
        if filter.starts_with("$share/") {
            return Err(crate::topic::TopicError::Shared);
        }
        let (queue, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        self.taps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Tap {
                filter: filter.to_owned(),
                queue,
            });
        Ok(rx)
    }

    /// Lets `interceptor` decide about every client message published on a topic matching
    /// `filter` (an MQTT filter with `+`/`#`, not shared) before it is routed: see
    /// [`crate::intercept`]. The first interceptor registered whose filter matches decides.
    /// Messages the hub itself publishes ([`Broker::publish`], wills) are not intercepted.
    pub fn intercept(
        &self,
        filter: &str,
        interceptor: Arc<dyn Interceptor>,
    ) -> Result<(), crate::topic::TopicError> {
        crate::topic::validate_filter(filter)?;
        if filter.starts_with("$share/") {
            return Err(crate::topic::TopicError::Shared);
        }
        self.interceptors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((filter.to_owned(), interceptor));
        Ok(())
    }

    /// The interceptor of `topic`, if any.
    pub(crate) fn interceptor_for(&self, topic: &str) -> Option<Arc<dyn Interceptor>> {
        let all = self
            .interceptors
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        all.iter()
            .find(|(f, _)| crate::topic::matches(f, topic))
            .map(|(_, i)| i.clone())
    }

    /// Hands `msg` to the taps whose filter matches; forgets taps whose receiver is gone.
    fn feed_taps(&self, msg: &Arc<Message>) {
        let mut closed = false;
        {
            let taps = self.taps.read().unwrap_or_else(PoisonError::into_inner);
            for tap in taps.iter() {
                if !crate::topic::matches(&tap.filter, &msg.topic) {
                    continue;
                }
                match tap.queue.try_send(msg.clone()) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        bump(&self.metrics.taps_dropped, 1);
                        tracing::warn!(topic = %msg.topic, filter = %tap.filter, "hub tap full; message dropped");
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => closed = true,
                }
            }
        }
        if closed {
            self.taps
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|t| !t.queue.is_closed());
        }
    }

    /// Routes a message: retains it if asked, then queues it for every subscriber without
    /// waiting on any of them.
    pub(crate) fn route(&self, msg: Arc<Message>) -> usize {
        self.route_noting(msg, &mut Vec::new()).queued
    }

    /// [`route`](Self::route), adding to `congested` the online subscribers whose queue is
    /// past its high-water mark, so that a publishing connection can pause its reads.
    pub(crate) fn route_noting(
        &self,
        msg: Arc<Message>,
        congested: &mut Vec<Arc<Session>>,
    ) -> Routed {
        self.route_from(msg, congested, false)
    }

    /// [`route_noting`](Self::route_noting) for a message published on this node
    /// (`from_peer` false: forwarded to the cluster, retained written) or forwarded by
    /// another node.
    fn route_from(
        &self,
        msg: Arc<Message>,
        congested: &mut Vec<Arc<Session>>,
        from_peer: bool,
    ) -> Routed {
        let mut routed = Routed::default();
        // A peer's retained message is kept through `retain_from_peer` (its own subject,
        // heard by every node); here only this node's own.
        if msg.retain && !from_peer {
            let outcome = lock(&self.retained).set(
                msg.clone(),
                self.cfg.max_retained_messages,
                self.cfg.max_retained_payload,
            );
            if outcome == crate::retained::RetainOutcome::Refused {
                tracing::debug!(topic = %msg.topic, "retained message over limits, not retained");
            } else {
                routed.durable = true;
                self.wake_writer();
            }
        }
        if !from_peer && let Some(fabric) = self.fabric.get() {
            fabric.forward(&msg);
        }
        // On a cluster node, shared groups get messages through the fabric, one member in
        // the whole cluster (`deliver_shared_from_peer`), this node's included.
        let shared_here = self.fabric.get().is_none();
        let targets = {
            let router = self.router_read();
            let sessions = lock(&self.sessions);
            let online = |c: &str| sessions.get(c).is_some_and(|s| s.lock().online());
            let targets =
                router.targets(&msg.topic, msg.publisher.as_deref(), &online, shared_here);
            targets
                .into_iter()
                .filter_map(|t| sessions.get(&t.client_id).map(|s| (s.clone(), t)))
                .collect::<Vec<_>>()
        };
        self.deliver(&msg, targets, congested, &mut routed);
        if !self
            .taps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            self.feed_taps(&msg);
        }
        routed
    }

    /// Queues `msg` for each of `targets` (their subscriptions merged), counting into
    /// `routed`; adds to `congested` the online subscribers past their high-water mark.
    fn deliver(
        &self,
        msg: &Arc<Message>,
        targets: Vec<(Arc<Session>, crate::router::Target)>,
        congested: &mut Vec<Arc<Session>>,
        routed: &mut Routed,
    ) {
        let limits = self.cfg.queue_limits();
        let pause = !self.cfg.publisher_backpressure.is_zero();
        let mut dropped = 0;
        for (session, t) in targets {
            let d = Delivery {
                message: msg.clone(),
                qos: msg.qos.min(t.qos),
                retain: msg.retain && t.retain_as_published,
                subscription_ids: t.subscription_ids,
                seq: 0,
            };
            let (r, qos, behind) = {
                let mut st = session.lock();
                let journaled = st.journal.len();
                let qos = d.qos;
                let r = st.enqueue(d, limits);
                if st.journal.len() > journaled {
                    // Queued for a persistent session: the publisher's ack waits for it.
                    routed.durable = true;
                    self.note(&session, &mut st);
                }
                (r, qos, pause && st.note_congestion(limits))
            };
            match r {
                Enqueued::Queued { evicted } => {
                    routed.queued += 1;
                    dropped += evicted;
                    session.notify.notify_one();
                }
                Enqueued::Skipped => dropped += 1,
                Enqueued::Full => {
                    dropped += 1;
                    if qos > 0 {
                        routed.full += 1;
                        tracing::debug!(client_id = %session.client_id, topic = %msg.topic,
                            "queue full: QoS {qos} message not queued for this session");
                    }
                }
            }
            if behind && !congested.iter().any(|s| Arc::ptr_eq(s, &session)) {
                congested.push(session);
            }
        }
        bump(&self.metrics.messages_dropped, dropped);
    }

    /// A message another node forwarded for the shared subscription `$share/{group}/{filter}`
    /// (NATS handed it to this node of the group's nodes): queued for one member here.
    /// Returns whether one took it.
    pub fn deliver_shared_from_peer(&self, filter: &str, group: &str, message: Message) -> bool {
        let msg = Arc::new(message);
        let target = {
            let router = self.router_read();
            let sessions = lock(&self.sessions);
            let online = |c: &str| sessions.get(c).is_some_and(|s| s.lock().online());
            router
                .shared_target(filter, group, &msg.topic, &online)
                .and_then(|t| sessions.get(&t.client_id).map(|s| (s.clone(), t)))
        };
        let mut routed = Routed::default();
        if let Some(t) = target {
            self.deliver(&msg, vec![t], &mut Vec::new(), &mut routed);
        }
        routed.queued > 0
    }

    /// A retained message another node published: kept in this node's retained set (its
    /// node wrote it to the registry), not routed (its topic's subscribers get it through
    /// [`Self::deliver_from_peer`]).
    pub fn retain_from_peer(&self, message: Message) {
        let msg = Arc::new(message);
        let mut retained = lock(&self.retained);
        let outcome = retained.set(
            msg.clone(),
            self.cfg.max_retained_messages,
            self.cfg.max_retained_payload,
        );
        if outcome != crate::retained::RetainOutcome::Refused {
            retained.written(&msg.topic);
        }
    }

    /// True if `identity` was kicked after `epoch`.
    fn kicked_since(&self, epoch: u64, identity: &str) -> bool {
        let k = lock(&self.kicks);
        k.1.iter().any(|(e, id)| *e > epoch && id == identity)
    }

    pub(crate) fn kick_epoch(&self) -> u64 {
        lock(&self.kicks).0
    }

    /// Binds a new connection to its session: takes over a connected one, resumes or
    /// replaces a stored one.
    pub(crate) fn attach(
        &self,
        client_id: &str,
        clean_start: bool,
        expiry: u32,
        link: Link,
        kick_epoch: u64,
        claim_epoch: Option<u64>,
    ) -> Result<Attached, Refusal> {
        let mut discard: Vec<String> = Vec::new();
        let attached = {
            let mut map = lock(&self.sessions);
            if self.kicked_since(kick_epoch, &link.identity) {
                return Err(Refusal::NotAuthorized);
            }
            if let Some(mine) = claim_epoch {
                let mut released = lock(&self.released);
                if released.get(client_id).is_some_and(|&theirs| theirs > mine) {
                    // Another node claimed it after this CONNECT did: that one wins.
                    return Err(Refusal::ServerUnavailable);
                }
                // A newer claim is here: the hand-over record has done its work.
                released.remove(client_id);
            }
            let mut taken_over = None;
            let mut resumed = None;
            if let Some(old) = map.get(client_id) {
                let mut st = old.lock();
                if let Some(l) = st.link.take() {
                    l.kick.kick(reason::SESSION_TAKEN_OVER);
                    taken_over = Some(l.peer);
                }
                if clean_start || st.identity != link.identity {
                    discard = st.subscriptions.keys().cloned().collect();
                    self.remove_stored(client_id, &mut st);
                } else {
                    resumed = Some(old.clone());
                }
            }
            let session_present = resumed.is_some();
            let session = match resumed {
                Some(s) => s,
                None => {
                    let s = Session::new(client_id.to_owned(), link.identity.clone(), expiry);
                    map.insert(client_id.to_owned(), s.clone());
                    s
                }
            };
            let generation = {
                let mut st = session.lock();
                st.expiry = expiry;
                // Connection ids are unique broker-wide, so a will of an earlier connection
                // is cancelled even when a clean start replaced the session object.
                st.generation = link.conn_id;
                st.link = Some(link);
                st.disconnected_at = None;
                st.meta_dirty = true;
                self.note(&session, &mut st);
                st.generation
            };
            Attached {
                session,
                session_present,
                generation,
                taken_over,
            }
        };
        if !discard.is_empty() {
            let mut router = self.router_write();
            for f in &discard {
                if let Ok(split) = parse_subscription(f) {
                    router.remove(client_id, split);
                }
            }
        }
        Ok(attached)
    }

    /// Unbinds connection `conn_id` from its session when it ends; drops the session if it
    /// does not outlive the connection.
    pub(crate) fn detach(&self, session: &Arc<Session>, conn_id: u64) {
        let mut discard = Vec::new();
        {
            let mut map = lock(&self.sessions);
            let mut st = session.lock();
            if st.link.as_ref().map(|l| l.conn_id) != Some(conn_id) {
                return;
            }
            st.link = None;
            st.disconnected_at = Some((Instant::now(), SystemTime::now()));
            st.meta_dirty = true;
            self.note(session, &mut st);
            // Publishers paused on this session stop waiting: offline queues take no QoS 0.
            st.congested = false;
            st.stalled = false;
            session.room.notify_waiters();
            if st.expiry == 0 {
                discard = st.subscriptions.keys().cloned().collect();
                // A persistent session ended with expiry 0 (v5 DISCONNECT).
                self.remove_stored(&session.client_id, &mut st);
                drop(st);
                if map
                    .get(&session.client_id)
                    .is_some_and(|s| Arc::ptr_eq(s, session))
                {
                    map.remove(&session.client_id);
                }
            }
        }
        let mut router = self.router_write();
        for f in &discard {
            if let Ok(split) = parse_subscription(f) {
                router.remove(&session.client_id, split);
            }
        }
    }

    /// Publishes a will now, or when its delay (bounded by the session's expiry) ends.
    pub(crate) fn schedule_will(
        &self,
        client_id: &str,
        generation: u64,
        delay: Duration,
        message: Message,
    ) {
        if delay.is_zero() {
            self.route(Arc::new(message));
            return;
        }
        lock(&self.wills).push(PendingWill {
            deadline: Instant::now() + delay,
            client_id: client_id.to_owned(),
            generation,
            message,
        });
    }

    /// Starts the housekeeping task once (needs a runtime, hence not in `new`).
    pub(crate) fn start_housekeeping(self: &Arc<Self>) {
        if self.housekeeping.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        let period = self.cfg.housekeeping_interval;
        tokio::spawn(housekeeping(weak.clone(), period));
        if self.cfg.durability == Durability::Sync {
            tokio::spawn(writer(weak, self.journal.wake.clone(), period));
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        // Delayed wills whose time has come and whose session did not reconnect.
        let due: Vec<PendingWill> = {
            let mut wills = lock(&self.wills);
            let (due, keep) = std::mem::take(&mut *wills)
                .into_iter()
                .partition(|w| w.deadline <= now);
            *wills = keep;
            due
        };
        for w in due {
            let reconnected = lock(&self.sessions)
                .get(&w.client_id)
                .is_some_and(|s| s.lock().generation != w.generation);
            if !reconnected {
                self.route(Arc::new(w.message));
            }
        }
        // Offline sessions past their expiry.
        let mut expired = Vec::new();
        {
            let mut map = lock(&self.sessions);
            map.retain(|id, s| {
                let mut st = s.lock();
                let gone = st.link.is_none()
                    && st.expiry != u32::MAX
                    && st.disconnected_at.is_some_and(|(at, _)| {
                        at + Duration::from_secs(u64::from(st.expiry)) <= now
                    });
                if gone {
                    self.remove_stored(id, &mut st);
                    expired.push((
                        id.clone(),
                        st.subscriptions.keys().cloned().collect::<Vec<_>>(),
                    ));
                }
                !gone
            });
        }
        if !expired.is_empty() {
            let mut router = self.router_write();
            for (id, filters) in &expired {
                for f in filters {
                    if let Ok(split) = parse_subscription(f) {
                        router.remove(id, split);
                    }
                }
            }
        }
    }

    /// Writes every change made so far to the persistence back end, as one batch (with the
    /// changes of a batch whose write failed before it); then acknowledgements waiting for
    /// this batch go out. The writer task calls this; so does shutdown.
    pub async fn flush(&self) -> Result<(), Error> {
        let mut unwritten = self.journal.writing.lock().await;
        let batch = self.journal.collected.fetch_add(1, Ordering::SeqCst) + 1;
        let mut changes = std::mem::take(&mut *unwritten);
        self.collect(&mut changes);
        if !changes.is_empty() {
            let n = changes.len() as u64;
            if let Err(e) = self.persistence.write(changes.clone()).await {
                *unwritten = changes;
                if !self.journal.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, cause = ?std::error::Error::source(&e), "cannot write MQTT state; new QoS 1/2 messages and subscriptions are refused until a write succeeds");
                }
                return Err(e);
            }
            bump(&self.metrics.state_batches_written, 1);
            bump(&self.metrics.state_changes_written, n);
            if self.journal.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("MQTT state written again; accepting QoS 1/2 messages");
            }
        }
        self.journal.durable.send_replace(batch);
        Ok(())
    }

    /// Takes every pending change, in order: deletions, then each listed session's changes,
    /// then retained messages.
    fn collect(&self, out: &mut Vec<Change>) {
        let Pending { removed, sessions } = std::mem::take(&mut *lock(&self.pending));
        out.extend(
            removed
                .into_iter()
                .map(|client_id| Change::SessionRemoved { client_id }),
        );
        for s in sessions {
            s.lock().take_changes(&s.client_id, out);
        }
        for (topic, message) in lock(&self.retained).take_dirty() {
            out.push(Change::Retained { topic, message });
        }
    }

    /// Version-independent session expiry to grant.
    pub(crate) fn grant_expiry(&self, version: Version, clean: bool, asked: Option<u32>) -> u32 {
        match version {
            Version::V311 if clean => 0,
            Version::V311 => self.cfg.max_session_expiry,
            Version::V5 => asked.unwrap_or(0).min(self.cfg.max_session_expiry),
        }
    }
}

async fn housekeeping(broker: Weak<Broker>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let Some(b) = broker.upgrade() else {
            return;
        };
        b.sweep();
        n += 1;
        if n.is_multiple_of(40) {
            lock(&b.retained).purge_expired();
        }
        // Sync durability: the writer runs on demand, and retries a failed write here.
        if (b.cfg.durability == Durability::Periodic || b.journal.failing.load(Ordering::Relaxed))
            && let Err(e) = b.flush().await
        {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "persisting broker state failed; will retry");
        }
    }
}

/// Sync durability: writes a batch as soon as there are changes; changes made while it
/// writes go into the next one (group commit). Holds the broker only while writing.
async fn writer(broker: Weak<Broker>, wake: Arc<Notify>, period: Duration) {
    loop {
        // Bounded, so the task ends soon after the broker is dropped.
        let _woken = tokio::time::timeout(period, wake.notified()).await;
        let Some(b) = broker.upgrade() else {
            return;
        };
        if let Err(e) = b.flush().await {
            tracing::debug!(error = %e, "MQTT state write failed; housekeeping retries");
        }
    }
}
