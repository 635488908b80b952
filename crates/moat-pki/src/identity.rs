//! Identity rules: where in a certificate the device identity is read from. Identity comes
//! from the subject/SAN, never from the serial or fingerprint, so certificates can rotate.

use crate::Error;
use crate::info::{common_name, parse_cert};
use x509_parser::extensions::GeneralName;

/// The SAN URI prefix hub-issued certificates carry before the device id.
pub const DEVICE_URI_PREFIX: &str = "urn:moat:device:";

/// The SAN URI prefix of factory station certificates (never stripped: a station's URI is
/// not a device identity).
pub const STATION_URI_PREFIX: &str = "urn:moat:station:";

/// Which field of a certificate names the device. Hub-issued certificates use `Cn` (their CN
/// and SAN URI agree); a registered CA chooses one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityRule {
    /// The subject common name.
    Cn,
    /// The first DNS name in the SAN.
    SanDns,
    /// The first URI in the SAN; `urn:moat:device:ID` yields `ID`, any other URI is taken whole.
    SanUri,
}

impl IdentityRule {
    /// Parses `cn`, `san-dns`, `san-uri`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cn" => Some(Self::Cn),
            "san-dns" => Some(Self::SanDns),
            "san-uri" => Some(Self::SanUri),
            _ => None,
        }
    }
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cn => "cn",
            Self::SanDns => "san-dns",
            Self::SanUri => "san-uri",
        }
    }
}

/// The identity of a (DER) certificate under `rule`.
pub fn identity_of(cert_der: &[u8], rule: IdentityRule) -> Result<String, Error> {
    let cert = parse_cert(cert_der)?;
    let found = match rule {
        IdentityRule::Cn => common_name(cert.subject()),
        IdentityRule::SanDns | IdentityRule::SanUri => {
            let san = cert
                .subject_alternative_name()
                .map_err(|e| Error::Malformed {
                    what: "certificate",
                    detail: e.to_string(),
                })?;
            san.and_then(|san| {
                san.value
                    .general_names
                    .iter()
                    .find_map(|name| match (rule, name) {
                        (IdentityRule::SanDns, GeneralName::DNSName(dns)) => {
                            Some((*dns).to_owned())
                        }
                        (IdentityRule::SanUri, GeneralName::URI(uri)) => Some(
                            uri.strip_prefix(DEVICE_URI_PREFIX)
                                .unwrap_or(uri)
                                .to_owned(),
                        ),
                        _ => None,
                    })
            })
        }
    };
    found_identity(found, rule)
}

/// [`identity_of`] for a certificate already read with [`crate::cert_info`]: under the CN
/// rule its common name is the identity, with no second parse (CONNECT reads every
/// certificate once).
pub fn identity_of_info(
    info: &crate::CertInfo,
    cert_der: &[u8],
    rule: IdentityRule,
) -> Result<String, Error> {
    match rule {
        IdentityRule::Cn => found_identity(info.common_name.clone(), rule),
        IdentityRule::SanDns | IdentityRule::SanUri => identity_of(cert_der, rule),
    }
}

/// The identity found under `rule`, if any and not empty.
fn found_identity(found: Option<String>, rule: IdentityRule) -> Result<String, Error> {
    match found {
        Some(id) if !id.is_empty() => Ok(id),
        _ => Err(Error::NoIdentity(match rule {
            IdentityRule::Cn => "subject CN",
            IdentityRule::SanDns => "SAN DNS name",
            IdentityRule::SanUri => "SAN URI",
        })),
    }
}
