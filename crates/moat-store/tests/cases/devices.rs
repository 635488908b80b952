//! Devices: create, read, state, delete, paging, atomic creation with a certificate, reopen.

use crate::common::{TestDb, at, ca, cert, device, t0};
use moat_store::{ConnectionPolicy, DeviceState, Error};

pub async fn devices_crud(db: &TestDb) {
    let s = &db.store;
    assert_eq!(s.device("d1").await.unwrap(), None);
    let mut d = device("d1");
    d.token_hash = Some("abcd".into());
    d.policy = ConnectionPolicy::AllowInsecure;
    s.create_device(&d, None).await.unwrap();
    assert_eq!(s.device("d1").await.unwrap(), Some(d.clone()));

    let dup = s.create_device(&device("d1"), None).await;
    assert!(
        matches!(dup, Err(Error::Conflict(ref m)) if m.contains("d1")),
        "{dup:?}"
    );

    s.set_device_state("d1", DeviceState::Disabled, at(60))
        .await
        .unwrap();
    let got = s.device("d1").await.unwrap().unwrap();
    assert_eq!(got.state, DeviceState::Disabled);
    assert_eq!(got.updated_at, at(60));
    assert_eq!(got.created_at, t0());

    let missing = s.set_device_state("nope", DeviceState::Active, at(1)).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

    s.delete_device("d1").await.unwrap();
    assert_eq!(s.device("d1").await.unwrap(), None);
    assert!(matches!(
        s.delete_device("d1").await,
        Err(Error::NotFound(_))
    ));
}

pub async fn device_paging(db: &TestDb) {
    let s = &db.store;
    for id in ["e", "a", "c", "b", "d"] {
        s.create_device(&device(id), None).await.unwrap();
    }
    let ids = |v: Vec<moat_store::Device>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_devices(None, 2).await.unwrap()), ["a", "b"]);
    assert_eq!(ids(s.list_devices(Some("b"), 2).await.unwrap()), ["c", "d"]);
    assert_eq!(ids(s.list_devices(Some("d"), 2).await.unwrap()), ["e"]);
    assert!(s.list_devices(Some("e"), 2).await.unwrap().is_empty());
    assert_eq!(s.list_devices(None, 100).await.unwrap().len(), 5);
    assert!(s.list_devices(None, 0).await.unwrap().is_empty());
}

pub async fn create_device_is_atomic(db: &TestDb) {
    let s = &db.store;
    let c1 = cert("01", Some("d1"));
    s.create_device(&device("d1"), Some(&c1)).await.unwrap();
    assert_eq!(s.cert("01").await.unwrap(), Some(c1.clone()));

    // Same serial and CA: the certificate conflicts, so the device must not exist either.
    let mut same_serial = cert("01", Some("d2"));
    same_serial.fingerprint = "other".into();
    let r = s.create_device(&device("d2"), Some(&same_serial)).await;
    assert!(
        matches!(r, Err(Error::Conflict(ref m)) if m.contains("serial")),
        "{r:?}"
    );
    assert_eq!(s.device("d2").await.unwrap(), None);

    // Same fingerprint, new serial: same outcome.
    let mut same_fp = cert("02", Some("d3"));
    same_fp.fingerprint = c1.fingerprint.clone();
    let r = s.create_device(&device("d3"), Some(&same_fp)).await;
    assert!(
        matches!(r, Err(Error::Conflict(ref m)) if m.contains("fingerprint")),
        "{r:?}"
    );
    assert_eq!(s.device("d3").await.unwrap(), None);
    assert_eq!(s.cert("02").await.unwrap(), None);

    // Device id conflict: the certificate is not stored.
    let r = s
        .create_device(&device("d1"), Some(&cert("03", Some("d1"))))
        .await;
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    assert_eq!(s.cert("03").await.unwrap(), None);

    // The store still works after the failed transactions.
    s.create_device(&device("d2"), Some(&cert("04", Some("d2"))))
        .await
        .unwrap();
    assert_eq!(s.list_devices(None, 10).await.unwrap().len(), 2);
}

