//! Moat's MQTT hub: listeners, MQTT 3.1.1 and 5.0 sessions, the topic router, ACL
//! enforcement and live control (kicks on revocation).
//!
//! The broker knows nothing of SQL, certificates' meaning or device records: at CONNECT it
//! asks an [`Authority`] (implemented over `moat-core` by the binary) who the client is and
//! what it may do, and it obeys [`Broker::kick_identity`] when the hub revokes or disables a
//! device. TLS client-certificate *chain* verification happens in the rustls handshake with
//! the verifier the caller puts in the `ServerConfig`; the broker only hands the verified
//! chain to the authority.
//!
//! ```text
//!  accept ─▶ spawn ─▶ [TLS handshake ≤ timeout] ─▶ AwaitConnect ≤ timeout ─▶ Authority ─▶ Connected
//!                                                                              │            │
//!                                                   CONNACK refusal ◀──────────┘     router, ACL, QoS
//! ```
//!
//! What it is not: a bridge, a cluster member, or an auth plug-in host. Admission policy,
//! revocation state and certificate meaning stay in the hub; durable state goes through the
//! [`Persistence`] trait.
//!
//! Modules: [`codec`] (hand-written MQTT 3.1.1/5.0 packet codec, fuzzed), [`topic`] (names,
//! filters, ACL coverage), `router` (subscription tree, shared groups), `session` (queues,
//! in-flight windows), `retained`, [`persistence`], [`intercept`] (the hub's decision about
//! the messages of some topics before routing), `listener` (accept loops, TLS), and
//! `connection::{await_connect, connected}` (the two connection phases).

mod broker;
/// The MQTT packet codec ([`moat_mqtt`]), under its historical path.
pub use moat_mqtt as codec;
mod config;
mod connection;
mod error;
pub mod intercept;
mod listener;
pub mod persistence;
mod retained;
mod router;
mod session;
pub mod topic;

pub use broker::{Broker, MetricsSnapshot, SessionInfo};
pub use config::BrokerConfig;
pub use error::{Error, reason};
pub use intercept::{Interceptor, Publisher, Refused, Verdict};
pub use persistence::{Change, Durability, MemoryPersistence, Message, Persistence};
pub use router::Interest;
pub use topic::filter_covers;

use async_trait::async_trait;
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;

/// How the client reached us, decided before CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TLS with a client certificate (leaf first).
    MutualTls {
        /// The client's chain as presented (leaf first): verified by rustls on a full
        /// handshake, restored from the earlier session on a resumed one.
        chain: Vec<CertificateDer<'static>>,
        /// The handshake resumed an earlier TLS session, so the client-certificate verifier
        /// did not run on this connection: the [`Authority`] must check the chain itself.
        resumed: bool,
    },
    /// TLS without a client certificate.
    ServerTls,
    /// Plain TCP.
    Plain,
}

impl Transport {
    /// `mtls`, `tls` or `plain`.
    pub fn mode(&self) -> &'static str {
        match self {
            Transport::MutualTls { .. } => "mtls",
            Transport::ServerTls => "tls",
            Transport::Plain => "plain",
        }
    }
}

/// What the authority sees of a CONNECT.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// Transport and, for mutual TLS, the verified chain.
    pub transport: &'a Transport,
    /// Client id as sent (may be empty).
    pub client_id: &'a str,
    /// MQTT username, if any.
    pub username: Option<&'a str>,
    /// MQTT password, if any.
    pub password: Option<&'a [u8]>,
    /// Peer address.
    pub peer: SocketAddr,
}

/// Who got in and what they may do.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The identity (device id or application name); the client id must equal it, and an
    /// empty client id is assigned it.
    pub identity: String,
    /// What may be published and subscribed to (filters already expanded for this identity).
    pub acl: Arc<Acl>,
}

/// Why the authority refuses a CONNECT. Maps to CONNACK codes; never says which part of the
/// credential was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Unknown identity, wrong token, revoked, disabled, or a mode the policy forbids.
    /// v5 0x87 Not authorized / v3.1.1 5.
    #[error("not authorized")]
    NotAuthorized,
    /// Username/password missing or malformed for a mode that needs them.
    /// v5 0x86 Bad user name or password / v3.1.1 4.
    #[error("bad user name or password")]
    BadCredentials,
    /// The client id does not match the identity. v5 0x85 / v3.1.1 2.
    #[error("client identifier not valid")]
    ClientIdNotValid,
    /// Too many failed attempts. v5 0x8A Banned / v3.1.1 5.
    #[error("banned (rate limited)")]
    Banned,
    /// The hub cannot decide now (registry down). v5 0x88 / v3.1.1 3.
    #[error("server unavailable")]
    ServerUnavailable,
}

