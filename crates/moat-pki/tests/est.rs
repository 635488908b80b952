//! EST objects against openssl: certs-only CMS read by `openssl pkcs7`, CSR attributes read
//! by `openssl asn1parse`, re-enrollment CSRs made by `openssl req` checked against the
//! certificate they renew, and station certificates that carry no device identity.

mod common;

use common::*;
use moat_pki::*;
use std::path::Path;
use time::Duration;

fn openssl(dir: &Path, args: &[&str]) -> String {
    moat_testkit::openssl::openssl_ok_in(dir, args)
}

#[test]
fn certs_only_is_read_by_openssl_pkcs7_and_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new();
    let leaf = pki.device("sn-1");
    let certs = [
        pki.root.cert.clone(),
        pki.device_ca.cert.clone(),
        leaf.clone(),
    ];
    let p7 = certs_only(&certs).expect("certs-only");
    std::fs::write(d.join("ca.p7"), &p7).expect("write");
    let printed = openssl(
        d,
        &["pkcs7", "-inform", "DER", "-in", "ca.p7", "-print_certs"],
    );
    assert_eq!(printed.matches("-----BEGIN CERTIFICATE-----").count(), 3);
    for cn in ["Moat Root CA", "Moat Device CA", "sn-1"] {
        assert!(printed.contains(&format!("CN = {cn}")), "{cn}: {printed}");
    }
    // Same set back (SET OF is sorted, so compare as sets).
    let mut back: Vec<Vec<u8>> = parse_certs_only(&p7)
        .expect("parse")
        .iter()
        .map(|c| c.to_vec())
        .collect();
    let mut want: Vec<Vec<u8>> = certs.iter().map(|c| c.to_vec()).collect();
    back.sort();
    want.sort();
    assert_eq!(back, want);
}

#[test]
fn csr_attributes_parse_with_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("attrs.der"), csr_attributes().expect("attrs")).expect("write");
    let text = openssl(d, &["asn1parse", "-inform", "DER", "-in", "attrs.der"]);
    for oid in ["id-ecPublicKey", "prime256v1", "ecdsa-with-SHA256"] {
        assert!(text.contains(oid), "{oid}: {text}");
    }
}

/// A CSR made by openssl with `subj` and optional extra args; returns the CSR PEM.
fn csr(d: &Path, name: &str, key: Option<&str>, subj: &str, extra: &[&str]) -> Vec<u8> {
    let out = format!("{name}.csr");
    let mut args = vec!["req", "-new", "-subj", subj, "-out", &out];
    let newkey = format!("{name}.key");
    match key {
        Some(k) => args.extend(["-key", k]),
        None => args.extend([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &newkey,
        ]),
    }
    args.extend_from_slice(extra);
    openssl(d, &args);
    std::fs::read(d.join(out)).expect("csr")
}

#[test]
fn renewal_needs_the_same_subject_and_san_and_tells_renew_from_rekey() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new();
    // The device's first certificate, issued on an openssl key.
    let first = csr(d, "first", None, "/CN=ignored", &[]);
    let checked = check_csr(&first).expect("csr");
    let cert = device_cert(
        &pki.device_ca,
        "SN-77",
        &checked.public_key,
        &Serial::random(),
        pki.now,
        Duration::days(30),
    );
    // Its subject is O=Acme,CN=SN-77 and its SAN URI:urn:moat:device:SN-77 (common::device_cert).
    let san = ["-addext", "subjectAltName=URI:urn:moat:device:SN-77"];
    let same_key = csr(d, "renew", Some("first.key"), "/O=Acme/CN=SN-77", &san);
    let c = check_csr(&same_key).expect("csr");
    assert_eq!(c.subject, "CN=SN-77,O=Acme");
    assert_eq!(c.subject_alt_names, ["URI:urn:moat:device:SN-77"]);
    assert_eq!(check_renewal(&c, &cert).expect("renew"), Renewal::SameKey);

    let new_key = csr(d, "rekey", None, "/O=Acme/CN=SN-77", &san);
    let c = check_csr(&new_key).expect("csr");
    assert_eq!(check_renewal(&c, &cert).expect("rekey"), Renewal::NewKey);

    let other_cn = csr(d, "cn", Some("first.key"), "/O=Acme/CN=SN-78", &san);
    let r = check_renewal(&check_csr(&other_cn).expect("csr"), &cert);
    assert!(
        matches!(
            r,
            Err(Error::RenewalMismatch {
                field: "subject",
                ..
            })
        ),
        "{r:?}"
    );
    let no_san = csr(d, "nosan", Some("first.key"), "/O=Acme/CN=SN-77", &[]);
    let r = check_renewal(&check_csr(&no_san).expect("csr"), &cert);
    assert!(
        matches!(
            r,
            Err(Error::RenewalMismatch {
                field: "subjectAltName",
                ..
            })
        ),
        "{r:?}"
    );
    let extra_san = csr(
        d,
        "extra",
        Some("first.key"),
        "/O=Acme/CN=SN-77",
        &[
            "-addext",
            "subjectAltName=URI:urn:moat:device:SN-77,DNS:sn-77.local",
        ],
    );
    let r = check_renewal(&check_csr(&extra_san).expect("csr"), &cert);
    assert!(matches!(r, Err(Error::RenewalMismatch { .. })), "{r:?}");
}

#[test]
fn station_certificates_carry_no_device_identity_uri() {
    let pki = Pki::new();
    let key = key();
    let station = issue_station_cert(
        &DeviceCertRequest {
            device_id: "line-1",
            public_key: &key,
            serial: &Serial::random(),
            validity: Duration::days(30),
            crl_url: Some(CRL_URL),
            organization: Some("Acme"),
            now: pki.now,
        },
        &pki.device_ca.cert,
        &pki.device_ca.key,
    )
    .expect("station cert");
    assert_eq!(
        identity_of(&station, IdentityRule::SanUri).expect("uri"),
        "urn:moat:station:line-1"
    );
    // Valid for client authentication (it is presented to the EST endpoint over mutual TLS).
    assert_eq!(
        verify_client_chain(&station, &[], &pki.trusted(), pki.now),
        Ok(0)
    );
}
