//! MQTT messages between the nodes of a cluster, over NATS: the broker's
//! [`moat_broker::Fabric`].
//!
//! A message routed on a node is published once on its topic's subject
//! (`subjects::topic_subject`), carrying its origin node and a per-node sequence number.
//! Each node subscribes to the subjects of the filters its own sessions hold (interest
//! follows SUBSCRIBE, UNSUBSCRIBE and session ends), so it receives only what they want,
//! and hands what arrives to `Broker::deliver_from_peer`, which applies MQTT's matching,
//! ACL-granted subscriptions, QoS downgrade and retained handling as for a local publish.
//! Overlapping filters (`a/#` and `a/b`) make NATS deliver a message once per matching
//! subscription: a window of recent sequence numbers per origin and kind of delivery drops
//! the copies. Retained messages also go on `{prefix}.retained`, which every node hears, so
//! every node's retained set stays whole (the registry holds it for nodes that start
//! later). A shared subscription `$share/{group}/{filter}` is a NATS queue subscription
//! (queue `share-{group}`) on the filter's subjects: NATS hands each message to one of the
//! nodes with members, which gives it to one of its members
//! (`Broker::deliver_shared_from_peer`); no node delivers to shared groups locally, the
//! publisher's node included, so each message reaches one member in the whole cluster.
//!
//! Delivery across nodes is NATS core's: at most once, in order per publisher and topic. A
//! node that is unreachable when a message is published does not get it (see the README's
//! "Running several nodes" for what that means for QoS 1/2).

use super::subjects::{filter_subjects, queue_name, topic_subject};
use crate::mqtt::RegistryPersistence;
use moat_broker::{Broker, Claim, ClaimError, Message};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;

/// The subject of retained messages (PUBLISH with RETAIN), which every node subscribes to.
fn retained_subject(prefix: &str) -> String {
    format!("{prefix}.retained")
}

/// Sequence numbers remembered per origin node to drop the copies overlapping filters cause.
const DEDUP_WINDOW: u64 = 8192;

/// A message as it travels between nodes.
#[derive(Debug, Deserialize)]
struct Forwarded {
    origin: String,
    seq: u64,
    message: Message,
}

/// [`Forwarded`] as the sender encodes it, borrowing (the same encoding).
#[derive(Serialize)]
struct ForwardedRef<'a> {
    origin: &'a str,
    seq: u64,
    message: &'a Message,
}

enum Interest {
    Add(moat_broker::Interest),
    Remove(moat_broker::Interest),
    /// Reply once the changes up to this count are in effect on the NATS server.
    Barrier(u64, tokio::sync::oneshot::Sender<()>),
}

/// How long a SUBACK waits for its subscription to be in effect on NATS (NATS down: the
/// subscription is made when it is back; the SUBACK does not wait for that).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a node takes what one of its NATS subscriptions receives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// Routed to this node's subscribers (not its shared groups).
    Plain,
    /// For one member of a shared group: NATS picked this node of the group's nodes.
    Shared { filter: String, group: String },
    /// Kept in the retained set.
    Retained,
}

/// Messages waiting to be published to the other nodes; past this, new ones are dropped
/// (counted): NATS or the network cannot keep up, and queueing more only adds memory and
/// latency (delivery across nodes is at most once).
const OUTBOUND_QUEUE: usize = 8_192;

/// Messages taken off the outbound queue at once.
const PUBLISH_BATCH: usize = 256;

/// The broker's side: hands messages and interest changes to the fabric's tasks, claims
/// client ids.
#[derive(Debug)]
pub(crate) struct NatsFabric {
    out: mpsc::Sender<Arc<Message>>,
    counts: Arc<FabricCounts>,
    interest: mpsc::UnboundedSender<Interest>,
    /// Interest changes sent to the receiving task, and how many of them are in effect.
    issued: AtomicU64,
    settled: Arc<AtomicU64>,
    nats: async_nats::Client,
    prefix: String,
    node: String,
    persistence: Arc<RegistryPersistence>,
}

/// How long a node waits for the node a client was on to hand its session over (it may be
/// dead: then the session is resumed as last written).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks a node to hand a client id over (`{prefix}.release.{node}`, request and reply).
#[derive(Debug, Serialize, Deserialize)]
struct ReleaseRequest {
    client_id: String,
    epoch: u64,
    peer: SocketAddr,
}