/// Topic permissions of a principal: MQTT filters (with `+` and `#`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    /// Topics that may be published to (a topic matching any filter is allowed).
    pub publish: Vec<String>,
    /// Filters that may be subscribed to (a subscription filter must be covered by one).
    pub subscribe: Vec<String>,
}

/// The hub's side of admission, implemented over `moat-core`.
#[async_trait]
pub trait Authority: Send + Sync + std::fmt::Debug + 'static {
    /// Decides a CONNECT. Called for every CONNECT, including over resumed TLS sessions, so a
    /// revocation cannot be bypassed by resumption.
    async fn authenticate(&self, req: ConnectRequest<'_>) -> Result<Principal, Refusal>;

    /// Called when a refusal or a suspicious event happens (failed auth, possible clone), for
    /// the audit log. Must not block.
    fn security_event(&self, event: SecurityEvent);
}

/// Carries messages between the nodes of a cluster; implemented by the hub over NATS. Every
/// message routed on this node (from a client, a will or the hub itself) is handed to
/// [`Fabric::forward`]; messages from other nodes come in through
/// [`Broker::deliver_from_peer`](crate::Broker::deliver_from_peer) and are not forwarded
/// again. Both calls must not block (they run under the broker's locks).
#[async_trait]
pub trait Fabric: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `message` to the other nodes that want it.
    fn forward(&self, message: &Arc<Message>);
    /// This node's sessions now have a subscription to `interest` (a filter, or a shared
    /// group's filter) (`wanted`), or no longer have any.
    fn interest(&self, interest: &Interest, wanted: bool);
    /// None when every interest change reported so far is in effect on the other nodes;
    /// else a future that resolves once it is (bounded in time). A SUBACK waits for it, so a
    /// message published anywhere after the SUBACK reaches the new subscription.
    fn settled(&self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;
    /// Before `client_id` (authenticated, connecting from `peer`) attaches here: makes this
    /// node the one it is on. The node it was on before closes its connection and hands
    /// its session over ([`Broker::release`](crate::Broker::release) there); the stored
    /// session, if any, comes back to be resumed here. Err: the cluster cannot decide now
    /// (the CONNECT is refused with Server unavailable).
    async fn claim(&self, client_id: &str, peer: SocketAddr) -> Result<Claim, ClaimError>;
}

/// A client id claimed for this node ([`Fabric::claim`]).
#[derive(Debug)]
pub struct Claim {
    /// Orders the claims of one client id across the cluster: a release for a later one
    /// closes this one.
    pub epoch: u64,
    /// The persistent session to resume here, as last stored (None: none stored, or this
    /// node has it already).
    pub session: Option<persistence::StoredSession>,
}

/// Why a client id could not be claimed.
#[derive(Debug, thiserror::Error)]
#[error("cannot claim the client id in the cluster: {0}")]
pub struct ClaimError(pub String);

/// Security-relevant events the broker reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityEvent {
    /// A CONNECT was refused.
    Refused {
        /// Claimed identity (client id or username), if any.
        claimed: Option<String>,
        /// Transport mode.
        mode: &'static str,
        /// Peer.
        peer: SocketAddr,
        /// Why.
        refusal: Refusal,
    },
    /// The same client id connected from a different address while connected: the older
    /// session was taken over.
    PossibleClone {
        /// Client id.
        client_id: String,
        /// Address of the session taken over.
        old_peer: SocketAddr,
        /// Address of the new one.
        new_peer: SocketAddr,
    },
    /// A client sent user properties only the hub may set
    /// ([`BrokerConfig::reserved_user_properties`]): they were removed, the message went on
    /// without them. Reported once per connection (the count is in the metrics).
    ReservedPropertiesStripped {
        /// Its identity.
        identity: String,
        /// Peer.
        peer: SocketAddr,
        /// The topic of the first such message.
        topic: String,
        /// The names removed from it.
        names: Vec<String>,
    },
    /// A client published outside its ACL. Reported once per connection (the count is in
    /// the metrics).
    PublishDenied {
        /// Its identity.
        identity: String,
        /// Peer.
        peer: SocketAddr,
        /// The topic of the first such message.
        topic: String,
    },
}
