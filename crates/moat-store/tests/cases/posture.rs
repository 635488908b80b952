//! The posture audit's reads: insecure devices, keys shared across devices (live
//! certificates only), firmware below a counter, audit entries of one action in a window.

use crate::common::{TestDb, at, cert, device};
use moat_store::{ConnectionPolicy, DeviceState, Inventory, NewAuditEntry};

pub async fn posture_reads(db: &TestDb) {
    let s = &db.store;
    let mut loose = device("loose");
    loose.policy = ConnectionPolicy::AllowInsecure;
    s.create_device(&loose, None).await.unwrap();
    let mut gone = device("gone");
    gone.policy = ConnectionPolicy::AllowInsecure;
    gone.state = DeviceState::Revoked;
    s.create_device(&gone, None).await.unwrap();
    let ids: Vec<String> = s
        .insecure_devices(10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, vec!["loose"]);

    // One key in live certificates of a and b; c renewed its own key (not shared); d's copy
    // is revoked.
    for id in ["a", "b", "c", "d"] {
        s.create_device(&device(id), None).await.unwrap();
    }
    for (serial, id, spki) in [
        ("1", "a", "k1"),
        ("2", "b", "k1"),
        ("3", "c", "k2"),
        ("4", "c", "k2"),
        ("5", "d", "k1"),
    ] {
        let mut c = cert(serial, Some(id));
        c.spki_sha256 = spki.into();
        s.insert_cert(&c).await.unwrap();
    }
    s.revoke_cert("5", "key_compromise", at(1)).await.unwrap();
    let shared = s.shared_keys(10).await.unwrap();
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0].spki_sha256, "k1");
    assert_eq!(shared[0].device_ids, vec!["a", "b"]);

    for (id, counter) in [("a", 1), ("b", 3)] {
        s.put_inventory(&Inventory {
            device_id: id.into(),
            model: "M1".into(),
            version: "1.0".into(),
            security_counter: counter,
            updated_at: at(2),
        })
        .await
        .unwrap();
    }
    let below: Vec<String> = s
        .devices_below_counter("M1", 3, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.device_id)
        .collect();
    assert_eq!(below, vec!["a"]);
    assert!(
        s.devices_below_counter("M2", 3, 10)
            .await
            .unwrap()
            .is_empty()
    );

    for (secs, action) in [
        (10, "mqtt.possible_clone"),
        (20, "mqtt.connect"),
        (30, "mqtt.possible_clone"),
        (40, "mqtt.possible_clone"),
    ] {
        s.append_audit(&NewAuditEntry {
            at: at(secs),
            actor: "twin@127.0.0.2".into(),
            action: action.into(),
            target: None,
            outcome: "refused".into(),
            detail: None,
        })
        .await
        .unwrap();
    }
    // Never connected (stage not active), not revoked, created before the cut-off.
    let never: Vec<String> = s
        .never_connected(at(1), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(never, vec!["a", "b", "c", "d", "loose"]);
    assert!(s.never_connected(at(-1), 100).await.unwrap().is_empty());

    let recent = s
        .audit_by_action("mqtt.possible_clone", at(25), 10)
        .await
        .unwrap();
    let times: Vec<_> = recent.iter().map(|e| e.at).collect();
    assert_eq!(times, vec![at(40), at(30)]);
}
