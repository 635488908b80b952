//! What must survive a restart: retained messages and persistent sessions (their
//! subscriptions, queued messages and in-flight state).
//!
//! The broker records every change of durable state as a [`Change`], in order, and a writer
//! task hands them to [`Persistence::write`] in batches, each one atomic. With
//! [`Durability::Sync`] (the default) the writer runs as soon as there is something to write,
//! and the broker acknowledges nothing that depends on a change (PUBACK/PUBREC of a message
//! queued for a persistent session or retained, SUBACK, UNSUBACK, PUBCOMP, and its own
//! QoS 2 PUBLISH and PUBREL) until the batch holding it is durable: changes made by every
//! connection while one batch is being written go into the next one (group commit). With
//! [`Durability::Periodic`] the writer runs every
//! [`BrokerConfig::housekeeping_interval`](crate::BrokerConfig::housekeeping_interval) and
//! acknowledgements do not wait: a crash loses up to one interval. Both write the same
//! changes, and every change is written at shutdown ([`Broker::flush`](crate::Broker::flush)).
//! Clean sessions (expiry 0) are never written.
//!
//! A message queued for a session and acknowledged by its subscriber before the batch is
//! written is never written at all.
//!
//! The stored types derive serde's traits so a back end can encode them in a format of its
//! choice; payloads and correlation data are [`Bytes`] and encode as byte strings. Adding a
//! field changes the encoding: a back end with a non-self-describing format must version
//! what it writes.

use crate::Error;
use crate::codec::{Properties, SubscriptionOptions};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// An application message as routed and stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: u8,
    /// RETAIN flag as published.
    pub retain: bool,
    /// v5 properties forwarded to subscribers (payload format, content type, response
    /// topic, correlation data, user properties). Never holds alias, expiry or ids.
    pub properties: Properties,
    /// When the message expires (v5 Message Expiry Interval), if ever.
    pub expires_at: Option<SystemTime>,
    /// Client id of the publisher, for no-local; `None` for wills sent by the hub.
    pub publisher: Option<String>,
}

impl Message {
    /// True once past its expiry.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// What it weighs in a session's queue ([`BrokerConfig::max_queued_bytes`]): topic and
    /// payload. Shared between subscribers in memory, but counted in each queue, so one
    /// session's bound does not depend on the others.
    ///
    /// [`BrokerConfig::max_queued_bytes`]: crate::BrokerConfig::max_queued_bytes
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// A message on its way to one subscriber.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The message, shared between subscribers.
    pub message: Arc<Message>,
    /// QoS for this subscriber (min of published and granted).
    pub qos: u8,
    /// RETAIN flag to send.
    pub retain: bool,
    /// v5 subscription identifiers of the matching subscriptions.
    pub subscription_ids: Vec<u32>,
    /// Its place in its session's queue (unique per session, increasing): the key of its
    /// stored copy. Not part of the encoding (stores keep it beside).
    #[serde(skip)]
    pub seq: u64,
}

/// An outbound QoS 1/2 exchange awaiting the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Inflight {
    /// PUBLISH sent, PUBACK/PUBREC awaited; resent with DUP on reconnect.
    Publish(Delivery),
    /// PUBREC received, PUBREL sent, PUBCOMP awaited; PUBREL resent on reconnect.
    Released,
}

/// One subscription of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// Filter as subscribed (including any `$share/group/` prefix).
    pub filter: String,
    /// Options granted.
    pub options: SubscriptionOptions,
    /// v5 subscription identifier.
    pub id: Option<u32>,
}

/// A persistent session as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// Client id.
    pub client_id: String,
    /// Identity the session belongs to (a different identity may not resume it).
    pub identity: String,
    /// Session expiry interval in seconds (`u32::MAX`: never).
    pub expiry: u32,
    /// When the client last disconnected (`None` while connected at save time).
    pub disconnected_at: Option<SystemTime>,
    /// Subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
    /// Outbound exchanges in flight, by packet identifier, in the order they were sent.
    /// Empty in a [`Change::Session`] (the messages are written one by one).
    pub inflight: Vec<(u16, Inflight)>,
    /// Messages queued and not yet sent, in order. Empty in a [`Change::Session`].
    pub queued: Vec<Delivery>,
    /// Inbound QoS 2 packet identifiers awaiting PUBREL.
    pub incoming_qos2: Vec<u16>,
}

/// When acknowledged state is on disk (`[mqtt] durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged means written: PUBACK, PUBREC, SUBACK… wait for the batch holding the
    /// change (group-committed across connections).
    #[default]
    Sync,
    /// Written every housekeeping interval; acknowledgements do not wait. A crash loses up
    /// to one interval of acknowledged messages.
    Periodic,
}

