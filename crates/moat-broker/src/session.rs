//! Session state: what outlives a connection (subscriptions, queued and in-flight messages)
//! and the link to the live connection, if any.
//!
//! Routing pushes into a session's bounded queue under a short `std::sync::Mutex` and wakes
//! the connection task through a `Notify`; it never touches a socket, so a slow subscriber
//! only fills its own queue.
//!
//! **Queue policy when full** ([`BrokerConfig::max_queued_messages`](crate::BrokerConfig)
//! and `max_queued_bytes`, topic plus payload): a new message evicts the oldest queued QoS 0
//! messages until it fits, otherwise the new message is not queued for that session
//! ([`Enqueued::Full`]); every drop is counted (`Metrics::messages_dropped`), and a v5
//! publisher whose QoS 1/2 message missed a full queue hears it (PUBACK/PUBREC 0x97, see
//! `connected.rs`). QoS 0 messages are not queued for offline sessions. So a session's
//! memory is bounded by its queue limits plus its in-flight window, whatever its client
//! does.
//!
//! **Backpressure**: when a queue passes half full, the publishing connection stops reading
//! (between two packets) until it is back under a quarter. Every
//! [`BrokerConfig::publisher_backpressure`](crate::BrokerConfig) the publisher looks again: a
//! subscriber that drained at least a quarter of its queue meanwhile is busy and still waited
//! for; one that did not is marked stalled and nobody waits for it again until it has caught
//! up. So a busy subscriber paces its publishers (nothing lost, CPU goes to the one behind),
//! and a stuck one costs each publisher one pause, not a stall.

use crate::codec::{self, Ack, Packet, Publish, Version};
use crate::persistence::{Change, Delivery, Inflight, StoredSession, StoredSubscription};
use bytes::BytesMut;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Tells a connection task to close, with the v5 DISCONNECT reason to send first.
#[derive(Debug, Default)]
pub(crate) struct KickSignal {
    token: CancellationToken,
    reason: OnceLock<u8>,
}

impl KickSignal {
    /// First reason wins; the connection closes at once.
    pub(crate) fn kick(&self, reason: u8) {
        let _first = self.reason.set(reason);
        self.token.cancel();
    }
    pub(crate) fn reason(&self) -> u8 {
        self.reason
            .get()
            .copied()
            .unwrap_or(crate::error::reason::ADMINISTRATIVE_ACTION)
    }
    pub(crate) async fn kicked(&self) {
        self.token.cancelled().await;
    }
}

/// The live connection attached to a session.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// Unique per accepted connection; tells a stale detach from the current one.
    pub conn_id: u64,
    pub identity: String,
    pub peer: SocketAddr,
    pub mode: &'static str,
    pub version: Version,
    pub connected_at: SystemTime,
    pub kick: Arc<KickSignal>,
}

/// A session, shared by the router (to enqueue) and its connection task (to send).
#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: String,
    pub state: Mutex<SessionState>,
    /// Wakes the connection task when the queue grows.
    pub notify: Notify,
    /// Wakes publishers paused on this session when its queue has drained (or it went
    /// offline); see [`BrokerConfig::publisher_backpressure`](crate::BrokerConfig).
    pub room: Notify,
}

/// Mutable session state. Locked briefly, never across an await.
#[derive(Debug)]
pub(crate) struct SessionState {
    pub identity: String,
    /// Seconds after disconnection the session is kept (`u32::MAX`: forever, 0: not kept).
    pub expiry: u32,
    pub subscriptions: HashMap<String, StoredSubscription>,
    pub queue: VecDeque<Delivery>,
    /// Sum of [`Message::size`](crate::Message::size) over `queue`.
    pub queued_bytes: usize,
    /// In send order, so redelivery keeps order.
    pub inflight: VecDeque<(u16, Inflight)>,
    pub incoming_qos2: HashSet<u16>,
    pub next_pid: u16,
    pub link: Option<Link>,
    /// Connection id of the latest attach; a pending will of another one is cancelled.
    pub generation: u64,
    /// When the last connection ended (for expiry), while offline.
    pub disconnected_at: Option<(Instant, SystemTime)>,
    /// Its own state (identity, expiry, subscriptions, inbound QoS 2 ids, disconnection
    /// time) changed since last collected for [`crate::Persistence`].
    pub meta_dirty: bool,
    /// Changes to its messages since last collected, in order (persistent sessions only).
    pub journal: Vec<Journaled>,
    /// In the broker's list of sessions with changes to collect.
    pub listed: bool,
    /// Written at least once (a later removal must delete it).
    pub stored: bool,
    /// Replaced or expired: nothing of it is written any more.
    pub removed: bool,
    /// The `seq` of the next message queued.
    pub next_seq: u64,
    /// Messages below this `seq` were restored from storage: they may have been sent before
    /// the restart, so they go out with DUP set.
    pub restored_below: u64,
    /// Publishers may be waiting on `room` for this queue to drain.
    pub congested: bool,
    /// Messages taken off the queue so far (sent or dropped): paused publishers tell a busy
    /// subscriber (this moves) from a stuck one.
    pub drained: u64,
    /// Their bytes ([`Message::size`](crate::Message::size)).
    pub drained_bytes: u64,
    /// Did not drain within the backpressure bound: publishers stop waiting for it until
    /// its queue is back under the low-water mark.
    pub stalled: bool,
}

