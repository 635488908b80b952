//! Reading certificates: PEM/DER conversion and a summary of the fields the registry keeps.

use crate::Error;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// What the registry and the CLI show about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial, lowercase hex (as [`crate::Serial::to_hex`]).
    pub serial: String,
    /// Subject, RFC 4514 string.
    pub subject: String,
    /// Issuer, RFC 4514 string.
    pub issuer: String,
    /// Subject CN, if any.
    pub common_name: Option<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// SHA-256 of the whole DER certificate, lowercase hex.
    pub fingerprint_sha256: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex (same key ⇒ same value).
    pub spki_sha256: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

/// Summarises a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, Error> {
    todo!()
}

/// All `CERTIFICATE` blocks of a PEM text, in order, as DER. Refuses input with none.
/// Also accepts a single DER certificate.
pub fn parse_cert_chain_pem(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    todo!()
}

/// The first PEM block with label `label` as DER; if `input` is not PEM, returns it as is.
pub fn pem_to_der(input: &[u8], label: &str) -> Result<Vec<u8>, Error> {
    todo!()
}

/// `-----BEGIN CERTIFICATE-----` PEM of a DER certificate.
pub fn pem_of_cert(der: &[u8]) -> String {
    todo!()
}

/// `-----BEGIN X509 CRL-----` PEM of a DER CRL.
pub fn pem_of_crl(der: &[u8]) -> String {
    todo!()
}
