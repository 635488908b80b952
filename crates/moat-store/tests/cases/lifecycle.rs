//! Lifecycle (migration 0006): stage, compare-and-set state and owner, owner listing, retired
//! allow-list serials, superseded certificates and the retirement sweep.

use crate::common::{TestDb, at, cert, device, t0};
use moat_store::{
    AllowlistEntry, DeviceState, Error, FactoryInfo, Issuance, Lifecycle, NewAuditEntry, Stage,
    Supersede,
};

fn audit(action: &str, target: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: at(5),
        actor: "admin".into(),
        action: action.into(),
        target: Some(target.into()),
        outcome: "ok".into(),
        detail: None,
    }
}

pub async fn stage_status_and_owner(db: &TestDb) {
    let s = &db.store;
    s.create_device(&device("d1"), None).await.unwrap();
    let d = s.device("d1").await.unwrap().unwrap();
    assert_eq!(
        (d.stage, d.owner.clone(), d.lifecycle()),
        (Stage::Enrolled, None, Lifecycle::Enrolled)
    );

    // Stage: changes once, then reports no change; a missing device is NotFound.
    assert!(
        s.set_device_stage("d1", Stage::Active, at(10))
            .await
            .unwrap()
    );
    assert!(
        !s.set_device_stage("d1", Stage::Active, at(11))
            .await
            .unwrap()
    );
    let d = s.device("d1").await.unwrap().unwrap();
    assert_eq!((d.stage, d.updated_at), (Stage::Active, at(10)));
    assert!(matches!(
        s.set_device_stage("nope", Stage::Active, at(1)).await,
        Err(Error::NotFound(_))
    ));

    // Status: compare-and-set, with its reason; resuming clears it.
    assert!(
        s.set_device_status(
            "d1",
            DeviceState::Active,
            DeviceState::Disabled,
            Some("stolen"),
            at(20)
        )
        .await
        .unwrap()
    );
    assert!(
        !s.set_device_status(
            "d1",
            DeviceState::Active,
            DeviceState::Disabled,
            None,
            at(21)
        )
        .await
        .unwrap()
    );
    let d = s.device("d1").await.unwrap().unwrap();
    assert_eq!(d.status_reason.as_deref(), Some("stolen"));
    assert_eq!(d.lifecycle(), Lifecycle::Suspended);
    assert!(
        s.set_device_status(
            "d1",
            DeviceState::Disabled,
            DeviceState::Active,
            None,
            at(22)
        )
        .await
        .unwrap()
    );
    let d = s.device("d1").await.unwrap().unwrap();
    assert_eq!((d.lifecycle(), d.status_reason), (Lifecycle::Active, None));
    assert!(matches!(
        s.set_device_status(
            "nope",
            DeviceState::Active,
            DeviceState::Revoked,
            None,
            at(1)
        )
        .await,
        Err(Error::NotFound(_))
    ));

    // Owner: compare-and-set from unowned, then from the current owner only.
    assert!(
        s.set_device_owner("d1", None, Some("acme"), at(30))
            .await
            .unwrap()
    );
    assert!(
        !s.set_device_owner("d1", None, Some("evil"), at(31))
            .await
            .unwrap()
    );
    assert!(
        !s.set_device_owner("d1", Some("other"), Some("evil"), at(31))
            .await
            .unwrap()
    );
    assert!(
        s.set_device_owner("d1", Some("acme"), Some("globex"), at(32))
            .await
            .unwrap()
    );
    assert_eq!(
        s.device("d1").await.unwrap().unwrap().owner.as_deref(),
        Some("globex")
    );
    assert!(matches!(
        s.set_device_owner("nope", None, Some("x"), at(1)).await,
        Err(Error::NotFound(_))
    ));

    // Listing by owner pages by id and sees nobody else's devices.
    for id in ["a1", "a2", "a3", "b1"] {
        s.create_device(&device(id), None).await.unwrap();
    }
    for id in ["a1", "a2", "a3"] {
        s.set_device_owner(id, None, Some("acme"), at(40))
            .await
            .unwrap();
    }
    s.set_device_owner("b1", None, Some("globex"), at(40))
        .await
        .unwrap();
    let ids = |v: Vec<moat_store::Device>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_devices_by_owner("acme", None, 2).await.unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(
        ids(s
            .list_devices_by_owner("acme", Some("a2"), 10)
            .await
            .unwrap()),
        ["a3"]
    );
    assert_eq!(
        ids(s.list_devices_by_owner("globex", None, 10).await.unwrap()),
        ["b1", "d1"]
    );
    assert!(
        s.list_devices_by_owner("nobody", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn retired_serial_never_enrolls(db: &TestDb) {
    let s = &db.store;
    let factory = FactoryInfo {
        serial: "SN-1".into(),
        mac: None,
        model: None,
    };
    s.add_allowlist(&[AllowlistEntry {
        factory: factory.clone(),
        added_at: t0(),
        enrolled_at: None,
        device_id: None,
        retired_at: None,
    }])
    .await
    .unwrap();
    let mut d = device("SN-1");
    d.factory = Some(factory);
    let enrollment = |serial: &str| Issuance {
        device: d.clone(),
        create_device: false,
        claim_serial: Some("SN-1".into()),
        certs: vec![cert(serial, Some("SN-1"))],
        supersede: None,
        provisioning: None,
        audit: audit("est.enroll", "SN-1"),
    };
    let mut first = enrollment("c1");
    first.create_device = true;
    s.issue(&first).await.unwrap();

    assert!(s.retire_allowlist_serial("SN-1", at(50)).await.unwrap());
    assert!(!s.retire_allowlist_serial("SN-1", at(51)).await.unwrap());
    assert!(matches!(
        s.retire_allowlist_serial("SN-404", at(1)).await,
        Err(Error::NotFound(_))
    ));
    let e = s.allowlist_entry("SN-1").await.unwrap().unwrap();
    assert_eq!(e.retired_at, Some(at(50)));

    // A reset does nothing to a retired serial, and no enrollment claims it.
    assert!(!s.reset_allowlist("SN-1").await.unwrap());
    assert!(
        s.allowlist_entry("SN-1")
            .await
            .unwrap()
            .unwrap()
            .enrolled_at
            .is_some()
    );
    let r = s.issue(&enrollment("c2")).await;
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    assert_eq!(s.cert("c2").await.unwrap(), None);

    // A serial retired before it ever enrolled is not claimed either.
    s.add_allowlist(&[AllowlistEntry {
        factory: FactoryInfo {
            serial: "SN-2".into(),
            mac: None,
            model: None,
        },
        added_at: t0(),
        enrolled_at: None,
        device_id: None,
        retired_at: None,
    }])
    .await
    .unwrap();
    assert!(s.retire_allowlist_serial("SN-2", at(60)).await.unwrap());
    let mut never = enrollment("c3");
    never.claim_serial = Some("SN-2".into());
    never.device = device("SN-2");
    never.create_device = true;
    let r = s.issue(&never).await;
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    assert_eq!(s.device("SN-2").await.unwrap(), None);
    assert_eq!(
        s.allowlist_entry("SN-2")
            .await
            .unwrap()
            .unwrap()
            .enrolled_at,
        None
    );
}

/// The issuance of `cert` for device d1, superseding `serials` at `retire_at`.
fn superseding(
    cert: &moat_store::CertRecord,
    serials: &[String],
    retire_at: time::OffsetDateTime,
    action: &str,
) -> Issuance {
    Issuance {
        device: device("d1"),
        create_device: false,
        claim_serial: None,
        certs: vec![cert.clone()],
        supersede: Some(Supersede {
            serials: serials.to_vec(),
            retire_at,
        }),
        provisioning: None,
        audit: audit(action, "d1"),
    }
}

pub async fn superseded_certs_retire_once(db: &TestDb) {
    let s = &db.store;
    s.create_device(&device("d1"), Some(&cert("old1", Some("d1"))))
        .await
        .unwrap();
    s.insert_cert(&cert("old2", Some("d1"))).await.unwrap();
    s.insert_cert(&cert("gone", Some("d1"))).await.unwrap();
    s.revoke_cert("gone", "key_compromise", at(1))
        .await
        .unwrap();
    let mut short = cert("short", Some("d1"));
    short.not_after = at(50); // expires before the retire time: left alone
    s.insert_cert(&short).await.unwrap();

    let new = cert("new", Some("d1"));
    let supersede = ["old1", "old2", "gone", "short"].map(String::from);
    s.issue(&superseding(&new, &supersede, at(100), "device.rotate"))
        .await
        .unwrap();
    assert_eq!(s.cert("new").await.unwrap().unwrap().retire_at, None);
    assert_eq!(
        s.cert("old1").await.unwrap().unwrap().retire_at,
        Some(at(100))
    );
    assert_eq!(
        s.cert("old2").await.unwrap().unwrap().retire_at,
        Some(at(100))
    );
    assert_eq!(s.cert("gone").await.unwrap().unwrap().retire_at, None);
    assert_eq!(s.cert("short").await.unwrap().unwrap().retire_at, None);
    assert_eq!(
        s.list_audit(None, 1).await.unwrap()[0].action,
        "device.rotate"
    );

    // Superseded certificates need no renewal; "short" was not superseded (it expires first).
    let expiring: Vec<_> = s
        .expiring_certs(t0(), at(86_400 * 400), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(expiring, ["short", "new"]);

    // A later supersession never postpones an earlier retire time.
    s.issue(&superseding(
        &cert("newer", Some("d1")),
        &["old1".to_string(), "new".to_string()],
        at(200),
        "est.reenroll",
    ))
    .await
    .unwrap();
    assert_eq!(
        s.cert("old1").await.unwrap().unwrap().retire_at,
        Some(at(100))
    );
    assert_eq!(
        s.cert("new").await.unwrap().unwrap().retire_at,
        Some(at(200))
    );

    // A taken serial refuses the whole write.
    let dup = s
        .issue(&superseding(&cert("old2", Some("d1")), &[], at(300), "x"))
        .await;
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");

    // The sweep: nothing before the time, then each due certificate once.
    assert!(s.retire_due_certs(at(99)).await.unwrap().is_empty());
    let retired = s.retire_due_certs(at(100)).await.unwrap();
    let serials: Vec<_> = retired.iter().map(|r| r.serial.as_str()).collect();
    assert_eq!(serials, ["old1", "old2"]);
    assert_eq!(retired[0].device_id.as_deref(), Some("d1"));
    assert!(s.retire_due_certs(at(150)).await.unwrap().is_empty());
    let old1 = s.cert("old1").await.unwrap().unwrap();
    assert_eq!(old1.revoked_at, Some(at(100)));
    assert_eq!(old1.revocation_reason.as_deref(), Some("superseded"));
    let crl: Vec<_> = s
        .revoked_certs("devices")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.serial, r.reason))
        .collect();
    assert!(
        crl.contains(&("old2".into(), "superseded".into())),
        "{crl:?}"
    );
    assert_eq!(s.retire_due_certs(at(250)).await.unwrap()[0].serial, "new");
}