fn release_subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.release.{node}")
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interest::Add(x) => write!(f, "+{x:?}"),
            Interest::Remove(x) => write!(f, "-{x:?}"),
            Interest::Barrier(n, _) => write!(f, "barrier {n}"),
        }
    }
}

#[async_trait::async_trait]
impl moat_broker::Fabric for NatsFabric {
    async fn claim(&self, client_id: &str, peer: SocketAddr) -> Result<Claim, ClaimError> {
        let claim = self
            .persistence
            .claim(client_id)
            .await
            .map_err(|e| ClaimError(e.to_string()))?;
        let here = claim.previous.as_deref() == Some(self.node.as_str());
        if let Some(prev) = claim.previous.as_deref().filter(|_| !here) {
            let req = ReleaseRequest {
                client_id: client_id.to_owned(),
                epoch: claim.epoch,
                peer,
            };
            let body = serde_json::to_vec(&req).map_err(|e| ClaimError(e.to_string()))?;
            let asked = tokio::time::timeout(
                RELEASE_TIMEOUT,
                self.nats
                    .request(release_subject(&self.prefix, prev), body.into()),
            )
            .await;
            match asked {
                Ok(Ok(_)) => tracing::debug!(%client_id, from = %prev, "session handed over"),
                Ok(Err(e)) => {
                    tracing::warn!(%client_id, from = %prev, error = %e, "the node the client was on did not hand its session over; resuming it as last written")
                }
                Err(_) => {
                    tracing::warn!(%client_id, from = %prev, "the node the client was on did not answer in time; resuming its session as last written")
                }
            }
        }
        let session = match here {
            true => None,
            false => self
                .persistence
                .load_session(client_id)
                .await
                .map_err(|e| ClaimError(e.to_string()))?,
        };
        Ok(Claim {
            epoch: claim.epoch,
            session,
        })
    }

