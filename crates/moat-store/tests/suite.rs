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
