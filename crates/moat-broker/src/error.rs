//! The broker's error type and the one place where errors and refusals become MQTT codes.

use crate::Refusal;
use crate::codec::{DecodeError, Version};
use std::io;

/// v5 reason codes this broker sends (MQTT 5.0 §2.4).
pub mod reason {
    /// Success / normal disconnection / granted QoS 0.
    pub const SUCCESS: u8 = 0x00;
    /// Disconnect with will message (client → server).
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    /// No subscription existed (UNSUBACK).
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// Unspecified error.
    pub const UNSPECIFIED: u8 = 0x80;
    /// Malformed packet.
    pub const MALFORMED: u8 = 0x81;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// Unsupported protocol version (CONNACK).
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    /// Client identifier not valid.
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    /// Bad user name or password.
    pub const BAD_CREDENTIALS: u8 = 0x86;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// Server unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    /// Banned.
    pub const BANNED: u8 = 0x8A;
    /// Server shutting down.
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    /// Bad authentication method.
    pub const BAD_AUTH_METHOD: u8 = 0x8C;
    /// Keep alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    /// Session taken over.
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    /// Topic filter invalid.
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// Topic name invalid.
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// Packet identifier not found.
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    /// Receive maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    /// Topic alias invalid.
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    /// Packet too large.
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    /// Quota exceeded.
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// Administrative action.
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    /// Shared subscriptions not supported (unused: they are).
    pub const SHARED_NOT_SUPPORTED: u8 = 0x9E;
}

/// Why a connection ended abnormally or a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading from or writing to the socket failed.
    #[error("socket I/O failed")]
    Io(#[source] io::Error),
    /// The TLS handshake failed (bad or revoked certificate, protocol mismatch).
    #[error("TLS handshake failed")]
    Tls(#[source] io::Error),
    /// The TLS handshake did not finish within `tls_handshake_timeout`.
    #[error("TLS handshake timed out")]
    TlsHandshakeTimeout,
    /// No complete CONNECT (and admission decision) within `connect_timeout`.
    #[error("no CONNECT in time")]
    ConnectTimeout,
    /// The peer closed the connection without DISCONNECT.
    #[error("connection closed by peer")]
    PeerClosed,
    /// The bytes received are not a valid packet.
    #[error("malformed packet")]
    Decode(#[from] DecodeError),
    /// An inbound packet is bigger than the broker's maximum packet size.
    #[error("packet of {size} bytes exceeds the {max}-byte limit")]
    PacketTooLarge {
        /// Announced size.
        size: usize,
        /// Limit in force.
        max: usize,
    },
    /// Nothing received for 1.5 × keep alive.
    #[error("keep alive timeout")]
    KeepAliveTimeout,
    /// A v5 topic alias is 0, above the maximum, or unknown.
    #[error("topic alias invalid")]
    TopicAliasInvalid,
    /// The client has more unacknowledged QoS 2 publishes than the receive maximum.
    #[error("receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// A well-formed packet broke a protocol rule.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The connection was closed by the hub: revocation, `session kick`, or a takeover.
    #[error("closed by the hub (reason 0x{0:02x})")]
    Kicked(u8),
    /// The broker is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// The authority (or a kick racing the CONNECT) refused the client; CONNACK was sent.
    #[error("CONNECT refused")]
    Refused(#[source] Refusal),
    /// A [`crate::Persistence`] back end failed.
    #[error("persistence back end failed")]
    Persistence(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A v3.1.1 client sent a QoS 1/2 message while the hub cannot store one (its last write
    /// of durable state failed): v3.1.1 has no refusing PUBACK, so the connection closes
    /// and the client sends it again later.
    #[error("the hub cannot store messages now (its storage is failing); try again later")]
    StorageUnavailable,
}

impl Error {
    /// The v5 DISCONNECT reason code to send before closing, if one should be sent.
    pub fn disconnect_reason(&self) -> Option<u8> {
        Some(match self {
            Error::Decode(e) if e.is_protocol_error() => reason::PROTOCOL_ERROR,
            Error::Decode(_) => reason::MALFORMED,
            Error::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            Error::KeepAliveTimeout => reason::KEEP_ALIVE_TIMEOUT,
            Error::TopicAliasInvalid => reason::TOPIC_ALIAS_INVALID,
            Error::ReceiveMaximumExceeded => reason::RECEIVE_MAXIMUM_EXCEEDED,
            Error::Protocol(_) => reason::PROTOCOL_ERROR,
            Error::Kicked(code) => *code,
            Error::ShuttingDown => reason::SERVER_SHUTTING_DOWN,
            Error::Persistence(_) => reason::UNSPECIFIED,
            Error::StorageUnavailable => reason::QUOTA_EXCEEDED,
            Error::Io(_)
            | Error::Tls(_)
            | Error::TlsHandshakeTimeout
            | Error::ConnectTimeout
            | Error::PeerClosed
            | Error::Refused(_) => return None,
        })
    }

    /// True when the end of the connection is not the client's fault (for log levels).
    pub fn is_benign(&self) -> bool {
        matches!(
            self,
            Error::PeerClosed | Error::Kicked(_) | Error::ShuttingDown | Error::Io(_)
        )
    }
}

impl Refusal {
    /// The CONNACK code for this refusal in `version`.
    pub fn connack_code(self, version: Version) -> u8 {
        match (self, version) {
            (Refusal::NotAuthorized, Version::V5) => reason::NOT_AUTHORIZED,
            (Refusal::BadCredentials, Version::V5) => reason::BAD_CREDENTIALS,
            (Refusal::ClientIdNotValid, Version::V5) => reason::CLIENT_ID_NOT_VALID,
            (Refusal::Banned, Version::V5) => reason::BANNED,
            (Refusal::ServerUnavailable, Version::V5) => reason::SERVER_UNAVAILABLE,
            (Refusal::NotAuthorized | Refusal::Banned, Version::V311) => 5,
            (Refusal::BadCredentials, Version::V311) => 4,
            (Refusal::ClientIdNotValid, Version::V311) => 2,
            (Refusal::ServerUnavailable, Version::V311) => 3,
        }
    }
}

/// A refused publish or subscription: v5 code, or the v3.1.1 SUBACK failure code.
pub(crate) fn suback_failure(version: Version, v5_code: u8) -> u8 {
    match version {
        Version::V5 => v5_code,
        Version::V311 => 0x80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes() {
        let table = [
            (Refusal::NotAuthorized, 0x87, 5),
            (Refusal::BadCredentials, 0x86, 4),
            (Refusal::ClientIdNotValid, 0x85, 2),
            (Refusal::Banned, 0x8A, 5),
            (Refusal::ServerUnavailable, 0x88, 3),
        ];
        for (r, v5, v3) in table {
            assert_eq!(r.connack_code(Version::V5), v5);
            assert_eq!(r.connack_code(Version::V311), v3);
        }
    }
}
