//! What must survive a restart: retained messages and persistent sessions (their
//! subscriptions, queued messages and in-flight state).
//!
//! The broker writes behind: state changes mark a session or a retained topic dirty, and the
//! housekeeping task hands the dirty ones to [`Persistence`] every
//! [`BrokerConfig::housekeeping_interval`](crate::BrokerConfig::housekeeping_interval), and once more
//! when a listener shuts down ([`Broker::flush`](crate::Broker::flush)). Durability is
//! therefore "everything acknowledged up to one interval before a crash; everything on a
//! clean shutdown". Clean sessions (expiry 0) are never written.
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
    /// Outbound exchanges in flight, by packet identifier.
    pub inflight: Vec<(u16, Inflight)>,
    /// Messages queued and not yet sent.
    pub queued: Vec<Delivery>,
    /// Inbound QoS 2 packet identifiers awaiting PUBREL.
    pub incoming_qos2: Vec<u16>,
}

/// Storage for state that survives a restart. Implemented over the registry by the hub;
/// [`MemoryPersistence`] is the default.
#[async_trait]
pub trait Persistence: Send + Sync + std::fmt::Debug + 'static {
    /// All retained messages.
    async fn load_retained(&self) -> Result<Vec<Message>, Error>;
    /// Stores (or replaces) the retained message of `msg.topic`.
    async fn save_retained(&self, msg: &Message) -> Result<(), Error>;
    /// Forgets the retained message of `topic`.
    async fn remove_retained(&self, topic: &str) -> Result<(), Error>;
    /// All persistent sessions.
    async fn load_sessions(&self) -> Result<Vec<StoredSession>, Error>;
    /// Stores (or replaces) a session.
    async fn save_session(&self, session: &StoredSession) -> Result<(), Error>;
    /// Forgets a session (expired, or replaced by a clean one).
    async fn remove_session(&self, client_id: &str) -> Result<(), Error>;
}

/// Keeps everything in memory: survives a `Broker` being dropped and rebuilt in the same
/// process (tests), not a process restart.
#[derive(Debug, Default)]
pub struct MemoryPersistence {
    retained: Mutex<HashMap<String, Message>>,
    sessions: Mutex<HashMap<String, StoredSession>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Persistence for MemoryPersistence {
    async fn load_retained(&self) -> Result<Vec<Message>, Error> {
        Ok(lock(&self.retained).values().cloned().collect())
    }
    async fn save_retained(&self, msg: &Message) -> Result<(), Error> {
        lock(&self.retained).insert(msg.topic.clone(), msg.clone());
        Ok(())
    }
    async fn remove_retained(&self, topic: &str) -> Result<(), Error> {
        lock(&self.retained).remove(topic);
        Ok(())
    }
    async fn load_sessions(&self) -> Result<Vec<StoredSession>, Error> {
        Ok(lock(&self.sessions).values().cloned().collect())
    }
    async fn save_session(&self, session: &StoredSession) -> Result<(), Error> {
        lock(&self.sessions).insert(session.client_id.clone(), session.clone());
        Ok(())
    }
    async fn remove_session(&self, client_id: &str) -> Result<(), Error> {
        lock(&self.sessions).remove(client_id);
        Ok(())
    }
}
