//! One behavioural suite, run against SQLite and PostgreSQL.
//!
//! Each case is an `async fn(&TestDb)`; the `suite!` macro makes a SQLite test and a
//! PostgreSQL test of it. PostgreSQL needs `MOAT_TEST_DATABASE_URL` (see `common`).

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestDb, at, ca, cert, device, t0};
use moat_store::{
    CertSource, ConnectionPolicy, CrlRecord, DeviceState, Error, NewAuditEntry, RevokedCert,
};
use std::collections::BTreeSet;

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = crate::common::TestDb::sqlite().await;
                    crate::$case(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = crate::common::TestDb::postgres().await else { return };
                    crate::$case(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

suite!(
    devices_crud,
    device_paging,
    create_device_is_atomic,
    certificates,
    revocation,
    cas,
    crl_numbers_and_crls,
    concurrent_crl_numbers_are_distinct,
    registration_codes,
    concurrent_code_burns_once,
    settings,
    audit_paging,
    persistence_across_reopen,
);

async fn devices_crud(db: &TestDb) {
    let s = &db.store;
    assert_eq!(s.device("d1").await.unwrap(), None);
    let mut d = device("d1");
    d.token_hash = Some("abcd".into());
    d.policy = ConnectionPolicy::AllowInsecure;
    s.create_device(&d, None).await.unwrap();
    assert_eq!(s.device("d1").await.unwrap(), Some(d.clone()));

    let dup = s.create_device(&device("d1"), None).await;
    assert!(matches!(dup, Err(Error::Conflict(ref m)) if m.contains("d1")), "{dup:?}");

    s.set_device_state("d1", DeviceState::Disabled, at(60)).await.unwrap();
    let got = s.device("d1").await.unwrap().unwrap();
    assert_eq!(got.state, DeviceState::Disabled);
    assert_eq!(got.updated_at, at(60));
    assert_eq!(got.created_at, t0());

    let missing = s.set_device_state("nope", DeviceState::Active, at(1)).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

    s.delete_device("d1").await.unwrap();
    assert_eq!(s.device("d1").await.unwrap(), None);
    assert!(matches!(s.delete_device("d1").await, Err(Error::NotFound(_))));
}

async fn device_paging(db: &TestDb) {
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

async fn create_device_is_atomic(db: &TestDb) {
    let s = &db.store;
    let c1 = cert("01", Some("d1"));
    s.create_device(&device("d1"), Some(&c1)).await.unwrap();
    assert_eq!(s.cert("01").await.unwrap(), Some(c1.clone()));

    // Same serial and CA: the certificate conflicts, so the device must not exist either.
    let mut same_serial = cert("01", Some("d2"));
    same_serial.fingerprint = "other".into();
    let r = s.create_device(&device("d2"), Some(&same_serial)).await;
    assert!(matches!(r, Err(Error::Conflict(ref m)) if m.contains("serial")), "{r:?}");
    assert_eq!(s.device("d2").await.unwrap(), None);

    // Same fingerprint, new serial: same outcome.
    let mut same_fp = cert("02", Some("d3"));
    same_fp.fingerprint = c1.fingerprint.clone();
    let r = s.create_device(&device("d3"), Some(&same_fp)).await;
    assert!(matches!(r, Err(Error::Conflict(ref m)) if m.contains("fingerprint")), "{r:?}");
    assert_eq!(s.device("d3").await.unwrap(), None);
    assert_eq!(s.cert("02").await.unwrap(), None);

    // Device id conflict: the certificate is not stored.
    let r = s.create_device(&device("d1"), Some(&cert("03", Some("d1")))).await;
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    assert_eq!(s.cert("03").await.unwrap(), None);

    // The store still works after the failed transactions.
    s.create_device(&device("d2"), Some(&cert("04", Some("d2")))).await.unwrap();
    assert_eq!(s.list_devices(None, 10).await.unwrap().len(), 2);
}

async fn certificates(db: &TestDb) {
    let s = &db.store;
    let mut hub = cert("0a", None);
    hub.source = CertSource::Hub;
    s.insert_cert(&hub).await.unwrap();
    assert_eq!(s.cert("0a").await.unwrap(), Some(hub.clone()));
    assert_eq!(s.cert_by_fingerprint("fp-0a").await.unwrap(), Some(hub.clone()));
    assert_eq!(s.cert("ff").await.unwrap(), None);
    assert_eq!(s.cert_by_fingerprint("none").await.unwrap(), None);

    let mut dup = cert("0a", None);
    dup.fingerprint = "fresh".into();
    assert!(matches!(s.insert_cert(&dup).await, Err(Error::Conflict(m)) if m.contains("serial")));
    let mut dup_fp = cert("0b", None);
    dup_fp.fingerprint = "fp-0a".into();
    let r = s.insert_cert(&dup_fp).await;
    assert!(matches!(r, Err(Error::Conflict(ref m)) if m.contains("fingerprint")), "{r:?}");

    // The same serial from another CA is a different certificate; `cert` returns the newest.
    let mut vendor = cert("0a", Some("v1"));
    vendor.ca_name = "vendor".into();
    vendor.fingerprint = "fp-vendor-0a".into();
    vendor.source = CertSource::Bound;
    vendor.created_at = at(10);
    s.insert_cert(&vendor).await.unwrap();
    assert_eq!(s.cert("0a").await.unwrap(), Some(vendor.clone()));

    // Listing: newest first, per device, limited.
    for (i, serial) in ["10", "11", "12"].into_iter().enumerate() {
        let mut c = cert(serial, Some("dev"));
        c.created_at = at(100 + i as i64);
        c.source = CertSource::HubKey;
        s.insert_cert(&c).await.unwrap();
    }
    let serials = |v: Vec<moat_store::CertRecord>| v.into_iter().map(|c| c.serial).collect::<Vec<_>>();
    assert_eq!(serials(s.list_certs(Some("dev"), 10).await.unwrap()), ["12", "11", "10"]);
    assert_eq!(serials(s.list_certs(Some("dev"), 2).await.unwrap()), ["12", "11"]);
    assert_eq!(serials(s.list_certs(None, 4).await.unwrap()), ["12", "11", "10", "0a"]);
    assert_eq!(s.list_certs(None, 100).await.unwrap().len(), 5);
    assert!(s.list_certs(Some("nobody"), 10).await.unwrap().is_empty());

    // Certificates outlive their device.
    s.create_device(&device("gone"), Some(&cert("20", Some("gone")))).await.unwrap();
    s.delete_device("gone").await.unwrap();
    assert_eq!(s.cert("20").await.unwrap().unwrap().device_id.as_deref(), Some("gone"));
}

async fn revocation(db: &TestDb) {
    let s = &db.store;
    for serial in ["01", "02", "03"] {
        s.insert_cert(&cert(serial, Some("d1"))).await.unwrap();
    }
    s.insert_cert(&cert("04", Some("d2"))).await.unwrap();
    let mut other = cert("05", Some("d3"));
    other.ca_name = "vendor".into();
    s.insert_cert(&other).await.unwrap();

    assert!(s.all_revoked_serials().await.unwrap().is_empty());
    assert!(s.revoke_cert("02", "key_compromise", at(5)).await.unwrap());
    assert!(!s.revoke_cert("02", "superseded", at(6)).await.unwrap(), "already revoked");
    let c = s.cert("02").await.unwrap().unwrap();
    assert_eq!(c.revoked_at, Some(at(5)));
    assert_eq!(c.revocation_reason.as_deref(), Some("key_compromise"));
    assert!(matches!(s.revoke_cert("99", "x", at(5)).await, Err(Error::NotFound(_))));

    // Only the serials revoked by this call.
    assert_eq!(s.revoke_device_certs("d1", "cessation_of_operation", at(7)).await.unwrap(), ["01", "03"]);
    assert!(s.revoke_device_certs("d1", "cessation_of_operation", at(8)).await.unwrap().is_empty());
    assert!(s.revoke_device_certs("nobody", "x", at(8)).await.unwrap().is_empty());
    assert_eq!(s.cert("04").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(s.revoke_device_certs("d3", "superseded", at(9)).await.unwrap(), ["05"]);

    let rc = |serial: &str, secs, reason: &str| RevokedCert {
        serial: serial.into(),
        revoked_at: at(secs),
        reason: reason.into(),
    };
    assert_eq!(
        s.revoked_certs("devices").await.unwrap(),
        [rc("01", 7, "cessation_of_operation"), rc("02", 5, "key_compromise"), rc("03", 7, "cessation_of_operation")]
    );
    assert_eq!(s.revoked_certs("vendor").await.unwrap(), [rc("05", 9, "superseded")]);
    assert!(s.revoked_certs("none").await.unwrap().is_empty());
    let all: BTreeSet<String> = s.all_revoked_serials().await.unwrap().into_iter().collect();
    assert_eq!(all, ["01", "02", "03", "05"].map(String::from).into());
}

async fn cas(db: &TestDb) {
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
    assert!(matches!(s.insert_ca(&same_fp).await, Err(Error::Conflict(_))));

    s.delete_ca("vendor").await.unwrap();
    assert_eq!(s.ca("vendor").await.unwrap(), None);
    assert!(matches!(s.delete_ca("vendor").await, Err(Error::NotFound(_))));
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

async fn crl_numbers_and_crls(db: &TestDb) {
    let s = &db.store;
    s.insert_ca(&ca("devices")).await.unwrap();
    s.insert_ca(&ca("other")).await.unwrap();
    assert_eq!(s.next_crl_number("devices").await.unwrap(), 1);
    assert_eq!(s.next_crl_number("devices").await.unwrap(), 2);
    assert_eq!(s.next_crl_number("other").await.unwrap(), 1);
    assert!(matches!(s.next_crl_number("nope").await, Err(Error::NotFound(_))));

    assert_eq!(s.latest_crl("devices").await.unwrap(), None);
    s.save_crl(&crl("devices", 2)).await.unwrap();
    assert_eq!(s.latest_crl("devices").await.unwrap(), Some(crl("devices", 2)));
    s.save_crl(&crl("devices", 1)).await.unwrap();
    s.save_crl(&crl("devices", 2)).await.unwrap();
    assert_eq!(s.latest_crl("devices").await.unwrap(), Some(crl("devices", 2)), "lower or equal number must not replace");
    s.save_crl(&crl("devices", 7)).await.unwrap();
    assert_eq!(s.latest_crl("devices").await.unwrap(), Some(crl("devices", 7)));
    assert_eq!(s.latest_crl("other").await.unwrap(), None);

    let r = s.save_crl(&crl("nope", 1)).await;
    assert!(matches!(r, Err(Error::NotFound(_))), "{r:?}");

    // Deleting the CA deletes its CRL.
    s.delete_ca("devices").await.unwrap();
    assert_eq!(s.latest_crl("devices").await.unwrap(), None);
}

async fn concurrent_crl_numbers_are_distinct(db: &TestDb) {
    s_insert_ca(db, "devices").await;
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let s = db.store.clone();
            tokio::spawn(async move { s.next_crl_number("devices").await })
        })
        .collect();
    let mut got = BTreeSet::new();
    for t in tasks {
        assert!(got.insert(t.await.unwrap().unwrap()), "duplicate CRL number");
    }
    assert_eq!(got, (1..=24).collect());
}

async fn s_insert_ca(db: &TestDb, name: &str) {
    db.store.insert_ca(&ca(name)).await.unwrap();
}

async fn registration_codes(db: &TestDb) {
    let s = &db.store;
    s.insert_registration_code("h1", t0(), at(600)).await.unwrap();
    assert!(matches!(s.insert_registration_code("h1", t0(), at(600)).await, Err(Error::Conflict(_))));
    assert!(s.registration_code_usable("h1", at(1)).await.unwrap());
    assert!(s.registration_code_usable("h1", at(1)).await.unwrap(), "checking does not burn");
    assert!(s.consume_registration_code("h1", at(2)).await.unwrap());
    assert!(!s.consume_registration_code("h1", at(3)).await.unwrap(), "burnt once");
    assert!(!s.registration_code_usable("h1", at(3)).await.unwrap());

    s.insert_registration_code("h2", t0(), at(600)).await.unwrap();
    assert!(!s.registration_code_usable("h2", at(600)).await.unwrap(), "expired at expires_at");
    assert!(!s.consume_registration_code("h2", at(601)).await.unwrap());
    assert!(s.consume_registration_code("h2", at(599)).await.unwrap(), "expired check did not burn");

    assert!(!s.registration_code_usable("unknown", at(1)).await.unwrap());
    assert!(!s.consume_registration_code("unknown", at(1)).await.unwrap());
}

async fn concurrent_code_burns_once(db: &TestDb) {
    db.store.insert_registration_code("h", t0(), at(600)).await.unwrap();
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

async fn settings(db: &TestDb) {
    let s = &db.store;
    assert_eq!(s.setting("admin_token_hash").await.unwrap(), None);
    s.put_setting("admin_token_hash", "one").await.unwrap();
    assert_eq!(s.setting("admin_token_hash").await.unwrap().as_deref(), Some("one"));
    s.put_setting("admin_token_hash", "two").await.unwrap();
    s.put_setting("other", "").await.unwrap();
    assert_eq!(s.setting("admin_token_hash").await.unwrap().as_deref(), Some("two"));
    assert_eq!(s.setting("other").await.unwrap().as_deref(), Some(""));
}

async fn audit_paging(db: &TestDb) {
    let s = &db.store;
    assert!(s.list_audit(None, 10).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = NewAuditEntry {
            at: at(i),
            actor: "admin".into(),
            action: format!("device.create.{i}"),
            target: (i % 2 == 0).then(|| format!("d{i}")),
            outcome: "ok".into(),
            detail: (i == 3).then(|| "why".to_owned()),
        };
        ids.push(s.append_audit(&e).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let page1 = s.list_audit(None, 2).await.unwrap();
    assert_eq!(page1.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[4], ids[3]]);
    assert_eq!(page1[1].action, "device.create.3");
    assert_eq!(page1[1].detail.as_deref(), Some("why"));
    assert_eq!(page1[1].target, None);
    assert_eq!(page1[0].target.as_deref(), Some("d4"));
    assert_eq!(page1[0].at, at(4));
    let page2 = s.list_audit(Some(page1[1].id), 2).await.unwrap();
    assert_eq!(page2.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[2], ids[1]]);
    let page3 = s.list_audit(Some(page2[1].id), 2).await.unwrap();
    assert_eq!(page3.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(page3[0].actor, "admin");
    assert_eq!(page3[0].outcome, "ok");
}

async fn persistence_across_reopen(db: &TestDb) {
    let s = &db.store;
    s.create_device(&device("kept"), Some(&cert("42", Some("kept")))).await.unwrap();
    s.insert_ca(&ca("devices")).await.unwrap();
    assert_eq!(s.next_crl_number("devices").await.unwrap(), 1);
    s.put_setting("k", "v").await.unwrap();

    // A second handle on the same database (migrations run again and must be a no-op).
    let reopened = moat_store::open(&db.url).await.unwrap();
    assert_eq!(reopened.device("kept").await.unwrap(), Some(device("kept")));
    assert_eq!(reopened.cert("42").await.unwrap(), Some(cert("42", Some("kept"))));
    assert_eq!(reopened.next_crl_number("devices").await.unwrap(), 2);
    assert_eq!(reopened.setting("k").await.unwrap().as_deref(), Some("v"));
}

/// Closing every handle and reopening the file keeps the data (SQLite only: the file is
/// the database).
#[tokio::test]
async fn sqlite_file_survives_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moat.db");
    let url = format!("sqlite://{}", path.display());
    {
        let s = moat_store::SqliteStore::open(&url).await.unwrap();
        moat_store::Store::create_device(&s, &device("d"), None).await.unwrap();
        s.pool().close().await;
    }
    assert!(path.exists());
    let s = moat_store::open(&url).await.unwrap();
    assert_eq!(s.device("d").await.unwrap(), Some(device("d")));
}

#[tokio::test]
async fn sqlite_memory_is_one_database() {
    let s = moat_store::open("sqlite::memory:").await.unwrap();
    s.create_device(&device("m"), None).await.unwrap();
    // Many queries at once all see the same database.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.device("m").await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_some());
    }
    // Each open is a new, empty database.
    let other = moat_store::open("sqlite::memory:").await.unwrap();
    assert_eq!(other.device("m").await.unwrap(), None);
}

#[tokio::test]
async fn unsupported_url() {
    for url in ["mysql://x", "", "file:///tmp/x"] {
        assert!(matches!(moat_store::open(url).await, Err(Error::UnsupportedUrl)), "{url}");
    }
}

/// The durability and locking settings the hub relies on are in force on file databases.
#[tokio::test]
async fn sqlite_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("moat.db").display());
    let s = moat_store::SqliteStore::open(&url).await.unwrap();
    let mut conn = s.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(busy, 5000);
}

/// Rough insert_cert throughput (run with `--ignored --nocapture`); not a pass/fail check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn insert_cert_throughput() {
    async fn measure(db: &TestDb) {
        let n = 2_000;
        let start = std::time::Instant::now();
        for i in 0..n {
            db.store.insert_cert(&cert(&format!("{i:08x}"), Some("d"))).await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{}: {n} sequential insert_cert in {secs:.2} s = {:.0}/s ({:.0} µs each)",
            db.store.backend(),
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
    }
    let db = TestDb::sqlite().await;
    measure(&db).await;
    db.finish().await;
    if let Some(db) = TestDb::postgres().await {
        measure(&db).await;
        db.finish().await;
    }
}
