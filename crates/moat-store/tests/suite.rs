//! One behavioural suite, run against SQLite and PostgreSQL.
//!
//! Each case is an `async fn(&TestDb)`; the `suite!` macro makes a SQLite test and a
//! PostgreSQL test of it. PostgreSQL needs `MOAT_TEST_DATABASE_URL` (see `common`).

#![allow(clippy::unwrap_used)]

mod cases;
mod common;

use common::{TestDb, cert, device};
use moat_store::Error;

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = crate::common::TestDb::sqlite().await;
                    crate::cases::$case(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = crate::common::TestDb::postgres().await else { return };
                    crate::cases::$case(&db).await;
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
    concurrent_creates_get_their_own_results,
    topic_access,
    mqtt_retained_messages,
    mqtt_sessions_and_expiry,
    concurrent_mqtt_saves,
    mqtt_write_batches,
    allowlist_upload_is_all_or_nothing,
    enrollment_claims_a_serial_once,
    concurrent_enrollments_of_one_serial,
    stations,
    firmware_keys_and_publication,
    campaigns_and_device_states,
    inventory_and_group_members,
    enrollment_groups_and_provisioning,
    posture_reads,
    operator_accounts,
    stage_status_and_owner,
    retired_serial_never_enrolls,
    superseded_certs_retire_once,
    console_device_page,
    console_presence,
    console_audit_search,
    cluster_event_log,
    cluster_node_status,
    cluster_client_claims,
    cluster_leases,
    gateway_allowances,
    relay_windows_compare_and_set,
);

/// Closing every handle and reopening the file keeps the data (SQLite only: the file is
/// the database).
#[tokio::test]
async fn sqlite_file_survives_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moat.db");
    let url = format!("sqlite://{}", path.display());
    {
        let s = moat_store::SqliteStore::open(&url).await.unwrap();
        moat_store::Store::create_device(&s, &device("d"), None)
            .await
            .unwrap();
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
        assert!(
            matches!(moat_store::open(url).await, Err(Error::UnsupportedUrl)),
            "{url}"
        );
    }
}

/// The durability and locking settings the hub relies on are in force on file databases.
#[tokio::test]
async fn sqlite_pragmas() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("moat.db").display());
    let s = moat_store::SqliteStore::open(&url).await.unwrap();
    let mut conn = s.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
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
            db.store
                .insert_cert(&cert(&format!("{i:08x}"), Some("d")))
                .await
                .unwrap();
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

/// Cost of the console's reads on a fleet of 10,000 devices (two certificates, inventory and
/// presence each) and 50,000 audit entries (run with `--ignored --nocapture`); not a
/// pass/fail check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn console_reads_at_10k_devices() {
    use moat_store::{AuditFilter, DeviceQuery, DeviceState, Inventory, NewAuditEntry};
    use std::sync::Arc;

    async fn fill(db: &TestDb) {
        let tasks: Vec<_> = (0..10_000)
            .map(|i| {
                let s = Arc::clone(&db.store);
                tokio::spawn(async move {
                    let id = format!("dev{i:05}");
                    let mut d = device(&id);
                    if i % 10 == 0 {
                        d.state = DeviceState::Disabled;
                    }
                    d.owner = Some(format!("owner{}", i % 97));
                    s.create_device(&d, Some(&cert(&format!("a{i:05}"), Some(&id))))
                        .await
                        .unwrap();
                    s.insert_cert(&cert(&format!("b{i:05}"), Some(&id)))
                        .await
                        .unwrap();
                    s.put_inventory(&Inventory {
                        device_id: id.clone(),
                        model: "M1".into(),
                        version: "1.0".into(),
                        security_counter: 1,
                        updated_at: common::t0(),
                    })
                    .await
                    .unwrap();
                    s.touch_presence(&id, common::t0()).await.unwrap();
                    for n in 0..5 {
                        s.append_audit(&NewAuditEntry {
                            at: common::t0(),
                            actor: format!("operator:op{}", (i + n) % 20),
                            action: ["device.create", "cert.revoke", "mqtt.connect"][n % 3].into(),
                            target: Some(id.clone()),
                            outcome: "ok".into(),
                            detail: None,
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }

    async fn measure(db: &TestDb) {
        fill(db).await;
        let s = &db.store;
        let cases: [(&str, DeviceQuery, u64); 4] = [
            ("first page", DeviceQuery::default(), 0),
            ("last page", DeviceQuery::default(), 9_950),
            (
                "state, deep page",
                DeviceQuery {
                    text: None,
                    state: Some(DeviceState::Disabled),
                },
                900,
            ),
            (
                "text",
                DeviceQuery {
                    text: Some("OWNER42".into()),
                    state: None,
                },
                0,
            ),
        ];
        for (name, q, offset) in cases {
            // The first run also prepares the statement.
            s.device_page(&q, offset, 50).await.unwrap();
            let start = std::time::Instant::now();
            let page = s.device_page(&q, offset, 50).await.unwrap();
            eprintln!(
                "{}: device_page {name}: {} rows of {} in {:.1} ms",
                s.backend(),
                page.rows.len(),
                page.total,
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        let filters = [
            ("any", AuditFilter::default()),
            (
                "target",
                AuditFilter {
                    target: Some("dev04242".into()),
                    ..AuditFilter::default()
                },
            ),
            (
                "actor",
                AuditFilter {
                    actor: Some("operator:op7".into()),
                    ..AuditFilter::default()
                },
            ),
            (
                "rare action",
                AuditFilter {
                    action: Some("ca.".into()),
                    ..AuditFilter::default()
                },
            ),
        ];
        for (name, f) in filters {
            s.audit_search(&f, None, 100).await.unwrap();
            let start = std::time::Instant::now();
            let found = s.audit_search(&f, None, 100).await.unwrap();
            eprintln!(
                "{}: audit_search {name}: {} in {:.1} ms",
                s.backend(),
                found.len(),
                start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    let db = TestDb::sqlite().await;
    measure(&db).await;
    db.finish().await;
    if let Some(db) = TestDb::postgres().await {
        measure(&db).await;
        db.finish().await;
    }
}