pub async fn persistence_across_reopen(db: &TestDb) {
    let s = &db.store;
    s.create_device(&device("kept"), Some(&cert("42", Some("kept"))))
        .await
        .unwrap();
    s.insert_ca(&ca("devices")).await.unwrap();
    assert_eq!(s.next_crl_number("devices").await.unwrap(), 1);
    s.put_setting("k", "v").await.unwrap();

    // A second handle on the same database (migrations run again and must be a no-op).
    let reopened = moat_store::open(&db.url).await.unwrap();
    assert_eq!(reopened.device("kept").await.unwrap(), Some(device("kept")));
    assert_eq!(
        reopened.cert("42").await.unwrap(),
        Some(cert("42", Some("kept")))
    );
    assert_eq!(reopened.next_crl_number("devices").await.unwrap(), 2);
    assert_eq!(reopened.setting("k").await.unwrap().as_deref(), Some("v"));
}

/// 64 creations at once (on SQLite: group-committed in shared transactions): each gets its
/// own result, a conflict rolls back only its own write, and every success is in the
/// database as seen by a second handle.
pub async fn concurrent_creates_get_their_own_results(db: &TestDb) {
    // 0..48: devices d0..d47 with certificates s0..s47.
    // 48..56: d0..d7 again (new serials): one of each pair wins, the other is a device conflict.
    // 56..64: new devices e56..e63 reusing serials s16..s23: one of each pair wins, the other
    // is a serial conflict and its device must not exist.
    let op = |i: usize| -> (String, String) {
        match i {
            0..48 => (format!("d{i}"), format!("s{i}")),
            48..56 => (format!("d{}", i - 48), format!("s{i}")),
            _ => (format!("e{i}"), format!("s{}", i - 40)),
        }
    };
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = db.store.clone();
            let (id, serial) = op(i);
            tokio::spawn(async move {
                let mut c = cert(&serial, Some(&id));
                c.fingerprint = format!("fp-{i}");
                s.create_device(&device(&id), Some(&c)).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ok = |i: usize| results[i].is_ok();
    let conflict =
        |i: usize, what: &str| matches!(&results[i], Err(Error::Conflict(m)) if m.contains(what));
    for i in (8..16).chain(24..48) {
        assert!(ok(i), "op {i}: {:?}", results[i]);
    }
    for k in 0..8 {
        let (a, b) = (k, 48 + k);
        let id = format!("device d{k}");
        assert!(
            (ok(a) && conflict(b, &id)) || (ok(b) && conflict(a, &id)),
            "ops {a}, {b}: {:?}, {:?}",
            results[a],
            results[b]
        );
    }
    for k in 16..24 {
        let (a, b) = (k, k + 40);
        assert!(
            (ok(a) && conflict(b, "serial")) || (ok(b) && conflict(a, "serial")),
            "ops {a}, {b}: {:?}, {:?}",
            results[a],
            results[b]
        );
    }

    // A second handle (a new pool on the same file or database) sees exactly the successes.
    let reopened = moat_store::open(&db.url).await.unwrap();
    for (i, result) in results.iter().enumerate() {
        let (id, serial) = op(i);
        let stored = reopened.cert(&serial).await.unwrap();
        if result.is_ok() {
            let d = reopened.device(&id).await.unwrap();
            assert_eq!(d, Some(device(&id)), "op {i}");
            let stored = stored.unwrap_or_else(|| panic!("op {i}: certificate {serial} missing"));
            assert_eq!(stored.fingerprint, format!("fp-{i}"), "op {i}");
        } else {
            // The loser's certificate is not the stored one (if any is stored under its serial).
            assert_ne!(
                stored.map(|c| c.fingerprint),
                Some(format!("fp-{i}")),
                "op {i}"
            );
            if i >= 56 {
                assert_eq!(reopened.device(&id).await.unwrap(), None, "op {i}");
            }
        }
    }
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 48);
    assert_eq!(reopened.list_devices(None, 1000).await.unwrap().len(), 48);
    assert_eq!(reopened.list_certs(None, 1000).await.unwrap().len(), 48);
}
