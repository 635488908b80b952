//! Chain validation of client certificates (the same checks the MQTT hub's TLS layer runs,
//! via webpki, so `moat cert explain` and the broker agree), and CA proof of possession.

use crate::Error;
use crate::info::{common_name, is_ca, parse_cert};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::error::X509Error;

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
    let ee = EndEntityCert::try_from(leaf).map_err(chain_error)?;
    // One anchor per trusted CA that parses; `owners[i]` is the index in `trusted` of
    // `anchors[i]`. A registered CA that webpki cannot read anchors nothing.
    let mut anchors = Vec::with_capacity(trusted.len());
    let mut owners = Vec::with_capacity(trusted.len());
    for (i, ca) in trusted.iter().enumerate() {
        if let Ok(anchor) = webpki::anchor_from_trusted_cert(&ca.cert) {
            anchors.push(anchor);
            owners.push(i);
        }
    }
    if anchors.is_empty() {
        return Err(ChainError::UnknownIssuer);
    }
    let intermediates: Vec<CertificateDer<'_>> = trusted
        .iter()
        .flat_map(|ca| ca.intermediates.iter())
        .chain(extra_chain)
        .map(|c| CertificateDer::from(c.as_ref()))
        .collect();
    let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(chain_error)?;
    anchors
        .iter()
        .position(|a| std::ptr::eq(a, path.anchor()))
        .and_then(|i| owners.get(i).copied())
        .ok_or_else(|| ChainError::Other("verified path ends at an unknown anchor".into()))
}

/// One place that turns webpki's reasons into the ones an operator acts on.
#[allow(deprecated)] // webpki still returns the context-free variants in some paths
fn chain_error(e: webpki::Error) -> ChainError {
    use webpki::Error as W;
    match e {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => ChainError::Malformed,
        W::CertExpired { .. } => ChainError::Expired,
        W::CertNotValidYet { .. } => ChainError::NotYetValid,
        W::UnknownIssuer => ChainError::UnknownIssuer,
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => ChainError::WrongUsage,
        W::InvalidSignatureForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | W::UnsupportedSignatureAlgorithm
        | W::UnsupportedSignatureAlgorithmContext(_)
        | W::SignatureAlgorithmMismatch => ChainError::BadSignature,
        other => ChainError::Other(other.to_string()),
    }
}

/// CA registration proof of possession: `verification_cert` must have CN = `code` and carry a
/// signature that verifies under `ca_cert`'s public key (so whoever registers the CA holds
/// its key). Also checks `ca_cert` is a CA (basicConstraints CA:TRUE).
pub fn check_proof_of_possession(
    ca_cert: &[u8],
    verification_cert: &[u8],
    code: &str,
) -> Result<(), Error> {
    let ca = parse_cert(ca_cert)?;
    if !is_ca(&ca)? {
        return Err(Error::NotACa);
    }
    let verification = parse_cert(verification_cert)?;
    if common_name(verification.subject()).as_deref() != Some(code) {
        return Err(Error::VerificationCodeMismatch);
    }
    match verification.verify_signature(Some(ca.public_key())) {
        Ok(()) => Ok(()),
        // We cannot check this signature at all: say so rather than "not signed".
        Err(e @ X509Error::SignatureUnsupportedAlgorithm) => Err(Error::Malformed {
            what: "certificate",
            detail: format!("{e} ({})", verification.signature_algorithm.algorithm),
        }),
        Err(_does_not_verify) => Err(Error::VerificationNotSigned),
    }
}
