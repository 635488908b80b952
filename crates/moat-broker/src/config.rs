//! Broker limits. Plain data with safe defaults; the hub maps its TOML config onto it.

use crate::persistence::Durability;
use std::time::Duration;

/// Limits and timeouts of the broker. Every field has a safe default ([`Default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Time allowed from TCP accept (or TLS handshake end) to a decided CONNECT, including
    /// the authority's decision. Stops idle sockets from holding a connection slot.
    pub connect_timeout: Duration,
    /// Time allowed for the TLS handshake, so slow or stalled handshakes cannot pile up:
    /// for the ClientHello to arrive, and again for the rest once a handshake slot is taken.
    pub tls_handshake_timeout: Duration,
    /// TLS handshakes past their ClientHello at once (all TLS listeners). The ClientHello is
    /// read without a slot, so a peer trickling bytes never holds one; further handshakes
    /// wait for a slot in arrival order. In a reconnect storm this finishes the handshakes
    /// already started instead of starting thousands at once that all finish late (and time
    /// out, and are retried): admission is paced, not failed.
    pub max_concurrent_handshakes: usize,
    /// Longest wait for a handshake slot before the connection is dropped.
    pub handshake_slot_timeout: Duration,
    /// Largest packet accepted from a client (whole packet, as v5 counts it). Bigger ones
    /// close the connection (v5 DISCONNECT 0x95) before their body is buffered. Advertised
    /// to v5 clients in CONNACK.
    pub max_packet_size: usize,
    /// Concurrent connections per broker (all listeners), counted from accept; further
    /// connections wait in the kernel backlog.
    pub max_connections: usize,
    /// In-flight window both ways: the Receive Maximum advertised to v5 clients (unanswered
    /// inbound QoS 2) and the cap on unacknowledged outbound QoS 1/2 messages per client
    /// (the client's own Receive Maximum lowers it further).
    pub receive_maximum: u16,
    /// Messages queued per session beyond the in-flight window. When full, a new message
    /// evicts the oldest queued QoS 0 message, or is dropped if there is none; routing never
    /// waits for a slow subscriber (but see `publisher_backpressure`).
    pub max_queued_messages: usize,
    /// Bytes (topic plus payload) queued per session beyond the in-flight window, under the
    /// same policy as `max_queued_messages`: whichever limit is reached first applies. With
    /// the in-flight window (`receive_maximum` messages) this bounds what one session holds
    /// in memory, whatever its client does. At least `max_packet_size`.
    pub max_queued_bytes: usize,
    /// How long a publisher's reads may pause while a subscriber it just sent to is
    /// congested (queue at least half full). Pausing hands the CPU to the subscriber that is
    /// behind instead of reading messages that its queue would drop. Each time this passes,
    /// a subscriber that drained at least a quarter of its queue meanwhile is busy and is
    /// waited for again; one that did not is marked stalled: publishers stop waiting for it
    /// (its overflow is dropped by the queue policy) until it catches up, so one stuck
    /// subscriber cannot slow the others. Zero disables the pause.
    pub publisher_backpressure: Duration,
    /// Highest keep alive accepted, in seconds. v5 clients asking for more (or for 0) get a
    /// Server Keep Alive of this value; v3.1.1 clients keep theirs.
    pub max_keep_alive: u16,
    /// Highest session expiry interval granted, in seconds; v3.1.1 persistent sessions
    /// (clean session = 0) get exactly this.
    pub max_session_expiry: u32,
    /// Topic aliases a v5 client may use towards the broker (0 disables them).
    pub topic_alias_maximum: u16,
    /// Retained topics held at most; retained messages for new topics beyond this are
    /// routed but not retained.
    pub max_retained_messages: usize,
    /// Largest payload retained (bytes).
    pub max_retained_payload: usize,
    /// Period of the housekeeping task: session expiry, delayed wills, and, with
    /// [`Durability::Periodic`], the writes to [`Persistence`](crate::Persistence) (then also
    /// the bound on acknowledged state a crash loses).
    pub housekeeping_interval: Duration,
    /// When acknowledged state is durable (see [`crate::persistence`]).
    pub durability: Durability,
    /// How long a closing connection may take to flush its last packets (DISCONNECT).
    pub close_flush_timeout: Duration,
    /// How long `serve_*` waits for connection tasks after shutdown before returning.
    pub shutdown_grace: Duration,
    /// Longest wait for a publish interceptor's verdict ([`crate::intercept`]); past it the
    /// message is refused (0x80) and the publisher's connection reads on.
    pub intercept_timeout: Duration,
    /// Prefixes of MQTT 5 user property names that only the hub may set (e.g. `moat-`, the
    /// identity properties of verified relayed messages): removed from every client PUBLISH
    /// and will before it is checked, intercepted or routed, so no subscriber sees one a
    /// client made up. Empty: none.
    pub reserved_user_properties: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            connect_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 1024,
            handshake_slot_timeout: Duration::from_secs(60),
            max_packet_size: 256 * 1024,
            max_connections: 50_000,
            receive_maximum: 32,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            publisher_backpressure: Duration::from_millis(250),
            max_keep_alive: 1200,
            max_session_expiry: 7 * 24 * 3600,
            topic_alias_maximum: 16,
            max_retained_messages: 100_000,
            max_retained_payload: 64 * 1024,
            housekeeping_interval: Duration::from_millis(250),
            durability: Durability::Sync,
            close_flush_timeout: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(5),
            intercept_timeout: Duration::from_secs(10),
            reserved_user_properties: Vec::new(),
        }
    }
}

impl BrokerConfig {
    /// Removes the user properties whose name has a reserved prefix; returns the names
    /// removed.
    pub(crate) fn strip_reserved(&self, user: &mut Vec<(String, String)>) -> Vec<String> {
        if self.reserved_user_properties.is_empty() {
            return Vec::new();
        }
        let mut removed = Vec::new();
        user.retain(|(name, _)| {
            let reserved = self
                .reserved_user_properties
                .iter()
                .any(|p| name.starts_with(p.as_str()));
            if reserved {
                removed.push(name.clone());
            }
            !reserved
        });
        removed
    }

    pub(crate) fn queue_limits(&self) -> crate::session::QueueLimits {
        crate::session::QueueLimits {
            messages: self.max_queued_messages,
            bytes: self.max_queued_bytes.max(self.max_packet_size),
        }
    }
}
