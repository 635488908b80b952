//! Factory enrollment decisions on an in-memory registry: the allow-list, station
//! authentication, enrollment once per serial, server key generation, re-enrollment by the
//! certificate being renewed, and station certificates refused as devices.

mod common;

use common::{hub, hub_with, station};
use moat_core::{
    Actor, CertificateCheck, CoreConfig, CreateDevice, CreateStation, Credential, Denial, Error,
    EstRefusal, Renewal, RevocationReason, StationCredential,
};
use moat_testkit::pki::csr;
use rcgen::{DnType, KeyPair};
use rustls_pki_types::CertificateDer;

/// A factory CSR naming `serial` in its CN.
fn factory_csr(serial: &str) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate().expect("key");
    let der = csr(&key, &[(DnType::CommonName, serial)], &[]);
    (key, der)
}

/// A re-enrollment CSR with the subject and SAN the hub gives `id`'s certificates.
fn renewal_csr(key: &KeyPair, id: &str) -> Vec<u8> {
    csr(
        key,
        &[(DnType::OrganizationName, "Moat"), (DnType::CommonName, id)],
        &[&format!("urn:moat:device:{id}")],
    )
}

fn refusal(r: Result<impl std::fmt::Debug, Error>) -> EstRefusal {
    match r {
        Err(Error::Est(e)) => e,
        other => panic!("expected an EST refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn allowlist_upload_reset_and_one_enrollment_per_serial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    let admin = Actor::admin();
    assert_eq!(
        hub.add_allowlist(
            "serial,mac,model\nSN-1,AA:BB:CC:DD:EE:01,Sensor\nSN-2\n",
            &admin
        )
        .await
        .expect("upload"),
        2
    );
    // A second file with one listed serial is refused whole, naming the line.
    let r = hub.add_allowlist("SN-3\nSN-1\n", &admin).await;
    assert!(
        matches!(&r, Err(Error::Invalid(m)) if m.contains("line 2: serial \"SN-1\" is already")),
        "{r:?}"
    );
    assert_eq!(hub.list_allowlist(None, 100).await.expect("list").len(), 2);

    let st = station(&hub, "line-1").await;
    let devices_before = hub.list_devices(None, 100).await.expect("devices").len();

    // Not on the allow-list; no serial at all; a CSR whose signature does not verify.
    let (_, unknown) = factory_csr("SN-9");
    assert!(matches!(
        refusal(hub.est_enroll(&st, &unknown, false).await),
        EstRefusal::NotAllowListed(s) if s == "SN-9"
    ));
    let key = KeyPair::generate().expect("key");
    let nameless = csr(&key, &[(DnType::OrganizationName, "Acme")], &[]);
    assert!(matches!(
        refusal(hub.est_enroll(&st, &nameless, false).await),
        EstRefusal::NoSerial
    ));
    let (_, mut tampered) = factory_csr("SN-1");
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        refusal(hub.est_enroll(&st, &tampered, false).await),
        EstRefusal::BadCsr(_)
    ));
    assert_eq!(
        hub.list_devices(None, 100).await.expect("devices").len(),
        devices_before,
        "refusals store nothing"
    );

    // The serial from the subject serialNumber wins over the CN.
    let key = KeyPair::generate().expect("key");
    let both = csr(
        &key,
        &[
            (DnType::CommonName, "whatever"),
            (DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-1"),
        ],
        &[],
    );
    let issued = hub.est_enroll(&st, &both, false).await.expect("enroll");
    assert_eq!(issued.device_id, "SN-1");
    assert!(issued.private_key_der.is_none());
    let device = hub.device("SN-1").await.expect("device");
    let factory = device.factory.expect("factory identity");
    assert_eq!(factory.mac.as_deref(), Some("aa:bb:cc:dd:ee:01"));
    assert_eq!(factory.model.as_deref(), Some("Sensor"));
    assert_eq!(
        moat_pki::identity_of(&issued.cert, moat_pki::IdentityRule::Cn).expect("cn"),
        "SN-1"
    );
    let entry = &hub.list_allowlist(None, 1).await.expect("list")[0];
    assert_eq!(entry.device_id.as_deref(), Some("SN-1"));

    // Twice: refused, nothing more stored.
    let (_, again) = factory_csr("SN-1");
    assert!(matches!(
        refusal(hub.est_enroll(&st, &again, false).await),
        EstRefusal::AlreadyEnrolled(_)
    ));
    assert_eq!(
        hub.list_certs(Some("SN-1"), 10).await.expect("certs").len(),
        1
    );

    // Reset: one more enrollment, onto the same device.
    hub.reset_allowlist("SN-1", &admin).await.expect("reset");
    assert!(matches!(
        hub.reset_allowlist("SN-1", &admin).await,
        Err(Error::State(_))
    ));
    assert!(matches!(
        hub.reset_allowlist("SN-404", &admin).await,
        Err(Error::NotFound { .. })
    ));
    hub.est_enroll(&st, &again, false).await.expect("re-enroll");
    assert_eq!(
        hub.list_certs(Some("SN-1"), 10).await.expect("certs").len(),
        2
    );

    // Every decision is in the audit log with its outcome.
    let log = hub.audit_log(None, 100).await.expect("audit");
    let est: Vec<_> = log
        .iter()
        .filter(|e| e.action == "est.enroll")
        .map(|e| (e.outcome.as_str(), e.target.clone()))
        .collect();
    assert_eq!(
        est,
        [
            ("ok", Some("SN-1".into())),
            ("refused", Some("SN-1".into())),
            ("ok", Some("SN-1".into())),
            // The tampered CSR and the nameless one: refused before a serial is known.
            ("refused", None),
            ("refused", None),
            ("refused", Some("SN-9".into())),
        ]
    );
}

#[tokio::test]
async fn a_device_of_another_origin_blocks_enrollment_of_its_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    hub.create_device(
        CreateDevice {
            id: "SN-5".into(),
            credential: Credential::GenerateKey,
            allow_insecure: false,
        },
        &Actor::admin(),
    )
    .await
    .expect("device");
    hub.add_allowlist("SN-5\n", &Actor::admin())
        .await
        .expect("upload");
    let st = station(&hub, "line-1").await;
    let (_, c) = factory_csr("SN-5");
    assert!(matches!(
        refusal(hub.est_enroll(&st, &c, false).await),
        EstRefusal::DeviceExists(_)
    ));
    assert!(
        hub.list_allowlist(None, 1).await.expect("list")[0]
            .enrolled_at
            .is_none()
    );
}

