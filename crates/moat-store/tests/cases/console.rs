//! The web console's reads: the device page (paging, total, text and state filters, the
//! certificate expiry, firmware version and last-seen columns), device presence, and the
//! audit search.

use crate::common::{TestDb, at, cert, device};
use moat_store::{
    AuditFilter, DevicePage, DeviceQuery, DeviceState, FactoryInfo, Inventory, NewAuditEntry,
};

fn ids(page: &DevicePage) -> Vec<&str> {
    page.rows.iter().map(|r| r.device.id.as_str()).collect()
}

fn text(t: &str) -> DeviceQuery {
    DeviceQuery {
        text: Some(t.into()),
        state: None,
    }
}

pub async fn console_device_page(db: &TestDb) {
    let s = &db.store;
    for i in 1..=25 {
        s.create_device(&device(&format!("dev{i:04}")), None)
            .await
            .unwrap();
    }
    let all = DeviceQuery::default();
    let first = s.device_page(&all, 0, 10).await.unwrap();
    assert_eq!(first.total, 25);
    assert_eq!(
        ids(&first),
        (1..=10).map(|i| format!("dev{i:04}")).collect::<Vec<_>>()
    );
    let last = s.device_page(&all, 20, 10).await.unwrap();
    assert_eq!(
        (ids(&last), last.total),
        (
            vec!["dev0021", "dev0022", "dev0023", "dev0024", "dev0025"],
            25
        )
    );
    let past = s.device_page(&all, 30, 10).await.unwrap();
    assert_eq!((past.rows.len(), past.total), (0, 25));
    assert_eq!(
        s.device_page(&all, u64::MAX, 10).await.unwrap().total,
        25,
        "an offset past i64::MAX is an empty page"
    );

    // Text: id, factory serial, owner and model, whatever the case; wildcards are literal.
    let mut tagged = device("zeta");
    tagged.factory = Some(FactoryInfo {
        serial: "SN-ABC-77".into(),
        mac: None,
        model: Some("Thermo-X".into()),
    });
    tagged.owner = Some("Acme 50% Off".into());
    s.create_device(&tagged, None).await.unwrap();
    let mut other = device("omega");
    other.owner = Some("500 units a\\b abc".into());
    s.create_device(&other, None).await.unwrap();
    for (q, want) in [
        ("DEV0003", vec!["dev0003"]),
        (
            "dev002",
            vec![
                "dev0020", "dev0021", "dev0022", "dev0023", "dev0024", "dev0025",
            ],
        ),
        ("sn-abc", vec!["zeta"]),
        ("thermo-x", vec!["zeta"]),
        ("ACME", vec!["zeta"]),
        ("abc", vec!["omega", "zeta"]),
        // `%` and `_` would match "500 units" and "abc" as wildcards.
        ("50%", vec!["zeta"]),
        ("a_c", vec![]),
        ("a\\b", vec!["omega"]),
        ("nothing", vec![]),
    ] {
        let page = s.device_page(&text(q), 0, 100).await.unwrap();
        assert_eq!(ids(&page), want, "text {q:?}");
        assert_eq!(page.total, want.len() as u64, "total of {q:?}");
    }
    assert_eq!(
        s.device_page(&text(""), 0, 1).await.unwrap().total,
        27,
        "empty text: all"
    );

    // State, alone and with text; the total counts only matches, the page is limited.
    for id in ["dev0004", "dev0012", "dev0013", "zeta"] {
        s.set_device_state(id, DeviceState::Disabled, at(5))
            .await
            .unwrap();
    }
    let disabled = DeviceQuery {
        text: None,
        state: Some(DeviceState::Disabled),
    };
    let page = s.device_page(&disabled, 1, 2).await.unwrap();
    assert_eq!((ids(&page), page.total), (vec!["dev0012", "dev0013"], 4));
    let page = s
        .device_page(
            &DeviceQuery {
                text: Some("dev001".into()),
                state: Some(DeviceState::Disabled),
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!((ids(&page), page.total), (vec!["dev0012", "dev0013"], 2));
    let revoked = DeviceQuery {
        text: None,
        state: Some(DeviceState::Revoked),
    };
    assert_eq!(
        s.device_page(&revoked, 0, 10).await.unwrap(),
        DevicePage::default()
    );

    // The columns beside the device: the latest unrevoked certificate's expiry, the
    // reported firmware version, presence.
    for (serial, id, not_after, revoked) in [
        ("c1", "dev0001", 100, false),
        ("c2", "dev0001", 300, true),
        ("c3", "dev0001", 200, false),
        ("c4", "dev0002", 50, true),
        ("c5", "dev0003", -50, false),
    ] {
        let mut c = cert(serial, Some(id));
        c.not_after = at(not_after);
        s.insert_cert(&c).await.unwrap();
        if revoked {
            s.revoke_cert(serial, "superseded", at(1)).await.unwrap();
        }
    }
    s.put_inventory(&Inventory {
        device_id: "dev0002".into(),
        model: "M1".into(),
        version: "2.1.0".into(),
        security_counter: 3,
        updated_at: at(2),
    })
    .await
    .unwrap();
    s.touch_presence("dev0003", at(7)).await.unwrap();
    let page = s.device_page(&all, 0, 4).await.unwrap();
    let cols: Vec<_> = page
        .rows
        .iter()
        .map(|r| (r.cert_expires, r.firmware_version.as_deref(), r.last_seen))
        .collect();
    assert_eq!(
        cols,
        vec![
            (Some(at(200)), None, None),
            (None, Some("2.1.0"), None),
            (Some(at(-50)), None, Some(at(7))),
            (None, None, None),
        ]
    );
    assert_eq!(page.rows[0].device, device("dev0001"));
}

pub async fn console_presence(db: &TestDb) {
    let s = &db.store;
    let last_seen = |id: &'static str| async move {
        let page = s.device_page(&text(id), 0, 1).await.unwrap();
        assert_eq!(ids(&page), vec![id]);
        page.rows[0].last_seen
    };
    s.create_device(&device("a"), None).await.unwrap();
    assert_eq!(last_seen("a").await, None);
    s.touch_presence("a", at(10)).await.unwrap();
    assert_eq!(last_seen("a").await, Some(at(10)));
    s.touch_presence("a", at(20)).await.unwrap();
    assert_eq!(
        last_seen("a").await,
        Some(at(20)),
        "a later time replaces it"
    );
    s.touch_presence("a", at(15)).await.unwrap();
    assert_eq!(
        last_seen("a").await,
        Some(at(20)),
        "an earlier one does not"
    );

    // An unknown device: no error and no row (a device created afterwards has none).
    s.touch_presence("ghost", at(30)).await.unwrap();
    s.create_device(&device("ghost"), None).await.unwrap();
    assert_eq!(last_seen("ghost").await, None);

    // Deleting a device deletes its presence.
    s.delete_device("a").await.unwrap();
    s.create_device(&device("a"), None).await.unwrap();
    assert_eq!(last_seen("a").await, None);
}

pub async fn console_audit_search(db: &TestDb) {
    let s = &db.store;
    let mut ids_by_n = Vec::new();
    for (n, actor, action, target, outcome) in [
        (0, "admin", "device.create", Some("d1"), "ok"),
        (1, "operator:ann", "device.create", Some("d2"), "refused"),
        (2, "admin", "devices.export", None, "ok"),
        (3, "device:d1", "device.activate", Some("d1"), "ok"),
        (4, "operator:ann", "cert.revoke", Some("d1"), "error"),
        (5, "admin", "device_x", Some("d2"), "ok"),
        (6, "operator:ann", "device.delete", Some("d1"), "ok"),
    ] {
        let id = s
            .append_audit(&NewAuditEntry {
                at: at(n),
                actor: actor.into(),
                action: action.into(),
                target: target.map(Into::into),
                outcome: outcome.into(),
                detail: None,
            })
            .await
            .unwrap();
        ids_by_n.push(id);
    }
    // The entries found, as their position in the list above.
    let search = |f: AuditFilter, before: Option<i64>, limit: u32| {
        let ids_by_n = ids_by_n.clone();
        async move {
            s.audit_search(&f, before, limit)
                .await
                .unwrap()
                .iter()
                .map(|e| ids_by_n.iter().position(|id| *id == e.id).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let f = |actor: Option<&str>,
             action: Option<&str>,
             target: Option<&str>,
             outcome: Option<&str>| AuditFilter {
        actor: actor.map(Into::into),
        action: action.map(Into::into),
        target: target.map(Into::into),
        outcome: outcome.map(Into::into),
    };
    assert_eq!(
        search(AuditFilter::default(), None, 100).await,
        vec![6, 5, 4, 3, 2, 1, 0]
    );
    assert_eq!(
        search(f(Some("operator:ann"), None, None, None), None, 100).await,
        vec![6, 4, 1]
    );
    assert_eq!(
        search(f(Some("operator"), None, None, None), None, 100).await,
        Vec::<usize>::new(),
        "actor is exact"
    );
    assert_eq!(
        search(f(None, Some("device."), None, None), None, 100).await,
        vec![6, 3, 1, 0]
    );
    assert_eq!(
        search(f(None, Some("device"), None, None), None, 100).await,
        vec![6, 5, 3, 2, 1, 0]
    );
    assert_eq!(
        search(f(None, Some("device_"), None, None), None, 100).await,
        vec![5],
        "`_` is literal"
    );
    assert_eq!(
        search(f(None, Some("Device."), None, None), None, 100).await,
        Vec::<usize>::new(),
        "case-sensitive"
    );
    assert_eq!(
        search(f(None, None, Some("d1"), None), None, 100).await,
        vec![6, 4, 3, 0]
    );
    assert_eq!(
        search(f(None, None, Some("d"), None), None, 100).await,
        Vec::<usize>::new(),
        "target is exact"
    );
    assert_eq!(
        search(f(None, None, None, Some("ok")), None, 100).await,
        vec![6, 5, 3, 2, 0]
    );
    assert_eq!(
        search(f(None, None, None, Some("refused")), None, 100).await,
        vec![1]
    );
    assert_eq!(
        search(
            f(
                Some("operator:ann"),
                Some("device."),
                Some("d1"),
                Some("ok")
            ),
            None,
            100
        )
        .await,
        vec![6]
    );
    assert_eq!(
        search(f(Some("admin"), None, Some("d2"), None), None, 100).await,
        vec![5]
    );

    // Paging by id: newest first, strictly before the last id seen.
    let by_target = f(None, None, Some("d1"), None);
    assert_eq!(search(by_target.clone(), None, 2).await, vec![6, 4]);
    assert_eq!(
        search(by_target.clone(), Some(ids_by_n[4]), 2).await,
        vec![3, 0]
    );
    assert_eq!(
        search(by_target, Some(ids_by_n[0]), 2).await,
        Vec::<usize>::new()
    );
    let by_actor = f(Some("admin"), None, None, None);
    assert_eq!(
        search(by_actor.clone(), Some(ids_by_n[5]), 1).await,
        vec![2]
    );
    assert_eq!(search(by_actor, Some(ids_by_n[2]), 10).await, vec![0]);
    assert_eq!(
        search(AuditFilter::default(), Some(ids_by_n[3]), 2).await,
        vec![2, 1]
    );
}
