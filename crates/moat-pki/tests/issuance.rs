//! What the issued certificates and CRLs contain, identity rules and proof of possession.

mod common;

use common::*;
use moat_pki::*;
use rcgen::{CertificateParams, DnType, Issuer, SanType};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

#[test]
fn device_cert_carries_the_profile() {
    let pki = Pki::new();
    let serial = Serial::random();
    let der = device_cert(
        &pki.device_ca,
        "dev-42",
        &key(),
        &serial,
        pki.now,
        Duration::days(30),
    );
    let (_, cert) = X509Certificate::from_der(&der).expect("parses");
    let (_, ca) = X509Certificate::from_der(&pki.device_ca.cert).expect("parses");

    let bc = cert.basic_constraints().expect("one").expect("present");
    assert!(bc.critical && !bc.value.ca);
    let ku = cert.key_usage().expect("one").expect("present");
    assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());
    let eku = cert
        .extended_key_usage()
        .expect("one")
        .expect("present")
        .value;
    assert!(eku.client_auth && !eku.server_auth && !eku.any && eku.other.is_empty());
    let san = cert
        .subject_alternative_name()
        .expect("one")
        .expect("present");
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("urn:moat:device:dev-42")]
    );

    let mut ski = None;
    let mut aki = None;
    let mut crl_dp = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(k) => {
                aki = k.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            ParsedExtension::CRLDistributionPoints(dps) => {
                crl_dp = format!("{dps:?}").contains(CRL_URL);
            }
            _ => {}
        }
    }
    let ca_ski = ca
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    assert!(ski.is_some(), "SKI");
    assert_eq!(aki, ca_ski, "AKI = issuer SKI");
    assert!(crl_dp, "CRL distribution point");

    let info = cert_info(&der).expect("info");
    assert_eq!(info.serial, serial.to_hex());
    assert_eq!(info.subject, "CN=dev-42,O=Acme");
    assert_eq!(info.issuer, "CN=Moat Device CA,O=Moat Test");
    assert_eq!(info.common_name.as_deref(), Some("dev-42"));
    assert!(!info.is_ca);
    let now = pki.now.replace_nanosecond(0).expect("valid");
    assert_eq!(info.not_before, now - Duration::minutes(5));
    assert_eq!(info.not_after, now + Duration::days(30));
    assert_eq!(info.fingerprint_sha256.len(), 64);
    assert_eq!(info.spki_der, cert.public_key().raw);
}

#[test]
fn ca_certs_have_path_lengths_and_ca_usages() {
    let pki = Pki::new();
    for (der, pathlen) in [(&pki.root.cert, 1), (&pki.device_ca.cert, 0)] {
        let (_, cert) = X509Certificate::from_der(der).expect("parses");
        let bc = cert
            .basic_constraints()
            .expect("one")
            .expect("present")
            .value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(pathlen));
        let ku = cert.key_usage().expect("one").expect("present");
        assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(cert_info(der).expect("info").is_ca);
    }
}

#[test]
fn issuing_with_a_non_ca_is_refused() {
    let pki = Pki::new();
    let leaf_key = key();
    let leaf = device_cert(
        &pki.device_ca,
        "d",
        &leaf_key,
        &Serial::random(),
        pki.now,
        Duration::days(1),
    );
    let fake_ca = Ca {
        cert: leaf,
        key: leaf_key,
    };
    let r = issue_device_cert(
        &DeviceCertRequest {
            device_id: "x",
            public_key: &key(),
            serial: &Serial::random(),
            validity: Duration::days(1),
            crl_url: None,
            organization: None,
            now: pki.now,
        },
        &fake_ca.cert,
        &fake_ca.key,
    );
    assert!(matches!(r, Err(Error::NotACa)), "{r:?}");
}

