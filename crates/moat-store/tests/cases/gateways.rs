//! Gateways: allowances, the identities of kind gateway, relay windows (compare-and-set).

use crate::common::{TestDb, at, t0};
use moat_store::{AllowanceKind, GatewayAllowance, IdentityAccess, IdentityKind};

pub async fn gateway_allowances(db: &TestDb) {
    let s = &db.store;
    let a = |kind, name: &str| GatewayAllowance {
        gateway: "gw1".into(),
        kind,
        name: name.into(),
        created_at: t0(),
    };
    assert!(s.gateway_allowances("gw1").await.unwrap().is_empty());
    assert!(
        s.put_gateway_allowance(&a(AllowanceKind::Device, "d2"))
            .await
            .unwrap()
    );
    assert!(
        s.put_gateway_allowance(&a(AllowanceKind::Group, "field"))
            .await
            .unwrap()
    );
    assert!(
        s.put_gateway_allowance(&a(AllowanceKind::EnrollmentGroup, "lora"))
            .await
            .unwrap()
    );
    assert!(
        s.put_gateway_allowance(&a(AllowanceKind::Device, "d1"))
            .await
            .unwrap()
    );
    // Twice is once.
    assert!(
        !s.put_gateway_allowance(&a(AllowanceKind::Device, "d1"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.gateway_allowances("gw1").await.unwrap(),
        [
            a(AllowanceKind::Device, "d1"),
            a(AllowanceKind::Device, "d2"),
            a(AllowanceKind::EnrollmentGroup, "lora"),
            a(AllowanceKind::Group, "field"),
        ]
    );
    assert!(s.gateway_allowances("gw2").await.unwrap().is_empty());
    assert!(
        s.delete_gateway_allowance("gw1", AllowanceKind::Device, "d2")
            .await
            .unwrap()
    );
    assert!(
        !s.delete_gateway_allowance("gw1", AllowanceKind::Device, "d2")
            .await
            .unwrap()
    );
    // The kind is part of the key.
    assert!(
        !s.delete_gateway_allowance("gw1", AllowanceKind::Group, "d1")
            .await
            .unwrap()
    );
    assert_eq!(s.gateway_allowances("gw1").await.unwrap().len(), 3);

    assert!(s.gateway_ids().await.unwrap().is_empty());
    for (id, kind) in [
        ("gw-b", IdentityKind::Gateway),
        ("app", IdentityKind::App),
        ("gw-a", IdentityKind::Gateway),
    ] {
        s.put_identity_access(&IdentityAccess {
            device_id: id.into(),
            kind,
            group: None,
            policy: None,
        })
        .await
        .unwrap();
    }
    assert_eq!(s.gateway_ids().await.unwrap(), ["gw-a", "gw-b"]);
}

pub async fn relay_windows_compare_and_set(db: &TestDb) {
    let s = &db.store;
    assert_eq!(s.relay_window("d1").await.unwrap(), None);
    // The first write creates it; a second "first" write loses.
    assert_eq!(
        s.put_relay_window("d1", b"one", None, t0()).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        s.put_relay_window("d1", b"two", None, t0()).await.unwrap(),
        None
    );
    let w = s.relay_window("d1").await.unwrap().unwrap();
    assert_eq!((w.state.as_slice(), w.version), (&b"one"[..], 1));
    // A write on the version read wins once; a stale one loses and changes nothing.
    assert_eq!(
        s.put_relay_window("d1", b"two", Some(1), at(1))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        s.put_relay_window("d1", b"old", Some(1), at(2))
            .await
            .unwrap(),
        None
    );
    let w = s.relay_window("d1").await.unwrap().unwrap();
    assert_eq!((w.state.as_slice(), w.version), (&b"two"[..], 2));
    // Concurrent writers on one version: exactly one wins.
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.put_relay_window("d1", &[i], Some(2), at(3)).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    assert_eq!(s.relay_window("d1").await.unwrap().unwrap().version, 3);
    assert_eq!(s.relay_window("d2").await.unwrap(), None);
    s.delete_relay_window("d1").await.unwrap();
    s.delete_relay_window("d1").await.unwrap();
    assert_eq!(s.relay_window("d1").await.unwrap(), None);
}
