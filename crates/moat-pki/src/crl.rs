//! CRLs (RFC 5280 §5), signed by the CA whose certificates they list.

use crate::info::parse_cert;
use crate::issue::issuer_of;
use crate::{Error, Serial};
use rcgen::{
    CertificateRevocationListParams, CrlDistributionPoint, CrlIssuingDistributionPoint,
    KeyIdMethod, RevokedCertParams, SerialNumber, SigningKey,
};
use rustls_pki_types::CertificateDer;
use time::{OffsetDateTime, UtcOffset};
use x509_parser::extensions::ParsedExtension;

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
        // Fold snake_case, kebab-case and camelCase onto one form: lowercase, no separators.
        let folded: String = s
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().replace('_', "") == folded)
    }
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key_compromise",
            Self::CaCompromise => "ca_compromise",
            Self::AffiliationChanged => "affiliation_changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation_of_operation",
            Self::PrivilegeWithdrawn => "privilege_withdrawn",
        }
    }

    /// Every reason, in RFC 5280 code order.
    pub const ALL: [Self; 7] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::PrivilegeWithdrawn,
    ];

    /// The CRL entry reasonCode to write: none for `Unspecified` (RFC 5280 §5.3.1: the
    /// unspecified code SHOULD be absent).
    fn to_rcgen(self) -> Option<rcgen::RevocationReason> {
        use rcgen::RevocationReason as R;
        Some(match self {
            Self::Unspecified => return None,
            Self::KeyCompromise => R::KeyCompromise,
            Self::CaCompromise => R::CaCompromise,
            Self::AffiliationChanged => R::AffiliationChanged,
            Self::Superseded => R::Superseded,
            Self::CessationOfOperation => R::CessationOfOperation,
            Self::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        })
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
    let issuer = issuer_of(issuer_cert, issuer_key)?;
    let params = CertificateRevocationListParams {
        this_update: input.this_update.to_offset(UtcOffset::UTC),
        next_update: input.next_update.to_offset(UtcOffset::UTC),
        crl_number: SerialNumber::from_slice(&minimal_be(input.number)),
        issuing_distribution_point: input.url.map(|url| CrlIssuingDistributionPoint {
            distribution_point: CrlDistributionPoint {
                uris: vec![url.to_owned()],
            },
            scope: None,
        }),
        revoked_certs: input
            .entries
            .iter()
            .map(|e| RevokedCertParams {
                serial_number: e.serial.to_rcgen(),
                revocation_time: e.revoked_at.to_offset(UtcOffset::UTC),
                reason_code: e.reason.to_rcgen(),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: issuer_key_id(issuer_cert)?,
    };
    Ok(params.signed_by(&issuer)?.der().to_vec())
}

/// Big-endian bytes of `n` without leading zeros (one byte for zero).
fn minimal_be(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    bytes[start..].to_vec()
}

/// The AKI the CRL must carry: the issuer certificate's SKI when it has one (so relying
/// parties match it), else the default SHA-256 key id rcgen would compute.
fn issuer_key_id(issuer_cert: &CertificateDer<'_>) -> Result<KeyIdMethod, Error> {
    let cert = parse_cert(issuer_cert)?;
    Ok(cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ki) => {
                Some(KeyIdMethod::PreSpecified(ki.0.to_vec()))
            }
            _ => None,
        })
        .unwrap_or(KeyIdMethod::Sha256))
}