#[tokio::test]
async fn stations_authenticate_by_their_certificate_or_token_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    let admin = Actor::admin();
    let with_cert = hub
        .create_station(
            CreateStation {
                name: "line-1".into(),
                token: false,
            },
            &admin,
        )
        .await
        .expect("station");
    assert!(with_cert.private_key_pem.is_some() && with_cert.token.is_none());
    let cert_pem = with_cert.chain_pem.expect("chain");
    let cert = moat_pki::parse_cert_chain_pem(cert_pem.as_bytes()).expect("pem")[0].clone();
    let with_token = hub
        .create_station(
            CreateStation {
                name: "line-2".into(),
                token: true,
            },
            &admin,
        )
        .await
        .expect("station");
    let token = with_token.token.expect("token");
    assert!(token.expose().starts_with("moat_stn_"));
    assert!(matches!(
        hub.create_station(
            CreateStation {
                name: "line-2".into(),
                token: false
            },
            &admin
        )
        .await,
        Err(Error::Conflict { .. })
    ));

    let ok = hub
        .authenticate_station(StationCredential::Certificate(&cert), "10.0.0.1")
        .await
        .expect("cert");
    assert_eq!(ok.name, "line-1");
    let ok = hub
        .authenticate_station(
            StationCredential::Token {
                name: "line-2",
                token: token.expose(),
            },
            "10.0.0.1",
        )
        .await
        .expect("token");
    assert_eq!(ok.name, "line-2");

    for (cred, what) in [
        (StationCredential::None, "none"),
        (
            StationCredential::Token {
                name: "line-2",
                token: "moat_stn_wrong",
            },
            "wrong token",
        ),
        (
            StationCredential::Token {
                name: "line-1",
                token: token.expose(),
            },
            "certificate station's name with a token",
        ),
    ] {
        let r = hub.authenticate_station(cred, "10.0.0.2").await;
        assert!(
            matches!(
                r,
                Err(Error::Est(
                    EstRefusal::NoCredentials | EstRefusal::BadStationToken(_)
                ))
            ),
            "{what}: {r:?}"
        );
    }

    // A device certificate is no station credential.
    let device = hub
        .create_device(
            CreateDevice {
                id: "dev-1".into(),
                credential: Credential::GenerateKey,
                allow_insecure: false,
            },
            &admin,
        )
        .await
        .expect("device");
    let device_cert = CertificateDer::from(device.certificate.der.clone());
    assert!(matches!(
        refusal(
            hub.authenticate_station(StationCredential::Certificate(&device_cert), "10.0.0.3")
                .await
        ),
        EstRefusal::NotAStation(m) if m.contains("dev-1")
    ));

    // Deleting the station revokes its certificate and ends its authentication.
    hub.delete_station("line-1", &admin).await.expect("delete");
    assert!(matches!(
        refusal(
            hub.authenticate_station(StationCredential::Certificate(&cert), "10.0.0.1")
                .await
        ),
        EstRefusal::NotAStation(_)
    ));
    let serial = moat_pki::serial_of(&cert).expect("serial").to_hex();
    assert!(hub.cert(&serial).await.expect("cert").revoked_at.is_some());

    let refused = hub
        .audit_log(None, 100)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "est.authenticate" && e.outcome == "refused")
        .count();
    assert_eq!(refused, 5);
}