impl Session {
    pub(crate) fn new(client_id: String, identity: String, expiry: u32) -> Arc<Self> {
        Arc::new(Session {
            client_id,
            state: Mutex::new(SessionState {
                identity,
                expiry,
                subscriptions: HashMap::new(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                inflight: VecDeque::new(),
                incoming_qos2: HashSet::new(),
                next_pid: 0,
                link: None,
                generation: 0,
                disconnected_at: None,
                meta_dirty: false,
                journal: Vec::new(),
                listed: false,
                stored: false,
                removed: false,
                next_seq: 0,
                restored_below: 0,
                congested: false,
                drained: 0,
                drained_bytes: 0,
                stalled: false,
            }),
            notify: Notify::new(),
            room: Notify::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn from_stored(s: StoredSession, now: SystemTime) -> Arc<Self> {
        let session = Session::new(s.client_id, s.identity, s.expiry);
        {
            let mut st = session.lock();
            st.subscriptions = s
                .subscriptions
                .into_iter()
                .map(|sub| (sub.filter.clone(), sub))
                .collect();
            st.next_seq = s
                .inflight
                .iter()
                .filter_map(|(_, f)| match f {
                    Inflight::Publish(d) => Some(d.seq),
                    Inflight::Released => None,
                })
                .chain(s.queued.iter().map(|d| d.seq))
                .max()
                .map_or(0, |m| m + 1);
            st.stored = true;
            st.restored_below = st.next_seq;
            st.inflight = s.inflight.into();
            st.queued_bytes = s.queued.iter().map(|d| d.message.size()).sum();
            st.queue = s.queued.into();
            st.incoming_qos2 = s.incoming_qos2.into_iter().collect();
            let offline_for = s
                .disconnected_at
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or(Duration::ZERO);
            let at = Instant::now()
                .checked_sub(offline_for)
                .unwrap_or_else(Instant::now);
            st.disconnected_at = Some((at, s.disconnected_at.unwrap_or(now)));
        }
        session
    }
}

/// A change to a session's messages, recorded for [`crate::Persistence`].
#[derive(Debug)]
pub(crate) enum Journaled {
    Queued(Delivery),
    Sent { seq: u64, pid: u16 },
    Released(u16),
    Acknowledged(u16),
    Finished(u64),
}

/// How much a session had drained at some moment ([`SessionState::drain_mark`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DrainMark {
    messages: u64,
    bytes: u64,
}

/// Bounds of one session's queue (messages waiting beyond the in-flight window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    pub messages: usize,
    /// Sum of [`Message::size`](crate::Message::size).
    pub bytes: usize,
}

/// Result of [`SessionState::enqueue`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Queued, after evicting this many older QoS 0 messages to make room.
    Queued { evicted: u64 },
    /// A QoS 0 message for an offline session: not kept, by design.
    Skipped,
    /// The queue is at its limits (in messages or bytes) and holds no QoS 0 message to
    /// evict: not queued for this session.
    Full,
}

impl SessionState {
    pub(crate) fn online(&self) -> bool {
        self.link.is_some()
    }

    pub(crate) fn persistent(&self) -> bool {
        self.expiry > 0
    }

    /// Records a change to the messages of a persistent session.
    pub(crate) fn record(&mut self, j: Journaled) {
        if self.persistent() && !self.removed {
            self.journal.push(j);
        }
    }

    /// Whether it has changes the broker has not yet collected.
    pub(crate) fn has_changes(&self) -> bool {
        // A clean session is never written: its connects and disconnects cost the writer
        // nothing.
        self.persistent() && !self.removed && (self.meta_dirty || !self.journal.is_empty())
    }

