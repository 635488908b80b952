//! Firmware: signing keys, publication with the security-counter rule, campaigns and their
//! devices (compare-and-set moves), download authorisation, inventory and group members.

use crate::common::{TestDb, at, device, t0};
use moat_store::{
    Campaign, CampaignDevice, CampaignState, Error, FirmwareKey, FirmwareKeyKind, FirmwareRecord,
    IdentityAccess, IdentityKind, Inventory, UpdateState, WaveCount,
};

fn key(name: &str) -> FirmwareKey {
    FirmwareKey {
        name: name.into(),
        kind: FirmwareKeyKind::P256,
        spki_der: vec![0x30, 0x59, name.len() as u8],
        key_ref: None,
        created_at: t0(),
    }
}

fn fw(id: &str, model: &str, counter: u32, digest: &str) -> FirmwareRecord {
    FirmwareRecord {
        id: id.into(),
        model: model.into(),
        version: format!("1.{counter}.0+0"),
        security_counter: counter,
        size: 4096 + u64::from(counter),
        digest: digest.into(),
        key_name: "release".into(),
        created_at: at(i64::from(counter)),
    }
}

fn campaign(id: &str, firmware: &str) -> Campaign {
    Campaign {
        id: id.into(),
        firmware_id: firmware.into(),
        target: "devices:a,b,c".into(),
        state: CampaignState::Running,
        waves: 2,
        current_wave: 0,
        success_threshold: 100,
        abort_threshold: 10,
        reason: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

fn member(c: &str, d: &str, wave: u32) -> CampaignDevice {
    CampaignDevice {
        campaign_id: c.into(),
        device_id: d.into(),
        wave,
        state: UpdateState::Pending,
        reason: None,
        updated_at: t0(),
    }
}

pub async fn firmware_keys_and_publication(db: &TestDb) {
    let s = &db.store;
    let mut k = key("release");
    k.key_ref = Some("sealed:v1:abc".into());
    s.insert_firmware_key(&k).await.unwrap();
    s.insert_firmware_key(&key("offline")).await.unwrap();
    assert!(matches!(
        s.insert_firmware_key(&key("release")).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(s.firmware_key("release").await.unwrap(), Some(k.clone()));
    assert_eq!(s.firmware_key("nope").await.unwrap(), None);
    let names: Vec<_> = s
        .firmware_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["offline", "release"]);

    assert_eq!(s.max_security_counter("m1").await.unwrap(), None);
    assert!(
        s.publish_firmware(&fw("fw-1", "m1", 5, "aa"))
            .await
            .unwrap()
    );
    // Same counter again is fine (a rebuild), lower is refused and stores nothing.
    assert!(
        s.publish_firmware(&fw("fw-2", "m1", 5, "bb"))
            .await
            .unwrap()
    );
    assert!(
        !s.publish_firmware(&fw("fw-3", "m1", 4, "cc"))
            .await
            .unwrap()
    );
    assert_eq!(s.firmware("fw-3").await.unwrap(), None);
    // Another model has its own counter; the same blob may serve both.
    assert!(
        s.publish_firmware(&fw("fw-4", "m2", 1, "aa"))
            .await
            .unwrap()
    );
    assert_eq!(s.max_security_counter("m1").await.unwrap(), Some(5));
    assert_eq!(s.max_security_counter("m2").await.unwrap(), Some(1));
    // The same image twice for a model, or a taken id: conflict.
    assert!(matches!(
        s.publish_firmware(&fw("fw-5", "m1", 6, "aa")).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.publish_firmware(&fw("fw-1", "m3", 6, "dd")).await,
        Err(Error::Conflict(_))
    ));
    // An unknown key.
    let mut orphan = fw("fw-6", "m1", 9, "ee");
    orphan.key_name = "nope".into();
    assert!(matches!(
        s.publish_firmware(&orphan).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        s.firmware("fw-1").await.unwrap(),
        Some(fw("fw-1", "m1", 5, "aa"))
    );
    let ids: Vec<_> = s
        .list_firmware()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], "fw-1", "newest first: {ids:?}");
}

pub async fn campaigns_and_device_states(db: &TestDb) {
    let s = &db.store;
    for id in ["a", "b", "c"] {
        s.create_device(&device(id), None).await.unwrap();
    }
    s.insert_firmware_key(&key("release")).await.unwrap();
    assert!(
        s.publish_firmware(&fw("fw-1", "m1", 5, "aa"))
            .await
            .unwrap()
    );
    assert!(
        s.publish_firmware(&fw("fw-2", "m1", 6, "bb"))
            .await
            .unwrap()
    );
    let c = campaign("cmp-1", "fw-1");
    let devices = [
        member("cmp-1", "a", 0),
        member("cmp-1", "b", 1),
        member("cmp-1", "c", 1),
    ];
    s.create_campaign(&c, &devices).await.unwrap();
    assert_eq!(s.campaign("cmp-1").await.unwrap(), Some(c.clone()));
    // All or nothing: a duplicate device row fails the whole campaign.
    let dup = [member("cmp-2", "a", 0), member("cmp-2", "a", 1)];
    assert!(
        s.create_campaign(&campaign("cmp-2", "fw-1"), &dup)
            .await
            .is_err()
    );
    assert_eq!(s.campaign("cmp-2").await.unwrap(), None);
    assert!(s.campaign_devices("cmp-2", None).await.unwrap().is_empty());
    assert!(matches!(
        s.create_campaign(&campaign("cmp-3", "fw-nope"), &[]).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        s.create_campaign(&c, &[]).await,
        Err(Error::Conflict(_))
    ));

    assert_eq!(s.campaign_devices("cmp-1", None).await.unwrap(), devices);
    assert_eq!(
        s.campaign_devices("cmp-1", Some(1)).await.unwrap(),
        devices[1..]
    );

    // Compare-and-set device moves.
    let moved = s
        .set_update_state(
            "cmp-1",
            "a",
            UpdateState::Pending,
            UpdateState::Notified,
            None,
            at(1),
        )
        .await
        .unwrap();
    assert!(moved);
    let stale = s
        .set_update_state(
            "cmp-1",
            "a",
            UpdateState::Pending,
            UpdateState::Notified,
            None,
            at(2),
        )
        .await
        .unwrap();
    assert!(!stale);
    assert!(
        s.set_update_state(
            "cmp-1",
            "a",
            UpdateState::Notified,
            UpdateState::Failed,
            Some("lower counter"),
            at(3)
        )
        .await
        .unwrap()
    );
    let a = &s.campaign_devices("cmp-1", Some(0)).await.unwrap()[0];
    assert_eq!(
        (a.state, a.reason.as_deref(), a.updated_at),
        (UpdateState::Failed, Some("lower counter"), at(3))
    );

    assert_eq!(
        s.wave_counts("cmp-1").await.unwrap(),
        vec![
            WaveCount {
                wave: 0,
                state: UpdateState::Failed,
                count: 1
            },
            WaveCount {
                wave: 1,
                state: UpdateState::Pending,
                count: 2
            },
        ]
    );

    // Download authorisation: notified devices of an active campaign, for its image only.
    s.set_update_state(
        "cmp-1",
        "b",
        UpdateState::Pending,
        UpdateState::Notified,
        None,
        at(4),
    )
    .await
    .unwrap();
    assert!(s.download_allowed("b", "aa").await.unwrap());
    assert!(
        !s.download_allowed("b", "bb").await.unwrap(),
        "another image"
    );
    assert!(
        !s.download_allowed("c", "aa").await.unwrap(),
        "not notified yet"
    );
    assert!(
        !s.download_allowed("a", "aa").await.unwrap(),
        "already finished"
    );
    assert_eq!(s.active_updates_of_device("b").await.unwrap().len(), 1);

    // Campaign moves are compare-and-set too.
    assert!(
        s.update_campaign(
            "cmp-1",
            (CampaignState::Running, 0),
            (CampaignState::Running, 1),
            None,
            at(5)
        )
        .await
        .unwrap()
    );
    assert!(
        !s.update_campaign(
            "cmp-1",
            (CampaignState::Running, 0),
            (CampaignState::Running, 1),
            None,
            at(6)
        )
        .await
        .unwrap(),
        "a second node advancing the same wave loses"
    );
    assert!(
        s.update_campaign(
            "cmp-1",
            (CampaignState::Running, 1),
            (CampaignState::Aborted, 1),
            Some("2 of 3 failed"),
            at(7)
        )
        .await
        .unwrap()
    );
    let c1 = s.campaign("cmp-1").await.unwrap().unwrap();
    assert_eq!(
        (
            c1.state,
            c1.current_wave,
            c1.reason.as_deref(),
            c1.updated_at
        ),
        (CampaignState::Aborted, 1, Some("2 of 3 failed"), at(7))
    );
    // A device's row stays readable whatever the campaign's state.
    let b = s.update_of_device("cmp-1", "b").await.unwrap().unwrap();
    assert_eq!(b.state, UpdateState::Notified);
    assert_eq!(s.update_of_device("cmp-1", "zz").await.unwrap(), None);
    // Ended campaigns authorise nothing and are not a device's active updates.
    assert!(!s.download_allowed("b", "aa").await.unwrap());
    assert!(s.active_updates_of_device("b").await.unwrap().is_empty());
    assert_eq!(s.list_campaigns().await.unwrap().len(), 1);
}

pub async fn inventory_and_group_members(db: &TestDb) {
    let s = &db.store;
    for id in ["d0", "d1", "d2"] {
        s.create_device(&crate::common::device(id), None)
            .await
            .unwrap();
    }
    // A device that never reported: its factory model (allow-list) counts.
    let mut factory = crate::common::device("d4");
    factory.factory = Some(moat_store::FactoryInfo {
        serial: "SN-4".into(),
        mac: None,
        model: Some("sensor-v2".into()),
    });
    s.create_device(&factory, None).await.unwrap();
    assert_eq!(s.inventory("d1").await.unwrap(), None);
    let mut inv = Inventory {
        device_id: "d1".into(),
        model: "sensor-v2".into(),
        version: "1.0.0+0".into(),
        security_counter: 3,
        updated_at: t0(),
    };
    s.put_inventory(&inv).await.unwrap();
    inv.version = "1.1.0+0".into();
    inv.security_counter = 4;
    s.put_inventory(&inv).await.unwrap();
    s.put_inventory(&Inventory {
        device_id: "d0".into(),
        ..inv.clone()
    })
    .await
    .unwrap();
    s.put_inventory(&Inventory {
        device_id: "d2".into(),
        model: "other".into(),
        ..inv.clone()
    })
    .await
    .unwrap();
    assert_eq!(s.inventory("d1").await.unwrap(), Some(inv));
    assert_eq!(
        s.devices_of_model("sensor-v2").await.unwrap(),
        ["d0", "d1", "d4"]
    );
    assert!(s.devices_of_model("none").await.unwrap().is_empty());

    for (id, kind, group) in [
        ("d3", IdentityKind::Device, Some("lab")),
        ("d1", IdentityKind::Device, Some("lab")),
        ("app", IdentityKind::App, Some("lab")),
        ("d2", IdentityKind::Device, None),
    ] {
        s.put_identity_access(&IdentityAccess {
            device_id: id.into(),
            kind,
            group: group.map(str::to_owned),
            policy: None,
        })
        .await
        .unwrap();
    }
    assert_eq!(s.group_members("lab").await.unwrap(), ["d1", "d3"]);
}