    fn forward(&self, message: &Arc<Message>) {
        if self.out.try_send(message.clone()).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn settled(&self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let issued = self.issued.load(Ordering::Acquire);
        if self.settled.load(Ordering::Acquire) >= issued
            || self.nats.connection_state() != async_nats::connection::State::Connected
        {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.interest.send(Interest::Barrier(issued, tx)).is_err() {
            return None;
        }
        Some(Box::pin(async move {
            let _ = tokio::time::timeout(SETTLE_TIMEOUT, rx).await;
        }))
    }

    fn interest(&self, interest: &moat_broker::Interest, wanted: bool) {
        self.issued.fetch_add(1, Ordering::AcqRel);
        let _ = self.interest.send(match wanted {
            true => Interest::Add(interest.clone()),
            false => Interest::Remove(interest.clone()),
        });
    }
}

/// Counters of the fabric (metrics).
#[derive(Debug, Default)]
pub struct FabricCounts {
    /// Messages published to the other nodes.
    pub sent: AtomicU64,
    /// Messages received from other nodes and routed here.
    pub received: AtomicU64,
    /// Copies dropped (overlapping filters).
    pub duplicates: AtomicU64,
    /// Messages dropped because this node could not keep up: to send (its queue to NATS
    /// full) or to receive (a NATS subscription's buffer full).
    pub dropped: AtomicU64,
    /// Messages that could not be sent or decoded.
    pub failed: AtomicU64,
}

/// Joins `broker` to the cluster's message fabric on `nats`; returns the fabric's tasks.
pub(crate) async fn start(
    broker: &Arc<Broker>,
    nats: async_nats::Client,
    prefix: String,
    node: String,
    persistence: Arc<RegistryPersistence>,
    counts: Arc<FabricCounts>,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    // Hear the others' retained messages before reading what the registry holds, so none
    // falls between the two.
    let retained = nats.subscribe(retained_subject(&prefix)).await;
    if let Err(e) = &retained {
        tracing::error!(error = %e, "cannot subscribe to retained messages on NATS");
    }
    if let Err(e) = broker.reload_retained().await {
        tracing::error!(error = ?e, "cannot reload retained messages");
    }
    let (out, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (interest, interest_rx) = mpsc::unbounded_channel();
    let settled = Arc::new(AtomicU64::new(0));
    let tasks = vec![
        tokio::spawn(publish(
            nats.clone(),
            prefix.clone(),
            node.clone(),
            out_rx,
            counts.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(receive(
            Receiving {
                broker: broker.clone(),
                nats: nats.clone(),
                prefix: prefix.clone(),
                node: node.clone(),
                retained: retained.ok(),
                settled: settled.clone(),
                counts: counts.clone(),
            },
            interest_rx,
            shutdown.clone(),
        )),
        tokio::spawn(serve_releases(
            broker.clone(),
            nats.clone(),
            release_subject(&prefix, &node),
            shutdown,
        )),
    ];
    broker.set_fabric(Arc::new(NatsFabric {
        out,
        counts: counts.clone(),
        interest,
        issued: AtomicU64::new(0),
        settled,
        nats,
        prefix,
        node,
        persistence,
    }));
    tasks
}

/// Hands client ids over to the nodes that claim them: closes the connection here, writes
/// the session, replies.
async fn serve_releases(
    broker: Arc<Broker>,
    nats: async_nats::Client,
    subject: String,
    shutdown: CancellationToken,
) {
    let mut sub = loop {
        match nats.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to session hand-over requests; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    loop {
        let msg = tokio::select! {
            m = futures_util::StreamExt::next(&mut sub) => match m {
                Some(m) => m,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(req) = serde_json::from_slice::<ReleaseRequest>(&msg.payload) else {
            tracing::warn!("undecodable session hand-over request");
            continue;
        };
        // Each in its own task: a hand-over waits for a write, the next must not wait on it.
        let (broker, nats) = (broker.clone(), nats.clone());
        tokio::spawn(async move {
            let had = broker
                .release(&req.client_id, req.epoch, Some(req.peer))
                .await;
            tracing::debug!(client_id = %req.client_id, had, "handed a client id over");
            if let Some(reply) = msg.reply {
                let _ = nats.publish(reply, bytes::Bytes::from_static(b"ok")).await;
            }
        });
    }
}

async fn publish(
    nats: async_nats::Client,
    prefix: String,
    node: String,
    mut rx: mpsc::Receiver<Arc<Message>>,
    counts: Arc<FabricCounts>,
    shutdown: CancellationToken,
) {
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 {
                return;
            },
            _ = shutdown.cancelled() => return,
        }
        for msg in batch.drain(..) {
            seq += 1;
            let body = ForwardedRef {
                origin: &node,
                seq,
                message: &msg,
            };
            let sent = match postcard::to_allocvec(&body) {
                Ok(bytes) => {
                    let bytes = bytes::Bytes::from(bytes);
                    // Every node keeps every retained message (a subscription made later,
                    // anywhere, gets it): those also go on one subject all nodes hear.
                    let kept = !msg.retain
                        || nats
                            .publish(retained_subject(&prefix), bytes.clone())
                            .await
                            .is_ok();
                    kept && nats
                        .publish(topic_subject(&prefix, &msg.topic), bytes)
                        .await
                        .is_ok()
                }
                Err(_) => false,
            };
            if sent {
                counts.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %msg.topic, "cannot forward a message to the other nodes");
            }
        }
    }
}

/// Recent sequence numbers of one origin.
#[derive(Default)]
struct Seen {
    seqs: BTreeSet<u64>,
}

impl Seen {
    /// True the first time `seq` is offered (within the window).
    fn first(&mut self, seq: u64) -> bool {
        if !self.seqs.insert(seq) {
            return false;
        }
        let newest = self.seqs.last().copied().unwrap_or(seq);
        while self
            .seqs
            .first()
            .is_some_and(|&s| s + DEDUP_WINDOW < newest)
        {
            self.seqs.pop_first();
        }
        true
    }
}

/// What the receiving task works with.
struct Receiving {
    broker: Arc<Broker>,
    nats: async_nats::Client,
    prefix: String,
    node: String,
    /// The retained messages' subscription, made before the node serves.
    retained: Option<async_nats::Subscriber>,
    /// Interest changes in effect (see [`NatsFabric::settled`]).
    settled: Arc<AtomicU64>,
    counts: Arc<FabricCounts>,
}

async fn receive(
    r: Receiving,
    mut interest: mpsc::UnboundedReceiver<Interest>,
    shutdown: CancellationToken,
) {
    let Receiving {
        broker,
        nats,
        prefix,
        node,
        retained,
        settled,
        counts,
    } = r;
    let mut subs: StreamMap<u64, async_nats::Subscriber> = StreamMap::new();
    let mut kinds: HashMap<u64, Kind> = HashMap::new();
    let mut by_interest: HashMap<moat_broker::Interest, Vec<u64>> = HashMap::new();
    let mut next_key = 0u64;
    // Per origin node and kind of delivery: a message comes once per matching subscription.
    let mut seen: HashMap<(String, Kind), Seen> = HashMap::new();
    if let Some(s) = retained {
        subs.insert(0, s);
        kinds.insert(0, Kind::Retained);
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            change = interest.recv() => match change {
                Some(Interest::Add(i)) => {
                    if by_interest.contains_key(&i) {
                        continue;
                    }
                    let kind = match &i.group {
                        None => Kind::Plain,
                        Some(g) => Kind::Shared { filter: i.filter.clone(), group: g.clone() },
                    };
                    let mut keys = Vec::new();
                    for subject in filter_subjects(&prefix, &i.filter) {
                        // A shared group is a NATS queue group: one member node gets each message.
                        let sub = match &i.group {
                            None => nats.subscribe(subject.clone()).await,
                            Some(g) => nats.queue_subscribe(subject.clone(), queue_name(g)).await,
                        };
                        match sub {
                            Ok(s) => {
                                next_key += 1;
                                subs.insert(next_key, s);
                                kinds.insert(next_key, kind.clone());
                                keys.push(next_key);
                            }
                            Err(e) => tracing::error!(%subject, error = %e, "cannot subscribe on NATS; messages from other nodes on it are missed"),
                        }
                    }
                    by_interest.insert(i, keys);
                }
                Some(Interest::Barrier(upto, done)) => {
                    // The server has processed every SUB sent before its PONG.
                    let _ = tokio::time::timeout(SETTLE_TIMEOUT, nats.flush()).await;
                    settled.fetch_max(upto, Ordering::AcqRel);
                    let _ = done.send(());
                }
                Some(Interest::Remove(i)) => {
                    for key in by_interest.remove(&i).unwrap_or_default() {
                        // Dropping the subscriber unsubscribes.
                        subs.remove(&key);
                        kinds.remove(&key);
                    }
                }
                None => return,
            },
            Some((key, msg)) = tokio_stream::StreamExt::next(&mut subs), if !subs.is_empty() => {
                let Some(kind) = kinds.get(&key) else { continue };
                let f: Forwarded = match postcard::from_bytes(&msg.payload) {
                    Ok(f) => f,
                    Err(e) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(subject = %msg.subject, error = %e, "undecodable message from another node");
                        continue;
                    }
                };
                // This node routed its own messages itself, except to shared groups, which
                // the queue group may hand back to it.
                if f.origin == node && !matches!(kind, Kind::Shared { .. }) {
                    continue;
                }
                if !seen.entry((f.origin, kind.clone())).or_default().first(f.seq) {
                    counts.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                counts.received.fetch_add(1, Ordering::Relaxed);
                match kind {
                    Kind::Plain => {
                        broker.deliver_from_peer(f.message);
                    }
                    Kind::Shared { filter, group } => {
                        broker.deliver_shared_from_peer(filter, group, f.message);
                    }
                    Kind::Retained => broker.retain_from_peer(f.message),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_dropped_and_the_window_slides() {
        let mut s = Seen::default();
        assert!(s.first(1));
        assert!(s.first(3));
        assert!(!s.first(1));
        assert!(s.first(2));
        assert!(s.first(1 + DEDUP_WINDOW + 5));
        // Far behind the newest: forgotten, so offered again it counts as new (a duplicate
        // is preferred to a loss).
        assert!(s.first(1));
        assert!(s.seqs.len() <= DEDUP_WINDOW as usize + 1);
    }
}