    /// Its changes since the last call, as [`Change`]s in order (the session row first when it
    /// changed or was never written). A message queued, sent and acknowledged within the
    /// same batch is left out altogether.
    pub(crate) fn take_changes(&mut self, client_id: &str, out: &mut Vec<Change>) {
        self.listed = false;
        if self.removed || !self.persistent() {
            self.journal.clear();
            self.meta_dirty = false;
            return;
        }
        if self.meta_dirty || !self.stored {
            self.meta_dirty = false;
            self.stored = true;
            out.push(Change::Session(self.to_stored_meta(client_id)));
        }
        let journal = std::mem::take(&mut self.journal);
        // The message each entry is about when that message was queued in this batch, and
        // which of those messages also ended in it (acknowledged, or dropped unsent).
        let born: HashSet<u64> = journal
            .iter()
            .filter_map(|j| match j {
                Journaled::Queued(d) => Some(d.seq),
                _ => None,
            })
            .collect();
        let mut owner: Vec<Option<u64>> = Vec::with_capacity(journal.len());
        let mut in_flight: HashMap<u16, u64> = HashMap::new();
        let mut ended: HashSet<u64> = HashSet::new();
        for j in &journal {
            owner.push(match j {
                Journaled::Queued(d) => Some(d.seq),
                Journaled::Sent { seq, pid } if born.contains(seq) => {
                    in_flight.insert(*pid, *seq);
                    Some(*seq)
                }
                Journaled::Sent { .. } => None,
                Journaled::Released(pid) => in_flight.get(pid).copied(),
                Journaled::Acknowledged(pid) => {
                    let seq = in_flight.remove(pid);
                    ended.extend(seq);
                    seq
                }
                Journaled::Finished(seq) if born.contains(seq) => {
                    ended.insert(*seq);
                    Some(*seq)
                }
                Journaled::Finished(_) => None,
            });
        }
        for (j, owner) in journal.into_iter().zip(owner) {
            if owner.is_some_and(|seq| ended.contains(&seq)) {
                continue;
            }
            let client_id = client_id.to_owned();
            out.push(match j {
                Journaled::Queued(delivery) => Change::Queued {
                    client_id,
                    delivery,
                },
                Journaled::Sent { seq, pid } => Change::Sent {
                    client_id,
                    seq,
                    packet_id: pid,
                },
                Journaled::Released(packet_id) => Change::Released {
                    client_id,
                    packet_id,
                },
                Journaled::Acknowledged(packet_id) => Change::Acknowledged {
                    client_id,
                    packet_id,
                },
                Journaled::Finished(seq) => Change::Finished { client_id, seq },
            });
        }
    }

    /// At or past half its queue limits (messages or bytes): an online session this far
    /// behind makes its publishers pause.
    pub(crate) fn behind(&self, lim: QueueLimits) -> bool {
        self.queue.len() >= (lim.messages / 2).max(1) || self.queued_bytes >= lim.bytes / 2
    }

    /// Back under a quarter of both limits: a congested or stalled session has caught up.
    pub(crate) fn caught_up(&self, lim: QueueLimits) -> bool {
        self.queue.len() <= lim.messages / 4 && self.queued_bytes <= lim.bytes / 4
    }

    /// Where its draining stands, to compare with [`made_progress`](Self::made_progress)
    /// later.
    pub(crate) fn drain_mark(&self) -> DrainMark {
        DrainMark {
            messages: self.drained,
            bytes: self.drained_bytes,
        }
    }

    /// Drained a quarter of its queue (in messages or bytes) since `mark`: busy, not stuck.
    pub(crate) fn made_progress(&self, mark: DrainMark, lim: QueueLimits) -> bool {
        self.drained.saturating_sub(mark.messages) >= (lim.messages / 4).max(1) as u64
            || self.drained_bytes.saturating_sub(mark.bytes) >= (lim.bytes / 4).max(1) as u64
    }

    /// After `enqueue`: true if publishers should pause for this session (it is online,
    /// behind, and not known to be stuck). Marks it congested.
    pub(crate) fn note_congestion(&mut self, lim: QueueLimits) -> bool {
        if self.online() && !self.stalled && self.behind(lim) {
            self.congested = true;
            return true;
        }
        false
    }

