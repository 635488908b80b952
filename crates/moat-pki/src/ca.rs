//! Building the hub's CA certificates.

use crate::issue::{base_params, crl_dp, issuer_of, subject};
use crate::{Error, Serial};
use rcgen::{BasicConstraints, IsCa, KeyUsagePurpose, PublicKeyData, SigningKey};
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

fn ca_params(
    profile: &CaProfile,
    serial: &Serial,
    now: OffsetDateTime,
    path_len: u8,
) -> rcgen::CertificateParams {
    let mut params = base_params(serial, now, profile.validity);
    params.distinguished_name = subject(&profile.common_name, profile.organization.as_deref());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A self-signed root: CA:TRUE, pathlen 1, KU keyCertSign + cRLSign (critical), SKI.
pub fn new_root_ca(
    profile: &CaProfile,
    key: &dyn SigningKey,
    serial: &Serial,
    now: OffsetDateTime,
) -> Result<CertificateDer<'static>, Error> {
    let mut params = ca_params(profile, serial, now, 1);
    // A self-signed certificate's AKI would only repeat its SKI.
    params.use_authority_key_identifier_extension = false;
    let cert = params.self_signed(&key)?;
    Ok(cert.der().clone())
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
    let issuer = issuer_of(issuer_cert, issuer_key)?;
    let mut params = ca_params(profile, serial, now, 0);
    params.crl_distribution_points = crl_dp(crl_url);
    let cert = params.signed_by(&public_key, &issuer)?;
    Ok(cert.der().clone())
}
