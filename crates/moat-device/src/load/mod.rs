//! The MQTT load generator's building blocks.
//!
//! ```text
//!  Fleet (DIR/ID.crt + DIR/ID.key) ─▶ tls::client_config ─▶ client::connect ─▶ Reader / Writer
//!                                        (pinned hub CA)      TCP (source addr) ▸ TLS ▸ CONNECT ▸ CONNACK
//! ```
//!
//! [`hist::Histogram`] keeps latencies with bounded relative error; [`sys`] raises the
//! descriptor limit and reads CPU clocks and a peer process's RSS.

pub mod client;
pub mod fleet;
pub mod hist;
pub mod payload;
pub mod sys;
pub mod tls;

/// Errors of the load generator's library half.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed.
    #[error("i/o error")]
    Io(#[source] std::io::Error),
    /// rustls refused a configuration or a handshake.
    #[error("TLS error")]
    Tls(#[source] rustls::Error),
    /// A PEM file could not be read or holds nothing usable.
    #[error("PEM error in {path}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A file holds no certificate, or no trust anchor could be built from it.
    #[error("no usable certificate in {0}")]
    NoCertificate(std::path::PathBuf),
    /// The trust anchors could not be turned into a verifier.
    #[error("cannot build the server verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// The server sent bytes that are not MQTT.
    #[error("malformed packet from the server")]
    Decode(#[source] moat_mqtt::DecodeError),
    /// The server sent a packet this client does not expect here.
    #[error("unexpected packet type {0} from the server")]
    Unexpected(u8),
    /// The server refused the CONNECT with this CONNACK code.
    #[error("CONNACK refused with code 0x{0:02x}")]
    Refused(u8),
    /// The server refused a subscription with this SUBACK code (an ACL, usually).
    #[error("SUBACK refused with code 0x{0:02x}")]
    SubscriptionRefused(u8),
    /// The connection closed before the expected answer.
    #[error("connection closed by the server")]
    Closed,
    /// The answer did not come in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