#[test]
fn identity_rules() {
    let pki = Pki::new();
    let device = pki.device("dev-7");
    assert_eq!(identity_of(&device, IdentityRule::Cn).expect("cn"), "dev-7");
    // The same answer from a certificate already read, under every rule.
    let info = moat_pki::cert_info(&device).expect("info");
    for rule in [IdentityRule::Cn, IdentityRule::SanUri, IdentityRule::SanDns] {
        assert_eq!(
            moat_pki::identity_of_info(&info, &device, rule).map_err(|e| e.to_string()),
            identity_of(&device, rule).map_err(|e| e.to_string()),
            "{rule:?}"
        );
    }
    assert_eq!(
        identity_of(&device, IdentityRule::SanUri).expect("uri"),
        "dev-7"
    );
    assert!(matches!(
        identity_of(&device, IdentityRule::SanDns),
        Err(Error::NoIdentity(_))
    ));

    let server = server_cert(
        &pki.device_ca,
        &[
            "10.0.0.1".to_string(),
            "gw-3.example".to_string(),
            "b.example".to_string(),
        ],
        pki.now,
    );
    assert_eq!(
        identity_of(&server, IdentityRule::SanDns).expect("dns"),
        "gw-3.example"
    );

    // A vendor certificate: SAN URI that is not ours is taken whole; no CN.
    let mut params = CertificateParams::new(vec![]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Vendor");
    params.subject_alt_names = vec![SanType::URI(
        "spiffe://vendor/device/9".try_into().expect("ia5"),
    )];
    let issuer = Issuer::from_ca_cert_der(&pki.device_ca.cert, &pki.device_ca.key).expect("issuer");
    let vendor = params
        .signed_by(&key(), &issuer)
        .expect("signed")
        .der()
        .clone();
    assert_eq!(
        identity_of(&vendor, IdentityRule::SanUri).expect("uri"),
        "spiffe://vendor/device/9"
    );
    assert!(matches!(
        identity_of(&vendor, IdentityRule::Cn),
        Err(Error::NoIdentity(_))
    ));
    assert!(matches!(
        identity_of(b"junk", IdentityRule::Cn),
        Err(Error::Malformed { .. })
    ));

    for rule in [IdentityRule::Cn, IdentityRule::SanDns, IdentityRule::SanUri] {
        assert_eq!(IdentityRule::parse(rule.as_str()), Some(rule));
    }
    assert_eq!(IdentityRule::parse("subject"), None);
}

fn verification_cert(cn: &str, signer: &Ca) -> Vec<u8> {
    let mut params = CertificateParams::new(vec![]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    let issuer = Issuer::from_ca_cert_der(&signer.cert, &signer.key).expect("issuer");
    params
        .signed_by(&key(), &issuer)
        .expect("signed")
        .der()
        .to_vec()
}

#[test]
fn proof_of_possession() {
    let now = OffsetDateTime::now_utc();
    let vendor = root("Vendor CA", now);
    let code = "d1f0c2a7e9b34c55";
    assert!(
        check_proof_of_possession(&vendor.cert, &verification_cert(code, &vendor), code).is_ok()
    );

    // Same issuer name, different key: the registrant does not hold the CA key.
    let impostor = Ca {
        cert: vendor.cert.clone(),
        key: key(),
    };
    assert!(matches!(
        check_proof_of_possession(&vendor.cert, &verification_cert(code, &impostor), code),
        Err(Error::VerificationNotSigned)
    ));
    assert!(matches!(
        check_proof_of_possession(&vendor.cert, &verification_cert("other", &vendor), code),
        Err(Error::VerificationCodeMismatch)
    ));

    // A leaf offered as a CA.
    let pki = Pki::new();
    let leaf = pki.device("d");
    assert!(matches!(
        check_proof_of_possession(&leaf, &verification_cert(code, &vendor), code),
        Err(Error::NotACa)
    ));
}

#[test]
fn crl_with_100k_entries() {
    let pki = Pki::new();
    let now = pki.now;
    let entries: Vec<RevokedEntry> = (0..100_000)
        .map(|i| RevokedEntry {
            serial: Serial::random(),
            revoked_at: now - Duration::minutes(i % 1000),
            reason: RevocationReason::ALL[(i % 7) as usize],
        })
        .collect();
    let der = build_crl(
        &CrlInput {
            number: 4242,
            this_update: now,
            next_update: now + Duration::days(1),
            entries: &entries,
            url: Some(CRL_URL),
        },
        &pki.device_ca.cert,
        &pki.device_ca.key,
    )
    .expect("crl");
    // Its speed is measured in `cargo bench -p moat-core --bench issuance`, not here.

    let (_, crl) = CertificateRevocationList::from_der(&der).expect("parses");
    assert_eq!(crl.version().map(|v| v.0), Some(1), "v2");
    assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("4242".into()));
    let revoked: Vec<_> = crl.iter_revoked_certificates().collect();
    assert_eq!(revoked.len(), 100_000);
    assert_eq!(revoked[1].raw_serial(), entries[1].serial.as_bytes());
    assert_eq!(
        revoked[1].reason_code().map(|r| r.1.0),
        Some(1),
        "keyCompromise"
    );
    assert!(
        revoked[0].reason_code().is_none(),
        "unspecified is written as absent"
    );

    let (_, ca) = X509Certificate::from_der(&pki.device_ca.cert).expect("parses");
    assert!(crl.verify_signature(ca.public_key()).is_ok());

    // webpki (what the broker's rustls uses) reads it and finds a serial.
    let parsed = webpki::BorrowedCertRevocationList::from_der(&der).expect("webpki reads it");
    let crl = webpki::CertRevocationList::from(parsed);
    let found = crl
        .find_serial(entries[99_999].serial.as_bytes())
        .expect("lookup");
    assert!(found.is_some());
}

#[test]
fn revocation_reason_names() {
    for r in RevocationReason::ALL {
        assert_eq!(RevocationReason::parse(r.as_str()), Some(r));
        assert_eq!(
            RevocationReason::parse(&r.as_str().replace('_', "-")),
            Some(r)
        );
        assert_eq!(RevocationReason::parse(&r.as_str().to_uppercase()), Some(r));
    }
    assert_eq!(
        RevocationReason::parse("keyCompromise"),
        Some(RevocationReason::KeyCompromise)
    );
    assert_eq!(
        RevocationReason::parse("cessationOfOperation"),
        Some(RevocationReason::CessationOfOperation)
    );
    assert_eq!(RevocationReason::parse("certificateHold"), None);
    assert_eq!(RevocationReason::parse(""), None);
}

#[test]
fn pem_helpers_round_trip() {
    let pki = Pki::new();
    let leaf = pki.device("d");
    let text = format!(
        "leading junk\n{}{}",
        pem_of_cert(&leaf),
        pem_of_cert(&pki.device_ca.cert)
    );
    let chain = parse_cert_chain_pem(text.as_bytes()).expect("chain");
    assert_eq!(chain, vec![leaf.clone(), pki.device_ca.cert.clone()]);
    assert_eq!(
        parse_cert_chain_pem(&leaf).expect("der"),
        vec![leaf.clone()]
    );
    assert!(matches!(
        parse_cert_chain_pem(b"nothing here"),
        Err(Error::Malformed {
            what: "certificate",
            ..
        })
    ));
    assert_eq!(
        pem_to_der(text.as_bytes(), "CERTIFICATE").expect("first"),
        leaf.to_vec()
    );
    assert_eq!(
        pem_to_der(&leaf, "CERTIFICATE").expect("as is"),
        leaf.to_vec()
    );
    assert!(pem_to_der(text.as_bytes(), "X509 CRL").is_err());
    assert!(pem_of_crl(b"abc").starts_with("-----BEGIN X509 CRL-----\nYWJj\n"));
}
