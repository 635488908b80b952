//! Building the hub's CA certificates.

use crate::{Error, Serial};
use rcgen::{PublicKeyData, SigningKey};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// Names and validity of a CA the hub creates.
#[derive(Clone, Debug)]
pub struct CaProfile {
    /// Subject CN.
    pub common_name: String,
    /// Subject O, if any.
    pub organization: Option<String>,
    /// How long the certificate is valid from `now` (backdated 5 minutes for clock skew).
    pub validity: Duration,
}

/// A self-signed root: CA:TRUE, pathlen 1, KU keyCertSign + cRLSign (critical), SKI.
pub fn new_root_ca(
    profile: &CaProfile,
    key: &dyn SigningKey,
    serial: &Serial,
    now: OffsetDateTime,
) -> Result<CertificateDer<'static>, Error> {
    todo!()
}

/// An intermediate signed by `issuer` (its DER + key): CA:TRUE, pathlen 0, KU keyCertSign +
/// cRLSign, AKI/SKI, and a CRL distribution point `crl_url` (the issuer's CRL) when given.
pub fn new_intermediate_ca(
    profile: &CaProfile,
    public_key: &dyn PublicKeyData,
    serial: &Serial,
    issuer_cert: &CertificateDer<'_>,
    issuer_key: &dyn SigningKey,
    crl_url: Option<&str>,
    now: OffsetDateTime,
) -> Result<CertificateDer<'static>, Error> {
    todo!()
}

