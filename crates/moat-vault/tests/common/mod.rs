//! Helpers shared by the integration tests.
#![allow(dead_code)]

use moat_vault::HubKey;
use rcgen::{CertificateParams, PublicKeyData};

/// Signs a self-signed certificate with `key` and verifies it with x509-parser (aws-lc), and
/// checks the certificate carries `key`'s public key. Panics on any failure.
pub fn sign_and_verify_cert(key: &HubKey) {
    let params = CertificateParams::new(vec!["hub.moat.test".to_owned()]).expect("params");
    let cert = params.self_signed(key).expect("self-sign");
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).expect("parse cert");
    parsed.verify_signature(None).expect("signature verifies");
    assert_eq!(
        parsed.public_key().subject_public_key.data.as_ref(),
        key.der_bytes()
    );
    // Tampering with the signed part must break verification: proves the check is real.
    let mut der = cert.der().to_vec();
    let pos = der
        .windows(13)
        .position(|w| w == b"hub.moat.test")
        .expect("CN in DER");
    der[pos] = b'X';
    let (_, tampered) = x509_parser::parse_x509_certificate(&der).expect("parse tampered");
    assert!(tampered.verify_signature(None).is_err());
}
