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
