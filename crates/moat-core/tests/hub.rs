//! The core on an in-memory registry and a file vault: events, atomicity, CRL numbering.

mod common;

use moat_core::{Actor, CoreConfig, CreateDevice, Credential, Error, Event, Hub, RevocationReason};
use std::sync::Arc;

async fn hub(dir: &std::path::Path) -> Arc<Hub> {
    let cfg = CoreConfig {
        crl_base_url: Some("http://hub.test:8080".into()),
        ..CoreConfig::default()
    };
    common::hub_with(dir, cfg).await
}

fn generated(id: &str) -> CreateDevice {
    CreateDevice {
        id: id.into(),
        credential: Credential::GenerateKey,
        allow_insecure: false,
    }
}

#[tokio::test]
async fn revocation_emits_an_event_and_lists_the_serial_in_a_newer_crl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    let mut events = hub.subscribe();
    let created = hub
        .create_device(generated("ev-1"), &Actor::admin())
        .await
        .expect("create");
    assert_eq!(
        events.recv().await.expect("event").event,
        Event::DeviceCreated {
            device_id: "ev-1".into()
        }
    );
    assert_eq!(
        events.recv().await.expect("event").event,
        Event::CertificateIssued {
            serial: created.certificate.serial.clone(),
            ca_name: "devices".into(),
            device_id: "ev-1".into(),
        }
    );
    assert!(created.private_key_pem.is_some());
    assert!(created.token.is_none());
    let before = hub.crl("devices").await.expect("crl").number;

    let serials = hub
        .revoke_device("ev-1", RevocationReason::KeyCompromise, &Actor::admin())
        .await
        .expect("revoke");
    assert_eq!(serials, vec![created.certificate.serial.clone()]);
    assert_eq!(
        events.recv().await.expect("event").event,
        Event::DeviceRevoked {
            device_id: "ev-1".into(),
            certificates: vec![moat_core::RevokedCertificate {
                ca_name: "devices".into(),
                serial: serials[0].clone(),
            }],
        }
    );
    match events.recv().await.expect("event").event {
        Event::CrlPublished { ca_name, number } => {
            assert_eq!(ca_name, "devices");
            assert!(number > before);
        }
        other => panic!("unexpected {other:?}"),
    }
    let crl = hub.crl("devices").await.expect("crl");
    assert!(crl.number > before);
    let (_, parsed) = x509_parser::parse_x509_crl(&crl.der).expect("CRL parses");
    let listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| moat_pki::Serial::from_bytes(r.raw_serial()).to_hex())
        .collect();
    assert_eq!(listed, serials);
}

#[tokio::test]
async fn concurrent_creates_of_one_id_store_exactly_one_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let hub = hub.clone();
        tasks.push(tokio::spawn(async move {
            hub.create_device(generated("twin"), &Actor::admin()).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(Error::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        hub.list_certs(Some("twin"), 100)
            .await
            .expect("certs")
            .len(),
        1
    );
}

#[tokio::test]
async fn every_admin_action_is_audited_with_its_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    hub.create_device(generated("a1"), &Actor("alice".into()))
        .await
        .expect("create");
    assert!(
        hub.create_device(generated("a1"), &Actor("alice".into()))
            .await
            .is_err()
    );
    hub.disable_device("a1", &Actor("bob".into()))
        .await
        .expect("disable");
    let log = hub.audit_log(None, 10).await.expect("audit");
    let mine: Vec<_> = log.iter().filter(|e| e.actor != "system").collect();
    assert_eq!(mine.len(), 3, "{log:?}");
    assert_eq!(
        (
            mine[0].actor.as_str(),
            mine[0].action.as_str(),
            mine[0].outcome.as_str()
        ),
        ("bob", "device.disable", "ok")
    );
    assert_eq!(
        (mine[1].action.as_str(), mine[1].outcome.as_str()),
        ("device.create", "refused")
    );
    assert!(
        mine[1]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("already exists")
    );
    assert_eq!(mine[2].target.as_deref(), Some("a1"));
}

#[tokio::test]
async fn the_server_identity_is_reused_until_its_names_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path()).await;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let a = hub.server_identity(&names).await.expect("a");
    let b = hub.server_identity(&names).await.expect("b");
    assert_eq!(a.chain[0], b.chain[0]);
    let c = hub
        .server_identity(&["hub.example".to_string()])
        .await
        .expect("c");
    assert_ne!(a.chain[0], c.chain[0]);
}
