//! End-entity issuance policy. The hub decides every field; nothing is copied from a CSR
//! except its public key.

use crate::identity::{DEVICE_URI_PREFIX, STATION_URI_PREFIX};
use crate::info::{is_ca, parse_cert};
use crate::{Error, Serial};
use rcgen::{
    CertificateParams, CrlDistributionPoint, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyUsagePurpose, PublicKeyData, SanType, SigningKey,
};
use rustls_pki_types::CertificateDer;
use std::fmt;
use time::{Duration, OffsetDateTime, UtcOffset};

/// How far `not_before` is set before the issue time, for devices whose clocks run behind.
pub const BACKDATE: Duration = Duration::minutes(5);

/// A device (or station) certificate to issue.
pub struct DeviceCertRequest<'a> {
    /// Becomes the subject CN and a SAN URI `urn:moat:device:{id}` (the identity); the
    /// station name for [`issue_station_cert`].
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
    client_cert(req, DEVICE_URI_PREFIX, issuer_cert, issuer_key)
}

/// Issues a factory station's certificate (the credential an EST enrollment station presents
/// over mutual TLS): the same profile as a device certificate, with CN = station name and SAN
/// URI `urn:moat:station:{name}`, so nothing reads it as a device. `req.device_id` carries the
/// station name. The registry is what tells the hub it is a station (moat-core checks it on
/// both sides: EST refuses device certificates, MQTT refuses station certificates).
pub fn issue_station_cert(
    req: &DeviceCertRequest<'_>,
    issuer_cert: &CertificateDer<'_>,
    issuer_key: &dyn SigningKey,
) -> Result<CertificateDer<'static>, Error> {
    client_cert(req, STATION_URI_PREFIX, issuer_cert, issuer_key)
}

fn client_cert(
    req: &DeviceCertRequest<'_>,
    uri_prefix: &str,
    issuer_cert: &CertificateDer<'_>,
    issuer_key: &dyn SigningKey,
) -> Result<CertificateDer<'static>, Error> {
    let issuer = issuer_of(issuer_cert, issuer_key)?;
    let mut params = base_params(req.serial, req.now, req.validity);
    params.distinguished_name = subject(req.device_id, req.organization);
    params.subject_alt_names = vec![SanType::URI(
        format!("{uri_prefix}{}", req.device_id).try_into()?,
    )];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.crl_distribution_points = crl_dp(req.crl_url);
    let cert = params.signed_by(&req.public_key, &issuer)?;
    Ok(cert.der().clone())
}

/// The hub's own TLS server certificate.
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
    let issuer = issuer_of(issuer_cert, issuer_key)?;
    // `new` parses each name as an IP address first, else as a DNS name.
    let mut params = CertificateParams::new(req.names.to_vec())?;
    let base = base_params(req.serial, req.now, req.validity);
    params.serial_number = base.serial_number;
    params.not_before = base.not_before;
    params.not_after = base.not_after;
    params.use_authority_key_identifier_extension = true;
    params.distinguished_name = subject(req.common_name, None);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&req.public_key, &issuer)?;
    Ok(cert.der().clone())
}

impl fmt::Debug for DeviceCertRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCertRequest")
            .field("device_id", &self.device_id)
            .field("public_key", &KeyDebug(self.public_key))
            .field("serial", &self.serial)
            .field("validity", &self.validity)
            .field("crl_url", &self.crl_url)
            .field("organization", &self.organization)
            .field("now", &self.now)
            .finish()
    }
}

impl fmt::Debug for ServerCertRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertRequest")
            .field("common_name", &self.common_name)
            .field("names", &self.names)
            .field("public_key", &KeyDebug(self.public_key))
            .field("serial", &self.serial)
            .field("validity", &self.validity)
            .field("now", &self.now)
            .finish()
    }
}

/// A public key shown as its algorithm and the hex of its key bytes (public, not secret).
struct KeyDebug<'a>(&'a dyn PublicKeyData);

impl fmt::Debug for KeyDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}({})",
            self.0.algorithm(),
            hex::encode(self.0.der_bytes())
        )
    }
}

/// An rcgen issuer for a CA certificate we hold the key of; refuses a non-CA certificate.
/// The issuer's SKI (if any) becomes the AKI of what it signs.
pub(crate) fn issuer_of<'k>(
    cert: &CertificateDer<'_>,
    key: &'k dyn SigningKey,
) -> Result<Issuer<'static, &'k dyn SigningKey>, Error> {
    let parsed = parse_cert(cert)?;
    if !is_ca(&parsed)? {
        return Err(Error::NotACa);
    }
    Ok(Issuer::from_ca_cert_der(cert, key)?)
}

/// Serial, validity (backdated by [`BACKDATE`]) and the AKI flag every issued cert shares.
pub(crate) fn base_params(
    serial: &Serial,
    now: OffsetDateTime,
    validity: Duration,
) -> CertificateParams {
    let now = now.to_offset(UtcOffset::UTC);
    let mut params = CertificateParams::default();
    params.serial_number = Some(serial.to_rcgen());
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.use_authority_key_identifier_extension = true;
    params
}

/// Subject with CN and, if given, O.
pub(crate) fn subject(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A CRL distribution point naming `url`, or none.
pub(crate) fn crl_dp(url: Option<&str>) -> Vec<CrlDistributionPoint> {
    url.map(|u| CrlDistributionPoint {
        uris: vec![u.to_owned()],
    })
    .into_iter()
    .collect()
}
