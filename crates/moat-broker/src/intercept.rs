//! Publish interceptors: the hub decides about the messages of some topics before they are
//! routed ([`Broker::intercept`](crate::Broker::intercept)), e.g. to verify a signed message a
//! gateway relays and republish it on the device's topic.
//!
//! The decision is made while the publisher waits, so its acknowledgement says what happened:
//!
//! ```text
//!  PUBLISH (ACL ok, reserved user properties stripped)
//!     └─▶ Interceptor::intercept ──▶ Verdict::Route(message) ──▶ router ──▶ PUBACK 0x00
//!                                 └─▶ Verdict::Refuse(refused) ─────────▶ PUBACK refused.code (v5)
//! ```
//!
//! - The connection reads nothing more from its client until the verdict (so messages keep
//!   their order and a QoS 1/2 acknowledgement is sent in order); it still writes, obeys kicks
//!   and shutdown. A verdict that takes longer than
//!   [`BrokerConfig::intercept_timeout`](crate::BrokerConfig::intercept_timeout) is a refusal
//!   with 0x80 (Unspecified error).
//! - A refused QoS 1 message gets PUBACK with the verdict's reason code (and reason string if
//!   the client asked for problem information), QoS 2 the same in PUBREC; QoS 0 is dropped.
//!   MQTT 3.1.1 acknowledgements carry no code: a v3.1.1 publisher gets a plain PUBACK/PUBREC
//!   for a refused message, as for one the ACL denied (the refusal is counted).
//! - A routed message goes out as the interceptor made it (topic, payload, properties), with
//!   the publisher's client id for no-local; it is not held to the publisher's ACL again: the
//!   interceptor decided.
//! - A QoS 2 message is intercepted once: a resend of a packet id the session already holds
//!   is acknowledged without asking again.

use crate::persistence::Message;
use async_trait::async_trait;
use std::net::SocketAddr;

/// Who published an intercepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publisher {
    /// MQTT client id.
    pub client_id: String,
    /// Authenticated identity (the authority's [`Principal`](crate::Principal)).
    pub identity: String,
    /// Peer address.
    pub peer: SocketAddr,
}

/// Why an interceptor refused a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The v5 reason code of the PUBACK/PUBREC (≥ 0x80), e.g.
    /// [`reason::NOT_AUTHORIZED`](crate::reason::NOT_AUTHORIZED).
    pub code: u8,
    /// The reason string sent to v5 clients that asked for problem information.
    pub reason: String,
}

/// An interceptor's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Route this message (the one given, or another made from it; boxed: a message is
    /// large next to a refusal).
    Route(Box<Message>),
    /// Drop it; the publisher learns why (see the module docs).
    Refuse(Refused),
}

/// Decides about messages published on the topics it was registered for.
#[async_trait]
pub trait Interceptor: Send + Sync + std::fmt::Debug + 'static {
    /// Decides about `message` from `publisher`: already allowed by the publisher's ACL,
    /// reserved user properties stripped. The publisher's connection waits for the answer.
    async fn intercept(&self, publisher: &Publisher, message: Message) -> Verdict;
}