    /// After draining: true if paused publishers should be woken.
    pub(crate) fn note_drained(&mut self, lim: QueueLimits) -> bool {
        if (self.congested || self.stalled) && self.caught_up(lim) {
            self.stalled = false;
            return std::mem::take(&mut self.congested);
        }
        false
    }

    /// Applies the queue policy (see the module docs).
    pub(crate) fn enqueue(&mut self, d: Delivery, lim: QueueLimits) -> Enqueued {
        if !self.online() && d.qos == 0 {
            return Enqueued::Skipped;
        }
        let size = d.message.size();
        let fits = |len: usize, bytes: usize| {
            len < lim.messages && bytes.saturating_add(size) <= lim.bytes
        };
        let mut evicted = 0;
        if !fits(self.queue.len(), self.queued_bytes) {
            if d.qos == 0 || size > lim.bytes {
                return Enqueued::Full;
            }
            // Oldest QoS 0 messages first, and only if that makes room: a QoS 1/2 message
            // that cannot be queued must not cost the subscriber its QoS 0 ones as well.
            let (mut len, mut bytes) = (self.queue.len(), self.queued_bytes);
            let mut victims = Vec::new();
            for (i, q) in self.queue.iter().enumerate() {
                if fits(len, bytes) {
                    break;
                }
                if q.qos == 0 {
                    victims.push(i);
                    len -= 1;
                    bytes -= q.message.size();
                }
            }
            if !fits(len, bytes) {
                return Enqueued::Full;
            }
            for &i in victims.iter().rev() {
                self.queue.remove(i);
            }
            evicted = victims.len() as u64;
            self.queued_bytes = bytes;
        }
        let mut d = d;
        d.seq = self.next_seq;
        self.next_seq += 1;
        if d.qos > 0 {
            self.record(Journaled::Queued(d.clone()));
        }
        self.queued_bytes += size;
        self.queue.push_back(d);
        Enqueued::Queued { evicted }
    }

    fn alloc_pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1);
            if self.next_pid == 0 {
                continue;
            }
            let pid = self.next_pid;
            if !self.inflight.iter().any(|(p, _)| *p == pid) {
                return pid;
            }
        }
    }

    /// Moves queued messages into `out` while the client's window and `high_water` allow.
    /// Returns (sent, dropped) counts and whether a QoS 2 message of a persistent session
    /// was sent (its packet id must be durable before the bytes leave: see
    /// [`crate::persistence`]).
    pub(crate) fn fill(&mut self, out: &mut BytesMut, lim: &OutLimits) -> (u64, u64, bool) {
        let now = SystemTime::now();
        let (mut sent, mut dropped, mut qos2) = (0, 0, false);
        let queued_bytes = self.queued_bytes;
        while out.len() < lim.high_water {
            let Some(front) = self.queue.front() else {
                break;
            };
            if front.qos > 0 && self.inflight.len() >= lim.window {
                break;
            }
            let Some(d) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= d.message.size();
            if d.message.expired(now) {
                dropped += 1;
                if d.qos > 0 {
                    self.record(Journaled::Finished(d.seq));
                }
                continue;
            }
            let pid = if d.qos > 0 { self.alloc_pid() } else { 0 };
            let p = to_publish(&d, pid, d.qos > 0 && d.seq < self.restored_below, now);
            if p.encoded_len(lim.version) > lim.max_packet {
                // Never send a client more than its Maximum Packet Size (v5 §3.1.2.11.4).
                dropped += 1;
                if d.qos > 0 {
                    self.record(Journaled::Finished(d.seq));
                }
                continue;
            }
            codec::encode(&Packet::Publish(p), lim.version, out);
            sent += 1;
            if d.qos == 2 {
                // Only a QoS 2 message's packet id must survive a crash (a second PUBLISH
                // under another id would be a second delivery); a QoS 1 message restored
                // unacknowledged goes out again with DUP set under a new id.
                qos2 |= self.persistent();
                self.record(Journaled::Sent { seq: d.seq, pid });
            }
            if d.qos > 0 {
                self.inflight.push_back((pid, Inflight::Publish(d)));
            }
        }
        self.drained += sent + dropped;
        self.drained_bytes += (queued_bytes - self.queued_bytes) as u64;
        (sent, dropped, qos2)
    }

    /// Re-sends everything in flight after a reconnect: PUBLISH with DUP, or PUBREL.
    pub(crate) fn resend_inflight(&mut self, out: &mut BytesMut, lim: &OutLimits) {
        let now = SystemTime::now();
        for (pid, f) in &self.inflight {
            match f {
                Inflight::Publish(d) => {
                    let p = to_publish(d, *pid, true, now);
                    if p.encoded_len(lim.version) <= lim.max_packet {
                        codec::encode(&Packet::Publish(p), lim.version, out);
                    }
                }
                Inflight::Released => {
                    codec::encode(&Packet::PubRel(Ack::new(*pid)), lim.version, out);
                }
            }
        }
    }

    /// The session row for [`Change::Session`]: everything but its messages.
    pub(crate) fn to_stored_meta(&self, client_id: &str) -> StoredSession {
        StoredSession {
            client_id: client_id.to_owned(),
            identity: self.identity.clone(),
            expiry: self.expiry,
            disconnected_at: self.disconnected_at.map(|(_, t)| t),
            subscriptions: self.subscriptions.values().cloned().collect(),
            inflight: Vec::new(),
            queued: Vec::new(),
            incoming_qos2: self.incoming_qos2.iter().copied().collect(),
        }
    }
}