/// One change of durable state. A batch of them is applied in order, atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The retained message of a topic changed (None: removed).
    Retained {
        /// The topic.
        topic: String,
        /// Its message now.
        message: Option<Arc<Message>>,
    },
    /// A session was created or its own state (identity, expiry, subscriptions, inbound
    /// QoS 2 packet ids, disconnection time) changed; `queued` and `inflight` are empty:
    /// its messages are the other changes. Replaces the stored session but not its messages.
    Session(StoredSession),
    /// A session ended (expired, or replaced by a clean start): it and its messages go.
    SessionRemoved {
        /// Client id.
        client_id: String,
    },
    /// A QoS 1/2 message was queued for a session.
    Queued {
        /// Client id.
        client_id: String,
        /// The message, its `seq` set.
        delivery: Delivery,
    },
    /// A queued message was sent under a packet id (it is in flight).
    Sent {
        /// Client id.
        client_id: String,
        /// Which message.
        seq: u64,
        /// Its packet id.
        packet_id: u16,
    },
    /// The subscriber acknowledged a QoS 2 message with PUBREC: PUBREL is owed.
    Released {
        /// Client id.
        client_id: String,
        /// Its packet id.
        packet_id: u16,
    },
    /// The exchange of an in-flight QoS 2 message ended (PUBCOMP, a refusing PUBREC).
    Acknowledged {
        /// Client id.
        client_id: String,
        /// Its packet id.
        packet_id: u16,
    },
    /// A message is done with: acknowledged (QoS 1 PUBACK), or dropped before it was sent
    /// (expired, too large for the client).
    Finished {
        /// Client id.
        client_id: String,
        /// Which message.
        seq: u64,
    },
}

/// Storage for state that survives a restart. Implemented over the registry by the hub;
/// [`MemoryPersistence`] is the default.
#[async_trait]
pub trait Persistence: Send + Sync + std::fmt::Debug + 'static {
    /// All retained messages.
    async fn load_retained(&self) -> Result<Vec<Message>, Error>;
    /// All persistent sessions, with their queued and in-flight messages in order (each
    /// delivery's `seq` set).
    async fn load_sessions(&self) -> Result<Vec<StoredSession>, Error>;
    /// Applies `changes` in order, atomically and durably: when this returns `Ok` all of them
    /// survive a crash; on `Err` none was applied (the broker tries again with them).
    async fn write(&self, changes: Vec<Change>) -> Result<(), Error>;
}

/// Keeps everything in memory: survives a `Broker` being dropped and rebuilt in the same
/// process (tests), not a process restart.
#[derive(Debug, Default)]
pub struct MemoryPersistence {
    retained: Mutex<HashMap<String, Message>>,
    sessions: Mutex<HashMap<String, MemorySession>>,
}

#[derive(Debug)]
struct MemorySession {
    session: StoredSession,
    /// seq → (packet id once sent, released, delivery).
    messages: std::collections::BTreeMap<u64, (Option<u16>, bool, Delivery)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Persistence for MemoryPersistence {
    async fn load_retained(&self) -> Result<Vec<Message>, Error> {
        Ok(lock(&self.retained).values().cloned().collect())
    }

    async fn load_sessions(&self) -> Result<Vec<StoredSession>, Error> {
        Ok(lock(&self.sessions)
            .values()
            .map(|m| {
                let mut s = m.session.clone();
                for (seq, (pid, released, d)) in &m.messages {
                    let mut d = d.clone();
                    d.seq = *seq;
                    match (pid, released) {
                        (Some(pid), true) => s.inflight.push((*pid, Inflight::Released)),
                        (Some(pid), false) => s.inflight.push((*pid, Inflight::Publish(d))),
                        (None, _) => s.queued.push(d),
                    }
                }
                s
            })
            .collect())
    }

    async fn write(&self, changes: Vec<Change>) -> Result<(), Error> {
        let mut retained = lock(&self.retained);
        let mut sessions = lock(&self.sessions);
        let by_pid = |m: &mut MemorySession, pid: u16| {
            m.messages
                .iter()
                .find(|(_, (p, _, _))| *p == Some(pid))
                .map(|(seq, _)| *seq)
        };
        for c in changes {
            match c {
                Change::Retained { topic, message } => match message {
                    Some(m) => {
                        retained.insert(topic, (*m).clone());
                    }
                    None => {
                        retained.remove(&topic);
                    }
                },
                Change::Session(s) => match sessions.get_mut(&s.client_id) {
                    Some(m) => m.session = s,
                    None => {
                        sessions.insert(
                            s.client_id.clone(),
                            MemorySession {
                                session: s,
                                messages: Default::default(),
                            },
                        );
                    }
                },
                Change::SessionRemoved { client_id } => {
                    sessions.remove(&client_id);
                }
                Change::Queued {
                    client_id,
                    delivery,
                } => {
                    if let Some(m) = sessions.get_mut(&client_id) {
                        m.messages.insert(delivery.seq, (None, false, delivery));
                    }
                }
                Change::Sent {
                    client_id,
                    seq,
                    packet_id,
                } => {
                    if let Some(e) = sessions
                        .get_mut(&client_id)
                        .and_then(|m| m.messages.get_mut(&seq))
                    {
                        e.0 = Some(packet_id);
                    }
                }
                Change::Released {
                    client_id,
                    packet_id,
                } => {
                    if let Some(m) = sessions.get_mut(&client_id)
                        && let Some(seq) = by_pid(m, packet_id)
                        && let Some(e) = m.messages.get_mut(&seq)
                    {
                        e.1 = true;
                    }
                }
                Change::Acknowledged {
                    client_id,
                    packet_id,
                } => {
                    if let Some(m) = sessions.get_mut(&client_id)
                        && let Some(seq) = by_pid(m, packet_id)
                    {
                        m.messages.remove(&seq);
                    }
                }
                Change::Finished { client_id, seq } => {
                    if let Some(m) = sessions.get_mut(&client_id) {
                        m.messages.remove(&seq);
                    }
                }
            }
        }
        Ok(())
    }
}