#[tokio::test]
async fn a_station_certificate_is_not_admitted_as_a_device_even_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    let created = hub
        .create_station(
            CreateStation {
                name: "twin".into(),
                token: false,
            },
            &Actor::admin(),
        )
        .await
        .expect("station");
    hub.create_device(
        CreateDevice {
            id: "twin".into(),
            credential: Credential::GenerateKey,
            allow_insecure: false,
        },
        &Actor::admin(),
    )
    .await
    .expect("device");
    let chain =
        moat_pki::parse_cert_chain_pem(created.chain_pem.expect("pem").as_bytes()).expect("chain");
    let r = hub
        .admit_certificate(CertificateCheck::tls(&chain, false))
        .await;
    assert!(
        matches!(r, Err(Denial::NotADeviceCertificate { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn server_key_generation_returns_the_key_of_the_certificate_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    hub.add_allowlist("SN-7\n", &Actor::admin())
        .await
        .expect("upload");
    let st = station(&hub, "line-1").await;
    let (_, c) = factory_csr("SN-7");
    let issued = hub.est_enroll(&st, &c, true).await.expect("serverkeygen");
    let key_der = issued.private_key_der.expect("key");
    let key = KeyPair::try_from(key_der.as_slice()).expect("PKCS#8");
    let info = moat_pki::cert_info(&issued.cert).expect("info");
    assert_eq!(
        info.spki_der,
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );
    assert_eq!(issued.record.source, moat_core::CertSource::HubKey);
}

#[tokio::test]
async fn reenrollment_renews_rekeys_and_refuses_what_it_must() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    hub.add_allowlist("SN-1\nSN-2\n", &Actor::admin())
        .await
        .expect("upload");
    let st = station(&hub, "line-1").await;
    let (key, c) = factory_csr("SN-1");
    let first = hub.est_enroll(&st, &c, false).await.expect("enroll");
    let chain = [first.cert.clone()];

    let renewed = hub
        .est_reenroll(
            CertificateCheck::tls(&chain, false),
            &renewal_csr(&key, "SN-1"),
            "10.0.0.1",
        )
        .await
        .expect("renew");
    assert_eq!(renewed.renewal, Some(Renewal::SameKey));
    assert_eq!(renewed.device_id, "SN-1");
    let new_key = KeyPair::generate().expect("key");
    let rekeyed = hub
        .est_reenroll(
            CertificateCheck::tls(&chain, false),
            &renewal_csr(&new_key, "SN-1"),
            "10.0.0.1",
        )
        .await
        .expect("rekey");
    assert_eq!(rekeyed.renewal, Some(Renewal::NewKey));
    assert_eq!(
        hub.list_certs(Some("SN-1"), 10).await.expect("certs").len(),
        3
    );

    // Changed subject: refused, nothing stored.
    let r = hub
        .est_reenroll(
            CertificateCheck::tls(&chain, false),
            &renewal_csr(&key, "SN-2"),
            "10.0.0.1",
        )
        .await;
    assert!(matches!(
        refusal(r),
        EstRefusal::BadCsr(moat_pki::Error::RenewalMismatch {
            field: "subject",
            ..
        })
    ));
    // No certificate, a station's certificate.
    assert!(matches!(
        refusal(
            hub.est_reenroll(
                CertificateCheck::tls(&[], false),
                &renewal_csr(&key, "SN-1"),
                "x"
            )
            .await
        ),
        EstRefusal::NoClientCertificate
    ));
    let st_pem = hub
        .create_station(
            CreateStation {
                name: "line-9".into(),
                token: false,
            },
            &Actor::admin(),
        )
        .await
        .expect("station")
        .chain_pem
        .expect("pem");
    let st_chain = moat_pki::parse_cert_chain_pem(st_pem.as_bytes()).expect("chain");
    assert!(matches!(
        refusal(
            hub.est_reenroll(
                CertificateCheck::tls(&st_chain, false),
                &renewal_csr(&key, "line-9"),
                "x"
            )
            .await
        ),
        EstRefusal::Certificate(Denial::NotADeviceCertificate { .. })
    ));
    // Revoked.
    hub.revoke_cert(
        &first.record.serial,
        RevocationReason::KeyCompromise,
        &Actor::admin(),
    )
    .await
    .expect("revoke");
    assert!(matches!(
        refusal(
            hub.est_reenroll(
                CertificateCheck::tls(&chain, false),
                &renewal_csr(&key, "SN-1"),
                "x"
            )
            .await
        ),
        EstRefusal::Certificate(Denial::CertRevoked(_))
    ));
    assert_eq!(
        hub.list_certs(Some("SN-1"), 10).await.expect("certs").len(),
        3
    );
}

#[tokio::test]
async fn an_expired_certificate_cannot_reenroll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = CoreConfig {
        device_cert_validity: time::Duration::seconds(1),
        ..CoreConfig::default()
    };
    let hub = hub_with(dir.path(), cfg).await;
    hub.add_allowlist("SN-1\n", &Actor::admin())
        .await
        .expect("upload");
    let st = station(&hub, "line-1").await;
    let (key, c) = factory_csr("SN-1");
    let first = hub.est_enroll(&st, &c, false).await.expect("enroll");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(matches!(
        refusal(
            hub.est_reenroll(
                CertificateCheck::tls(&[first.cert], false),
                &renewal_csr(&key, "SN-1"),
                "x"
            )
            .await
        ),
        EstRefusal::Certificate(Denial::Expired { .. })
    ));
}
