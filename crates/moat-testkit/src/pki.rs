//! A test CA made with rcgen (a secure-element vendor's): leaves for any CN, validity window
//! (to the second) and EKU.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// A CA of our own (rcgen, P-256).
#[derive(Debug)]
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// Its certificate (PEM).
    pub pem: String,
}

impl TestCa {
    /// A self-signed root named "`name` Root".
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} Root"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).expect("self-signed").pem();
        TestCa { params, key, pem }
    }

    /// A leaf with CN = `cn`, valid from now + `from` to now + `to`, with `eku`, written to
    /// `dir/file.crt` and `dir/file.key`.
    pub fn leaf(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        from: Duration,
        to: Duration,
        eku: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        let now = OffsetDateTime::now_utc();
        p.not_before = now + from;
        p.not_after = now + to;
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).expect("sign");
        let (c, k) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("w");
        std::fs::write(&k, key.serialize_pem()).expect("w");
        (c, k)
    }
}

/// A PKCS#10 CSR (DER) for `key` with the given subject attributes and SAN URIs.
pub fn csr(key: &KeyPair, subject: &[(DnType, &str)], uris: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::new(vec![]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (t, v) in subject {
        params.distinguished_name.push(t.clone(), *v);
    }
    params.subject_alt_names = uris
        .iter()
        .map(|u| rcgen::SanType::URI((*u).try_into().expect("ia5")))
        .collect();
    params.serialize_request(key).expect("csr").der().to_vec()
}
