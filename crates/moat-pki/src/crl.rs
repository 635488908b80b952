//! CRLs (RFC 5280 §5), signed by the CA whose certificates they list.

use crate::{Error, Serial};
use rcgen::SigningKey;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// RFC 5280 reason codes we accept from admins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The device's private key is (or may be) compromised.
    KeyCompromise,
    /// The CA's key is compromised.
    CaCompromise,
    /// Owner or affiliation changed.
    AffiliationChanged,
    /// Replaced by a newer certificate.
    Superseded,
    /// The device is retired.
    CessationOfOperation,
    /// The device's privileges were withdrawn.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// Parses the names above (snake_case, or kebab-case, or RFC camelCase, any case).
    pub fn parse(s: &str) -> Option<Self> {
        todo!()
    }
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        todo!()
    }
}

/// One revoked certificate.
#[derive(Clone, Debug)]
pub struct RevokedEntry {
    /// Its serial.
    pub serial: Serial,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

/// Everything a CRL states.
#[derive(Debug)]
pub struct CrlInput<'a> {
    /// Monotonically increasing per CA (the registry hands it out).
    pub number: u64,
    /// Issue time.
    pub this_update: OffsetDateTime,
    /// When the next CRL will be out at the latest.
    pub next_update: OffsetDateTime,
    /// The revoked certificates.
    pub entries: &'a [RevokedEntry],
    /// The URL the CRL is published at (issuing distribution point), if any.
    pub url: Option<&'a str>,
}

/// Builds and signs a CRL (v2, AKI, CRL number, IDP when a URL is given). DER.
pub fn build_crl(
    input: &CrlInput<'_>,
    issuer_cert: &CertificateDer<'_>,
    issuer_key: &dyn SigningKey,
) -> Result<Vec<u8>, Error> {
    todo!()
}
