//! Interop with a real peer: certificates, CRLs and CSRs checked by (or made by) `openssl`.

mod common;

use common::*;
use moat_pki::*;
use std::path::Path;
use std::process::Output;
use time::Duration;

fn openssl(dir: &Path, args: &[&str]) -> Output {
    moat_testkit::openssl::openssl_in(dir, args)
}

use moat_testkit::process::text;

fn write(dir: &Path, name: &str, data: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), data).expect("write");
}

#[test]
fn openssl_verifies_chain_and_sees_revocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new();
    let serial = Serial::random();
    let leaf = device_cert(
        &pki.device_ca,
        "dev-1",
        &key(),
        &serial,
        pki.now,
        Duration::days(30),
    );
    write(d, "root.pem", pem_of_cert(&pki.root.cert));
    write(d, "devca.pem", pem_of_cert(&pki.device_ca.cert));
    write(d, "leaf.pem", pem_of_cert(&leaf));

    let out = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "devca.pem",
            "leaf.pem",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("leaf.pem: OK"), "{}", text(&out));
    let out = openssl(
        d,
        &[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "devca.pem",
            "leaf.pem",
        ],
    );
    assert!(out.status.success(), "sslclient purpose: {}", text(&out));

    let entries = [
        RevokedEntry {
            serial: Serial::random(),
            revoked_at: pki.now - Duration::hours(1),
            reason: RevocationReason::Superseded,
        },
        RevokedEntry {
            serial: serial.clone(),
            revoked_at: pki.now,
            reason: RevocationReason::KeyCompromise,
        },
    ];
    let crl = build_crl(
        &CrlInput {
            number: 17,
            this_update: pki.now - Duration::minutes(1),
            next_update: pki.now + Duration::days(1),
            entries: &entries,
            url: Some(CRL_URL),
        },
        &pki.device_ca.cert,
        &pki.device_ca.key,
    )
    .expect("crl");
    write(d, "crl.pem", pem_of_crl(&crl));

    let out = openssl(
        d,
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "devca.pem",
            "leaf.pem",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("certificate revoked"), "{}", text(&out));

    let out = openssl(
        d,
        &[
            "crl",
            "-in",
            "crl.pem",
            "-noout",
            "-text",
            "-CAfile",
            "devca.pem",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("Version 2"), "{t}");
    assert!(t.contains("X509v3 CRL Number:") && t.contains("17"), "{t}");
    assert!(t.contains("X509v3 Authority Key Identifier"), "{t}");
    assert!(
        t.contains("Issuing Distribution Point") && t.contains(CRL_URL),
        "{t}"
    );
    assert!(
        t.contains("Key Compromise") && t.contains("Superseded"),
        "{t}"
    );
    assert!(t.contains(&serial.to_hex().to_uppercase()), "{t}");
    assert!(t.contains("verify OK"), "{t}");

    // An unrevoked sibling passes the same CRL check.
    let other = pki.device("dev-2");
    write(d, "other.pem", pem_of_cert(&other));
    let out = openssl(
        d,
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "devca.pem",
            "other.pem",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// Makes a CSR with openssl; returns its PEM.
fn openssl_csr(d: &Path, name: &str, newkey: &[&str], extra: &[&str]) -> Vec<u8> {
    let csr = format!("{name}.csr");
    let key = format!("{name}.key");
    let mut args = vec!["req", "-new"];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&[
        "-nodes",
        "-subj",
        "/CN=factory-7/serialNumber=SN0042",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    args.extend_from_slice(extra);
    let out = openssl(d, &args);
    assert!(out.status.success(), "{name}: {}", text(&out));
    std::fs::read(d.join(csr)).expect("csr")
}

#[test]
fn openssl_csrs_are_checked_and_issued_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new();
    write(d, "root.pem", pem_of_cert(&pki.root.cert));
    write(d, "devca.pem", pem_of_cert(&pki.device_ca.cert));

    let kinds: [(&str, &[&str], CsrKeyAlgorithm); 4] = [
        (
            "p256",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            CsrKeyAlgorithm::EcP256,
        ),
        (
            "p384",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            CsrKeyAlgorithm::EcP384,
        ),
        ("ed25519", &["-newkey", "ed25519"], CsrKeyAlgorithm::Ed25519),
        (
            "rsa2048",
            &["-newkey", "rsa:2048"],
            CsrKeyAlgorithm::Rsa(2048),
        ),
    ];
    for (name, newkey, want) in kinds {
        let csr = openssl_csr(d, name, newkey, &[]);
        let checked = check_csr(&csr).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(checked.algorithm, want, "{name}");
        assert_eq!(checked.common_name.as_deref(), Some("factory-7"));
        assert_eq!(checked.serial_number.as_deref(), Some("SN0042"));

        let der = device_cert(
            &pki.device_ca,
            &format!("dev-{name}"),
            &checked.public_key,
            &Serial::random(),
            pki.now,
            Duration::days(30),
        );
        let info = cert_info(&der).expect("info");
        assert_eq!(
            info.spki_der, checked.spki_der,
            "{name}: the CSR's key, byte for byte"
        );
        assert_eq!(
            verify_client_chain(&der, &[], &pki.trusted(), pki.now),
            Ok(0),
            "{name}"
        );

        let leaf = format!("{name}.pem");
        write(d, &leaf, pem_of_cert(&der));
        let out = openssl(
            d,
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "devca.pem",
                &leaf,
            ],
        );
        assert!(out.status.success(), "{name}: {}", text(&out));
        // The device's own key matches the certificate.
        let key = format!("{name}.key");
        let a = openssl(d, &["pkey", "-in", &key, "-pubout"]);
        let b = openssl(d, &["x509", "-in", &leaf, "-noout", "-pubkey"]);
        assert_eq!(a.stdout, b.stdout, "{name}: public keys differ");

        // DER input works as well.
        let der_csr = pem_to_der(&csr, "CERTIFICATE REQUEST").expect("der");
        assert_eq!(
            check_csr(&der_csr).expect("der csr").spki_der,
            checked.spki_der
        );
    }
}

#[test]
fn bad_csrs_are_refused_for_the_right_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    let small = openssl_csr(d, "rsa1024", &["-newkey", "rsa:1024"], &[]);
    let r = check_csr(&small);
    assert!(
        matches!(r, Err(Error::UnsupportedKey(ref s)) if s.contains("1024")),
        "{r:?}"
    );

    let ca = openssl_csr(
        d,
        "ca",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["-addext", "basicConstraints=critical,CA:TRUE"],
    );
    assert!(matches!(check_csr(&ca), Err(Error::CsrRequestsCa)));

    // Other requested extensions are ignored, CA:FALSE is fine.
    let fine = openssl_csr(
        d,
        "fine",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &[
            "-addext",
            "basicConstraints=CA:FALSE",
            "-addext",
            "subjectAltName=DNS:evil.example",
            "-addext",
            "1.2.3.4=ASN1:UTF8String:x",
        ],
    );
    assert!(check_csr(&fine).is_ok(), "{:?}", check_csr(&fine));

    let secp256k1 = openssl_csr(
        d,
        "k1",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
        &[],
    );
    assert!(matches!(
        check_csr(&secp256k1),
        Err(Error::UnsupportedKey(_))
    ));

    let good = openssl_csr(
        d,
        "p256",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &[],
    );
    let mut der = pem_to_der(&good, "CERTIFICATE REQUEST").expect("der");
    let last = der.len() - 1;
    der[last] ^= 0x01;
    assert!(matches!(check_csr(&der), Err(Error::CsrBadSignature)));

    assert!(matches!(
        check_csr(b"garbage"),
        Err(Error::Malformed { what: "CSR", .. })
    ));
    assert!(matches!(
        check_csr(&[0x30, 0x03, 1, 2, 3]),
        Err(Error::Malformed { what: "CSR", .. })
    ));
    let mut trailing = pem_to_der(&good, "CERTIFICATE REQUEST").expect("der");
    trailing.push(0);
    assert!(matches!(check_csr(&trailing), Err(Error::Malformed { .. })));
    let big = vec![b'A'; MAX_CSR_BYTES + 1];
    assert!(matches!(
        check_csr(&big),
        Err(Error::CsrTooLarge { size, limit }) if size == MAX_CSR_BYTES + 1 && limit == MAX_CSR_BYTES
    ));
}

#[test]
fn openssl_reads_server_cert_sans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new();
    let der = server_cert(
        &pki.root,
        &["hub.example".into(), "127.0.0.1".into()],
        pki.now,
    );
    write(d, "root.pem", pem_of_cert(&pki.root.cert));
    write(d, "server.pem", pem_of_cert(&der));
    let out = openssl(
        d,
        &[
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            "root.pem",
            "server.pem",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = openssl(
        d,
        &[
            "x509",
            "-in",
            "server.pem",
            "-noout",
            "-ext",
            "subjectAltName,extendedKeyUsage",
        ],
    );
    let t = text(&out);
    assert!(
        t.contains("DNS:hub.example") && t.contains("IP Address:127.0.0.1"),
        "{t}"
    );
    assert!(
        t.contains("TLS Web Server Authentication") && !t.contains("Client"),
        "{t}"
    );
}
