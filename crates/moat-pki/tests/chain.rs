//! Chain validation against a generated test PKI: one case per `ChainError`.

mod common;

use common::*;
use moat_pki::*;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use time::Duration;

#[test]
fn valid_device_cert_chains_to_its_ca() {
    let pki = Pki::new();
    let leaf = pki.device("dev-1");
    assert_eq!(
        verify_client_chain(&leaf, &[], &pki.trusted(), pki.now),
        Ok(0)
    );
}

#[test]
fn chains_through_root_with_intermediate_known_or_sent() {
    let pki = Pki::new();
    let leaf = pki.device("dev-1");
    let foreign = root("Other Root", pki.now);
    let root_known = vec![
        TrustedCa {
            name: "other".into(),
            cert: foreign.cert.clone(),
            intermediates: vec![],
        },
        TrustedCa {
            name: "hub-root".into(),
            cert: pki.root.cert.clone(),
            intermediates: vec![pki.device_ca.cert.clone()],
        },
    ];
    assert_eq!(verify_client_chain(&leaf, &[], &root_known, pki.now), Ok(1));

    let root_only = vec![
        TrustedCa {
            name: "other".into(),
            cert: foreign.cert,
            intermediates: vec![],
        },
        TrustedCa {
            name: "hub-root".into(),
            cert: pki.root.cert.clone(),
            intermediates: vec![],
        },
    ];
    assert_eq!(
        verify_client_chain(&leaf, &[], &root_only, pki.now),
        Err(ChainError::UnknownIssuer),
        "without the device CA the leaf cannot chain"
    );
    assert_eq!(
        verify_client_chain(
            &leaf,
            std::slice::from_ref(&pki.device_ca.cert),
            &root_only,
            pki.now
        ),
        Ok(1),
        "the client may send the intermediate itself"
    );
}

#[test]
fn every_fault_maps_to_its_chain_error() {
    let pki = Pki::new();
    let now = pki.now;
    let trusted = pki.trusted();

    let expired = device_cert(
        &pki.device_ca,
        "dev-old",
        &key(),
        &Serial::random(),
        now - Duration::days(400),
        Duration::days(30),
    );
    let not_yet = device_cert(
        &pki.device_ca,
        "dev-future",
        &key(),
        &Serial::random(),
        now + Duration::days(2),
        Duration::days(30),
    );
    let server = server_cert(&pki.device_ca, &["hub.test".to_string()], now);

    let foreign_root = root("Foreign Root", now);
    let foreign_ca = intermediate("Foreign Device CA", &foreign_root, now);
    let foreign = device_cert(
        &foreign_ca,
        "dev-1",
        &key(),
        &Serial::random(),
        now,
        Duration::days(30),
    );

    // A self-signed certificate claiming a real device's CN.
    let impostor_key = key();
    let mut params = CertificateParams::new(vec![]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "dev-1");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let impostor = params
        .self_signed(&impostor_key)
        .expect("self-signed")
        .der()
        .clone();

    // A device cert whose signature was tampered with.
    let mut tampered = pki.device("dev-1").to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let tampered = CertificateDer::from(tampered);

    let cases: Vec<(&str, CertificateDer<'static>, ChainError)> = vec![
        ("expired", expired, ChainError::Expired),
        ("not yet valid", not_yet, ChainError::NotYetValid),
        ("server EKU", server, ChainError::WrongUsage),
        ("foreign CA", foreign, ChainError::UnknownIssuer),
        ("self-signed impostor", impostor, ChainError::UnknownIssuer),
        ("bad signature", tampered, ChainError::BadSignature),
        (
            "garbage",
            CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]),
            ChainError::Malformed,
        ),
    ];
    for (name, leaf, want) in cases {
        assert_eq!(
            verify_client_chain(&leaf, &[], &trusted, now),
            Err(want),
            "case {name}"
        );
    }
}

#[test]
fn empty_trust_list_knows_no_issuer() {
    let pki = Pki::new();
    assert_eq!(
        verify_client_chain(&pki.device("d"), &[], &[], pki.now),
        Err(ChainError::UnknownIssuer)
    );
}
