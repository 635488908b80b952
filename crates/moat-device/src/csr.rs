//! PKCS#10 requests signed by the device key (in the token, for a PKCS#11 key).
//!
//! - Enrollment: subject `CN=<serial>`, the identity the hub's allow-list knows.
//! - Re-enrollment (RFC 7030 §4.2.2): the subject and subjectAltName of the certificate
//!   being renewed, copied attribute by attribute, because the hub refuses any difference.

use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, SanType};
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::keystore::DeviceKey;

/// A CSR (DER) with subject `CN=<cn>` and no extension requests.
pub fn enrollment_csr(key: &DeviceKey, cn: &str) -> Result<Vec<u8>, Error> {
    if cn.is_empty() || cn.len() > 64 || cn.chars().any(char::is_control) {
        return Err(Error::BadInput {
            what: format!("serial {cn:?}"),
            problem: "must be 1-64 printable characters".into(),
        });
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    let csr = params.serialize_request(key).map_err(Error::Csr)?;
    Ok(csr.der().to_vec())
}

/// A CSR (DER) for renewing `current`: its subject and subjectAltName, the key `key` (the
/// same key renews, a new one re-keys).
pub fn renewal_csr(key: &DeviceKey, current: &CertificateDer<'_>) -> Result<Vec<u8>, Error> {
    let bad = |problem: String| Error::BadInput {
        what: "the certificate being renewed".into(),
        problem,
    };
    let (_, cert) = X509Certificate::from_der(current).map_err(|e| bad(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for rdn in cert.subject().iter() {
        for attr in rdn.iter() {
            let oid: Vec<u64> = attr
                .attr_type()
                .iter()
                .ok_or_else(|| bad("subject attribute OID too long".into()))?
                .collect();
            let ty = match oid.as_slice() {
                [2, 5, 4, 3] => DnType::CommonName,
                [2, 5, 4, 6] => DnType::CountryName,
                [2, 5, 4, 7] => DnType::LocalityName,
                [2, 5, 4, 8] => DnType::StateOrProvinceName,
                [2, 5, 4, 10] => DnType::OrganizationName,
                [2, 5, 4, 11] => DnType::OrganizationalUnitName,
                _ => DnType::CustomDnType(oid),
            };
            let text = attr
                .as_str()
                .map_err(|e| bad(format!("subject attribute is not a string: {e}")))?;
            // The hub compares subjects as RFC 4514 strings, so the string type is free.
            let value = DnValue::Utf8String(text.to_owned());
            params.distinguished_name.push(ty, value);
        }
    }
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?
    {
        for name in &san.value.general_names {
            let s = match name {
                GeneralName::DNSName(d) => {
                    SanType::DnsName((*d).try_into().map_err(|e| bad(format!("SAN DNS: {e}")))?)
                }
                GeneralName::URI(u) => {
                    SanType::URI((*u).try_into().map_err(|e| bad(format!("SAN URI: {e}")))?)
                }
                GeneralName::RFC822Name(m) => SanType::Rfc822Name(
                    (*m).try_into()
                        .map_err(|e| bad(format!("SAN email: {e}")))?,
                ),
                GeneralName::IPAddress(b) => SanType::IpAddress(match b.len() {
                    4 => std::net::IpAddr::from([b[0], b[1], b[2], b[3]]),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        std::net::IpAddr::from(a)
                    }
                    n => return Err(bad(format!("SAN IP address of {n} bytes"))),
                }),
                other => return Err(bad(format!("SAN {other:?} cannot be requested"))),
            };
            params.subject_alt_names.push(s);
        }
    }
    let csr = params.serialize_request(key).map_err(Error::Csr)?;
    Ok(csr.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{FileKeyStore, KeyStore};

    fn key() -> (tempfile::TempDir, DeviceKey) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ks = FileKeyStore::open(&tmp.path().join("ks"), moat_vault::Secret::new("pw"))
            .expect("open");
        let k = ks.generate("k").expect("generate");
        (tmp, k)
    }

    #[test]
    fn renewal_csr_copies_subject_and_san_and_passes_the_hub_check() {
        let (_tmp, key) = key();
        // A certificate like the hub issues, for this key.
        let mut p = CertificateParams::new(vec![]).expect("params");
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, "Moat");
        p.distinguished_name.push(DnType::CommonName, "SN-1");
        p.subject_alt_names.push(SanType::URI(
            "urn:moat:device:SN-1".try_into().expect("uri"),
        ));
        let cert = p.self_signed(&key).expect("cert");

        let csr = renewal_csr(&key, cert.der()).expect("csr");
        let checked = moat_pki::check_csr(&csr).expect("the hub's CSR check");
        moat_pki::check_renewal(&checked, cert.der()).expect("the hub's renewal check");

        let e = enrollment_csr(&key, "SN-1").expect("csr");
        let checked = moat_pki::check_csr(&e).expect("check");
        assert_eq!(checked.common_name.as_deref(), Some("SN-1"));
        assert!(enrollment_csr(&key, "").is_err());
    }
}
