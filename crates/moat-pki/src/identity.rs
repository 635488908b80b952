//! Identity rules: where in a certificate the device identity is read from. Identity comes
//! from the subject/SAN, never from the serial or fingerprint, so certificates can rotate.

use crate::Error;

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
        todo!()
    }
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        todo!()
    }
}

/// The identity of a (DER) certificate under `rule`.
pub fn identity_of(cert_der: &[u8], rule: IdentityRule) -> Result<String, Error> {
    todo!()
}
