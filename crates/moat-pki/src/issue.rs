//! End-entity issuance policy. The hub decides every field; nothing is copied from a CSR
//! except its public key.

use crate::{Error, Serial};
use rcgen::{PublicKeyData, SigningKey};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// A device certificate to issue.
#[derive(Debug)]
pub struct DeviceCertRequest<'a> {
    /// Becomes the subject CN and a SAN URI `urn:moat:device:{id}` (the identity).
    pub device_id: &'a str,
    /// The device's public key (from its CSR, or a key the hub just generated).
    pub public_key: &'a dyn PublicKeyData,
    /// Fresh random serial, already reserved by the caller.
    pub serial: &'a Serial,
    /// Validity from `now` (backdated 5 minutes for clock skew).
    pub validity: Duration,
    /// URL of the issuing CA's CRL, written into the CRL distribution point.
    pub crl_url: Option<&'a str>,
    /// Subject O, if configured.
    pub organization: Option<&'a str>,
    /// Issue time.
    pub now: OffsetDateTime,
}

/// Issues a device certificate: CA:FALSE (critical basicConstraints), KU digitalSignature
/// (critical), EKU clientAuth only, AKI/SKI, CN = device id, SAN URI `urn:moat:device:{id}`,
/// CRL distribution point.
pub fn issue_device_cert(
    req: &DeviceCertRequest<'_>,
    issuer_cert: &CertificateDer<'_>,
    issuer_key: &dyn SigningKey,
) -> Result<CertificateDer<'static>, Error> {
    todo!()
}

/// The hub's own TLS server certificate.
#[derive(Debug)]
pub struct ServerCertRequest<'a> {
    /// Subject CN.
    pub common_name: &'a str,
    /// DNS names and IP addresses (each string parsed as an IP first, else a DNS name).
    pub names: &'a [String],
    /// The server's public key.
    pub public_key: &'a dyn PublicKeyData,
    /// Fresh random serial.
    pub serial: &'a Serial,
    /// Validity from `now`.
    pub validity: Duration,
    /// Issue time.
    pub now: OffsetDateTime,
}

/// Issues a server certificate: CA:FALSE, KU digitalSignature, EKU serverAuth only, SANs.
pub fn issue_server_cert(
    req: &ServerCertRequest<'_>,
    issuer_cert: &CertificateDer<'_>,
    issuer_key: &dyn SigningKey,
) -> Result<CertificateDer<'static>, Error> {
    todo!()
}
