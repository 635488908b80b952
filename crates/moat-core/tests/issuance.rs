//! The one issuance pipeline, seen from outside: every way a certificate is issued records
//! it, its audit entry (`certificate <serial>`) and its device together, announces it with
//! `CertificateIssued` (and `DeviceCreated` when it created the device), and a refused
//! issuance announces and records nothing.

mod common;

use common::{hub, station};
use moat_core::{
    Actor, CertRecord, CertSource, CertificateCheck, CreateDevice, Credential, Error, Event, Hub,
    Subscription,
};
use moat_testkit::pki::csr;
use rcgen::{DnType, KeyPair};
use std::time::Duration;

/// The events published until none comes for a moment.
async fn drain(sub: &mut Subscription) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
        events.push(e.event);
    }
    events
}

fn issued(record: &CertRecord) -> Event {
    Event::CertificateIssued {
        serial: record.serial.clone(),
        ca_name: record.ca_name.clone(),
        device_id: record.device_id.clone().expect("a device certificate"),
    }
}

fn created(id: &str) -> Event {
    Event::DeviceCreated {
        device_id: id.into(),
    }
}

/// The newest audit entry: its action, target and detail.
async fn last_audit(hub: &Hub) -> (String, Option<String>, String) {
    let e = hub.audit_log(None, 1).await.expect("audit").remove(0);
    (e.action, e.target, e.detail.unwrap_or_default())
}

/// The registry holds exactly what the pipeline returned.
async fn recorded(hub: &Hub, record: &CertRecord) {
    assert_eq!(&hub.cert(&record.serial).await.expect("recorded"), record);
}

#[tokio::test]
async fn every_issuance_is_recorded_audited_and_announced_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    let admin = Actor::admin();
    let mut sub = hub.subscribe();

    // Admin create with a hub-generated key.
    let d1 = hub
        .create_device(
            CreateDevice {
                id: "d1".into(),
                credential: Credential::GenerateKey,
                allow_insecure: true,
            },
            &admin,
        )
        .await
        .expect("create");
    assert_eq!(d1.certificate.source, CertSource::HubKey);
    assert!(d1.private_key_pem.is_some() && d1.token.is_some());
    recorded(&hub, &d1.certificate).await;
    assert_eq!(
        drain(&mut sub).await,
        [created("d1"), issued(&d1.certificate)]
    );
    assert_eq!(
        last_audit(&hub).await,
        (
            "device.create".into(),
            Some("d1".into()),
            format!("certificate {}", d1.certificate.serial)
        )
    );

    // Admin create on a CSR.
    let key = KeyPair::generate().expect("key");
    let d2 = hub
        .create_device(
            CreateDevice {
                id: "d2".into(),
                credential: Credential::Csr(csr(&key, &[(DnType::CommonName, "d2")], &[])),
                allow_insecure: false,
            },
            &admin,
        )
        .await
        .expect("create on CSR");
    assert_eq!(d2.certificate.source, CertSource::Csr);
    assert!(d2.private_key_pem.is_none() && d2.token.is_none());
    recorded(&hub, &d2.certificate).await;
    assert_eq!(
        drain(&mut sub).await,
        [created("d2"), issued(&d2.certificate)]
    );

    // Rotation: a new certificate for an existing device, superseding the old one.
    let rotated = hub.rotate_device("d1", &admin).await.expect("rotate");
    let new = &rotated.created.certificate;
    recorded(&hub, new).await;
    assert_eq!(drain(&mut sub).await, [issued(new)]);
    let (action, _, detail) = last_audit(&hub).await;
    assert_eq!(action, "device.rotate");
    assert!(
        detail.starts_with(&format!(
            "certificate {} replaces {}",
            new.serial, d1.certificate.serial
        )),
        "{detail}"
    );
    assert!(
        hub.cert(&d1.certificate.serial)
            .await
            .expect("old")
            .retire_at
            .is_some(),
        "the superseded certificate retires after the overlap"
    );

    // EST enrollment creates the device of an allow-listed serial; re-enrollment renews it.
    hub.add_allowlist("SN-1\n", &admin).await.expect("upload");
    let station = station(&hub, "line-1").await;
    drain(&mut sub).await;
    let key = KeyPair::generate().expect("key");
    let enrolled = hub
        .est_enroll(
            &station,
            &csr(&key, &[(DnType::CommonName, "SN-1")], &[]),
            false,
        )
        .await
        .expect("enroll");
    recorded(&hub, &enrolled.record).await;
    assert_eq!(
        drain(&mut sub).await,
        [created("SN-1"), issued(&enrolled.record)]
    );
    assert_eq!(
        last_audit(&hub).await,
        (
            "est.enroll".into(),
            Some("SN-1".into()),
            format!("certificate {}", enrolled.record.serial)
        )
    );
    let chain = [enrolled.cert.clone()];
    let renewed = hub
        .est_reenroll(
            CertificateCheck::tls(&chain, false),
            &csr(
                &key,
                &[
                    (DnType::OrganizationName, "Moat"),
                    (DnType::CommonName, "SN-1"),
                ],
                &["urn:moat:device:SN-1"],
            ),
            "10.0.0.1",
        )
        .await
        .expect("re-enroll");
    recorded(&hub, &renewed.record).await;
    assert_eq!(drain(&mut sub).await, [issued(&renewed.record)]);
    let (action, _, detail) = last_audit(&hub).await;
    assert_eq!(action, "est.reenroll");
    assert!(
        detail.starts_with(&format!(
            "certificate {} replaces {} (renew)",
            renewed.record.serial, enrolled.record.serial
        )),
        "{detail}"
    );
}

#[tokio::test]
async fn a_refused_issuance_records_and_announces_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    let admin = Actor::admin();
    let create = |id: &str| CreateDevice {
        id: id.into(),
        credential: Credential::GenerateKey,
        allow_insecure: false,
    };
    hub.create_device(create("d1"), &admin)
        .await
        .expect("create");
    let mut sub = hub.subscribe();
    let certs = hub.list_certs(None, 100).await.expect("certs").len();

    let r = hub.create_device(create("d1"), &admin).await;
    assert!(
        matches!(r, Err(Error::Conflict { kind: "device", .. })),
        "{r:?}"
    );
    // Two creations of one id at once: one wins, the other leaves no trace but its audit entry.
    let (a, b) = tokio::join!(
        hub.create_device(create("twin"), &admin),
        hub.create_device(create("twin"), &admin)
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one wins: {a:?} {b:?}");
    let winner = a.or(b).expect("one created it");
    assert_eq!(
        drain(&mut sub).await,
        [created("twin"), issued(&winner.certificate)]
    );
    assert_eq!(
        hub.list_certs(None, 100).await.expect("certs").len(),
        certs + 1
    );
    let (action, target, detail) = last_audit(&hub).await;
    assert_eq!(
        (action.as_str(), target.as_deref()),
        ("device.create", Some("twin"))
    );
    assert!(
        detail.contains("already exists"),
        "the refusal is audited: {detail}"
    );
}
