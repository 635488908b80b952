//! Chain validation of client certificates (the same checks the MQTT hub's TLS layer runs,
//! via webpki, so `moat cert explain` and the broker agree), and CA proof of possession.

use crate::Error;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// A CA whose client certificates the hub trusts.
#[derive(Clone, Debug)]
pub struct TrustedCa {
    /// Registry name of the CA.
    pub name: String,
    /// Its certificate (a trust anchor).
    pub cert: CertificateDer<'static>,
    /// Certificates between it and the leaf that the hub knows (e.g. the root→device CA
    /// intermediate is passed as the device CA itself being the anchor; usually empty).
    pub intermediates: Vec<CertificateDer<'static>>,
}

/// Why a chain is refused, one variant per cause an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Not a parsable certificate.
    #[error("not a valid certificate")]
    Malformed,
    /// Its validity ended.
    #[error("certificate expired")]
    Expired,
    /// Its validity has not started.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// It does not chain to any trusted CA (unknown or unregistered issuer, or self-signed).
    #[error("certificate does not chain to a trusted CA")]
    UnknownIssuer,
    /// It lacks the clientAuth EKU (e.g. a server-auth-only certificate).
    #[error("certificate is not valid for client authentication (EKU)")]
    WrongUsage,
    /// A signature in the chain does not verify.
    #[error("a signature in the chain does not verify")]
    BadSignature,
    /// Anything else webpki refuses (the text is webpki's).
    #[error("certificate refused: {0}")]
    Other(String),
}

/// Verifies `leaf` (+ `extra_chain` the client sent) for client authentication at `now`
/// against `trusted`; returns the index of the CA in `trusted` it chains to.
pub fn verify_client_chain(
    leaf: &CertificateDer<'_>,
    extra_chain: &[CertificateDer<'_>],
    trusted: &[TrustedCa],
    now: OffsetDateTime,
) -> Result<usize, ChainError> {
    todo!()
}

/// CA registration proof of possession: `verification_cert` must have CN = `code` and carry a
/// signature that verifies under `ca_cert`'s public key (so whoever registers the CA holds
/// its key). Also checks `ca_cert` is a CA (basicConstraints CA:TRUE).
pub fn check_proof_of_possession(
    ca_cert: &[u8],
    verification_cert: &[u8],
    code: &str,
) -> Result<(), Error> {
    todo!()
}
