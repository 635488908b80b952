//! CAs, CRL numbering and storage, one-time registration codes.

use crate::common::{TestDb, at, ca, t0};
use moat_store::{CrlRecord, Error};
use std::collections::BTreeSet;

pub async fn cas(db: &TestDb) {
    let s = &db.store;
    let mut root = ca("root");
    root.kind = moat_store::CaKind::Root;
    let mut vendor = ca("vendor");
    vendor.kind = moat_store::CaKind::Registered;
    vendor.key_ref = None;
    vendor.auto_register = true;
    vendor.identity_rule = "san-uri".into();
    s.insert_ca(&vendor).await.unwrap();
    s.insert_ca(&root).await.unwrap();
    assert_eq!(s.ca("vendor").await.unwrap(), Some(vendor.clone()));
    assert_eq!(s.ca("root").await.unwrap(), Some(root.clone()));
    assert_eq!(s.ca("nope").await.unwrap(), None);
    assert_eq!(s.list_cas().await.unwrap(), [root.clone(), vendor.clone()]);

    let mut same_name = ca("root");
    same_name.fingerprint = "new".into();
    assert!(matches!(s.insert_ca(&same_name).await, Err(Error::Conflict(m)) if m.contains("root")));
    let mut same_fp = ca("other");
    same_fp.fingerprint = vendor.fingerprint.clone();
    assert!(matches!(
        s.insert_ca(&same_fp).await,
        Err(Error::Conflict(_))
    ));

    s.delete_ca("vendor").await.unwrap();
    assert_eq!(s.ca("vendor").await.unwrap(), None);
    assert!(matches!(
        s.delete_ca("vendor").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(s.list_cas().await.unwrap(), [root]);
}

fn crl(ca_name: &str, number: u64) -> CrlRecord {
    CrlRecord {
        ca_name: ca_name.into(),
        number,
        der: vec![0x30, number as u8],
        this_update: at(number as i64),
        next_update: at(number as i64 + 3600),
    }
}

pub async fn crl_numbers_and_crls(db: &TestDb) {
    let s = &db.store;
    s.insert_ca(&ca("devices")).await.unwrap();
    s.insert_ca(&ca("other")).await.unwrap();
    assert_eq!(s.next_crl_number("devices").await.unwrap(), 1);
    assert_eq!(s.next_crl_number("devices").await.unwrap(), 2);
    assert_eq!(s.next_crl_number("other").await.unwrap(), 1);
    assert!(matches!(
        s.next_crl_number("nope").await,
        Err(Error::NotFound(_))
    ));

    assert_eq!(s.latest_crl("devices").await.unwrap(), None);
    s.save_crl(&crl("devices", 2)).await.unwrap();
    assert_eq!(
        s.latest_crl("devices").await.unwrap(),
        Some(crl("devices", 2))
    );
    s.save_crl(&crl("devices", 1)).await.unwrap();
    assert_eq!(
        s.latest_crl("devices").await.unwrap(),
        Some(crl("devices", 2)),
        "a lower number must not replace"
    );
    let mut same_number = crl("devices", 2);
    same_number.der = vec![0xde, 0xad];
    s.save_crl(&same_number).await.unwrap();
    assert_eq!(
        s.latest_crl("devices").await.unwrap(),
        Some(crl("devices", 2)),
        "an equal number must not replace"
    );
    s.save_crl(&crl("devices", 7)).await.unwrap();
    assert_eq!(
        s.latest_crl("devices").await.unwrap(),
        Some(crl("devices", 7))
    );
    assert_eq!(s.latest_crl("other").await.unwrap(), None);

    let r = s.save_crl(&crl("nope", 1)).await;
    assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");

    // Deleting the CA deletes its CRL.
    s.delete_ca("devices").await.unwrap();
    assert_eq!(s.latest_crl("devices").await.unwrap(), None);
}

pub async fn concurrent_crl_numbers_are_distinct(db: &TestDb) {
    db.store.insert_ca(&ca("devices")).await.unwrap();
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let s = db.store.clone();
            tokio::spawn(async move { s.next_crl_number("devices").await })
        })
        .collect();
    let mut got = BTreeSet::new();
    for t in tasks {
        assert!(
            got.insert(t.await.unwrap().unwrap()),
            "duplicate CRL number"
        );
    }
    assert_eq!(got, (1..=24).collect());
}

pub async fn registration_codes(db: &TestDb) {
    let s = &db.store;
    s.insert_registration_code("h1", t0(), at(600))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_registration_code("h1", t0(), at(600)).await,
        Err(Error::Conflict(_))
    ));
    assert!(s.registration_code_usable("h1", at(1)).await.unwrap());
    assert!(
        s.registration_code_usable("h1", at(1)).await.unwrap(),
        "checking does not burn"
    );
    assert!(s.consume_registration_code("h1", at(2)).await.unwrap());
    assert!(
        !s.consume_registration_code("h1", at(3)).await.unwrap(),
        "burnt once"
    );
    assert!(!s.registration_code_usable("h1", at(3)).await.unwrap());

    s.insert_registration_code("h2", t0(), at(600))
        .await
        .unwrap();
    assert!(
        !s.registration_code_usable("h2", at(600)).await.unwrap(),
        "expired at expires_at"
    );
    assert!(!s.consume_registration_code("h2", at(601)).await.unwrap());
    assert!(
        s.consume_registration_code("h2", at(599)).await.unwrap(),
        "expired check did not burn"
    );

    assert!(!s.registration_code_usable("unknown", at(1)).await.unwrap());
    assert!(!s.consume_registration_code("unknown", at(1)).await.unwrap());
}

pub async fn concurrent_code_burns_once(db: &TestDb) {
    db.store
        .insert_registration_code("h", t0(), at(600))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = db.store.clone();
            tokio::spawn(async move { s.consume_registration_code("h", at(1)).await })
        })
        .collect();
    let mut burnt = 0;
    for t in tasks {
        burnt += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(burnt, 1);
}