/// Per-connection bounds on what `fill` writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutLimits {
    pub version: Version,
    /// Client's receive maximum, capped by the broker's in-flight limit.
    pub window: usize,
    /// Client's maximum packet size.
    pub max_packet: usize,
    /// Stop filling the write buffer past this many bytes.
    pub high_water: usize,
}

fn to_publish(d: &Delivery, pid: u16, dup: bool, now: SystemTime) -> Publish {
    let m = &d.message;
    let mut properties = m.properties.clone();
    properties.subscription_ids = d.subscription_ids.clone();
    if let Some(at) = m.expires_at {
        let left = at.duration_since(now).unwrap_or(Duration::ZERO).as_secs();
        properties.message_expiry = Some(u32::try_from(left.max(1)).unwrap_or(u32::MAX));
    }
    Publish {
        dup,
        qos: d.qos,
        retain: d.retain,
        topic: m.topic.clone(),
        pid,
        properties,
        payload: m.payload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::Message;

    fn delivery(qos: u8, n: u8) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: "t".into(),
                payload: vec![n].into(),
                qos,
                retain: false,
                properties: Default::default(),
                expires_at: None,
                publisher: None,
            }),
            qos,
            retain: false,
            subscription_ids: vec![],
            seq: 0,
        }
    }

    fn test_link() -> Link {
        Link {
            conn_id: 1,
            identity: "c".into(),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            mode: "plain",
            version: Version::V5,
            connected_at: SystemTime::now(),
            kick: Arc::default(),
        }
    }

    const ROOMY: QueueLimits = QueueLimits {
        messages: 1000,
        bytes: 1 << 20,
    };

    fn sized(qos: u8, n: u8, len: usize) -> Delivery {
        let mut d = delivery(qos, n);
        Arc::make_mut(&mut d.message).payload = vec![n; len].into();
        d
    }

    fn payloads(st: &SessionState) -> Vec<u8> {
        st.queue.iter().map(|d| d.message.payload[0]).collect()
    }

    #[test]
    fn queue_policy_evicts_oldest_qos0_then_refuses() {
        let s = Session::new("c".into(), "c".into(), 0);
        let mut st = s.lock();
        st.link = None;
        // Offline: QoS 0 not queued.
        assert_eq!(st.enqueue(delivery(0, 0), ROOMY), Enqueued::Skipped);
        st.expiry = 10;
        st.link = Some(test_link());
        let two = QueueLimits {
            messages: 2,
            ..ROOMY
        };
        assert!(matches!(
            st.enqueue(delivery(0, 1), two),
            Enqueued::Queued { .. }
        ));
        assert!(matches!(
            st.enqueue(delivery(1, 2), two),
            Enqueued::Queued { .. }
        ));
        assert_eq!(st.enqueue(delivery(0, 9), two), Enqueued::Full);
        assert_eq!(
            st.enqueue(delivery(1, 3), two),
            Enqueued::Queued { evicted: 1 }
        );
        assert_eq!(st.enqueue(delivery(1, 4), two), Enqueued::Full);
        assert_eq!(payloads(&st), vec![2, 3]);
        assert_eq!(st.queued_bytes, 2 * (1 + 1));
    }

    #[test]
    fn queue_bytes_are_bounded_and_eviction_only_when_it_makes_room() {
        let s = Session::new("c".into(), "c".into(), 10);
        let mut st = s.lock();
        st.link = Some(test_link());
        // 1 byte of topic + payload: sizes 100, 100, 300 = 500 of 500.
        let lim = QueueLimits {
            messages: 100,
            bytes: 500,
        };
        for (qos, n, len) in [(0, 1, 99), (1, 2, 99), (0, 3, 299)] {
            assert!(matches!(
                st.enqueue(sized(qos, n, len), lim),
                Enqueued::Queued { .. }
            ));
        }
        assert_eq!(st.queued_bytes, 500);
        // 600 bytes could never fit: refused, nothing evicted for it.
        assert_eq!(st.enqueue(sized(1, 4, 599), lim), Enqueued::Full);
        assert_eq!(payloads(&st), vec![1, 2, 3]);
        // 450 would fit only after evicting 1 and 3 (the QoS 1 message stays): refused.
        assert_eq!(st.enqueue(sized(1, 5, 449), lim), Enqueued::Full);
        assert_eq!(payloads(&st), vec![1, 2, 3]);
        // 150 fits once both QoS 0 messages are gone (500 - 100 = 400 + 150 is still over).
        assert_eq!(
            st.enqueue(sized(1, 6, 149), lim),
            Enqueued::Queued { evicted: 2 }
        );
        assert_eq!(payloads(&st), vec![2, 6]);
        assert_eq!(st.queued_bytes, 250);
        // Draining gives the bytes back.
        let mut out = BytesMut::new();
        let ol = OutLimits {
            version: Version::V5,
            window: 10,
            max_packet: 1 << 20,
            high_water: 1 << 20,
        };
        assert_eq!(st.fill(&mut out, &ol), (2, 0, false));
        assert_eq!(st.queued_bytes, 0);
    }

    #[test]
    fn fill_respects_window_and_packet_size() {
        let s = Session::new("c".into(), "c".into(), 0);
        let mut st = s.lock();
        for i in 0..5 {
            st.enqueue(delivery(1, i), ROOMY);
        }
        let mut out = BytesMut::new();
        let lim = OutLimits {
            version: Version::V5,
            window: 2,
            max_packet: 1024,
            high_water: 1 << 16,
        };
        assert_eq!(st.fill(&mut out, &lim), (2, 0, false));
        assert_eq!(st.inflight.len(), 2);
        let lim = OutLimits {
            max_packet: 4,
            window: 10,
            ..lim
        };
        assert_eq!(st.fill(&mut out, &lim), (0, 3, false));
    }

    #[test]
    fn a_message_whose_whole_life_is_in_one_batch_is_not_written() {
        let s = Session::new("c".into(), "c".into(), 3600);
        let mut st = s.lock();
        st.link = None;
        st.enqueue(delivery(2, 1), ROOMY); // seq 0: queued, sent, acknowledged (PUBCOMP)
        st.enqueue(delivery(1, 2), ROOMY); // seq 1: QoS 1, queued, sent, still in flight
        st.enqueue(delivery(2, 3), ROOMY); // seq 2: queued, sent, released
        st.enqueue(delivery(1, 4), ROOMY); // seq 3: QoS 1, queued, sent, acknowledged (PUBACK)
        let mut out = BytesMut::new();
        let lim = OutLimits {
            version: Version::V5,
            window: 10,
            max_packet: 1024,
            high_water: 1 << 16,
        };
        assert_eq!(st.fill(&mut out, &lim), (4, 0, true));
        st.record(Journaled::Released(1));
        st.record(Journaled::Acknowledged(1));
        st.record(Journaled::Released(3));
        st.record(Journaled::Finished(3));
        let mut changes = Vec::new();
        st.take_changes("c", &mut changes);
        let kinds: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Session(_) => "session".into(),
                Change::Queued { delivery, .. } => format!("queued {}", delivery.seq),
                Change::Sent { seq, packet_id, .. } => format!("sent {seq} {packet_id}"),
                Change::Released { packet_id, .. } => format!("released {packet_id}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            ["session", "queued 1", "queued 2", "sent 2 3", "released 3"]
        );
        // Its later end is written: the message was written.
        st.record(Journaled::Finished(1));
        changes.clear();
        st.take_changes("c", &mut changes);
        assert_eq!(
            changes,
            [Change::Finished {
                client_id: "c".into(),
                seq: 1
            }]
        );
        // A clean session writes nothing.
        st.expiry = 0;
        st.enqueue(delivery(1, 4), ROOMY);
        changes.clear();
        st.take_changes("c", &mut changes);
        assert!(changes.is_empty());
    }
}
