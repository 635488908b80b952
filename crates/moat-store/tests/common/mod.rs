//! Test databases for both back ends, and row builders.

#![allow(dead_code)]

use moat_store::{
    CaKind, CaRecord, CertRecord, CertSource, ConnectionPolicy, Device, DeviceState, Stage, Store,
};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::sync::Arc;
use tempfile::TempDir;
use time::{Duration, OffsetDateTime, macros::datetime};

/// The variable naming a PostgreSQL server (a role allowed to CREATE DATABASE).
pub const PG_ENV: &str = "MOAT_TEST_DATABASE_URL";

/// A store under test and what must live as long as it.
pub struct TestDb {
    pub store: Arc<dyn Store>,
    /// A URL that reopens the same database.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    /// A fresh SQLite database file in a temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("moat.db").display());
        let store = moat_store::open(&url).await.expect("open sqlite");
        assert_eq!(store.backend(), "sqlite");
        TestDb {
            store,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database, or None (after a note) when no server is configured
    /// outside CI. In CI (`CI` set) a missing server fails the test.
    pub async fn postgres() -> Option<TestDb> {
        let admin_url = match std::env::var(PG_ENV) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                if std::env::var_os("CI").is_some() {
                    panic!("{PG_ENV} is not set: CI must run the PostgreSQL store tests");
                }
                eprintln!("skipping PostgreSQL test: set {PG_ENV} to run it");
                return None;
            }
        };
        let name = format!("moat_test_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.expect("close admin connection");
        let url = with_database(&admin_url, &name);
        let store = moat_store::open(&url).await.expect("open postgres");
        assert_eq!(store.backend(), "postgres");
        Some(TestDb {
            store,
            url,
            cleanup: Cleanup::Postgres { admin_url, name },
        })
    }

    /// Drops a PostgreSQL test database (a no-op for SQLite, whose directory goes on drop).
    pub async fn finish(self) {
        let TestDb { store, cleanup, .. } = self;
        drop(store);
        if let Cleanup::Postgres { admin_url, name } = cleanup {
            let mut admin = PgConnection::connect(&admin_url)
                .await
                .expect("connect to PostgreSQL");
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .expect("drop test database");
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A fixed instant with microsecond precision (what the store keeps).
pub fn t0() -> OffsetDateTime {
    datetime!(2025-03-04 05:06:07.123456 UTC)
}

/// `t0` plus `secs` seconds.
pub fn at(secs: i64) -> OffsetDateTime {
    t0() + Duration::seconds(secs)
}

pub fn device(id: &str) -> Device {
    Device {
        id: id.to_owned(),
        state: DeviceState::Active,
        policy: ConnectionPolicy::DenyInsecure,
        token_hash: None,
        ca_name: "devices".to_owned(),
        created_at: t0(),
        updated_at: t0(),
        factory: None,
        stage: Stage::Enrolled,
        owner: None,
        status_reason: None,
    }
}

pub fn cert(serial: &str, device_id: Option<&str>) -> CertRecord {
    CertRecord {
        serial: serial.to_owned(),
        ca_name: "devices".to_owned(),
        device_id: device_id.map(str::to_owned),
        subject: format!("CN={}", device_id.unwrap_or("hub")),
        not_before: t0(),
        not_after: at(86_400 * 365),
        fingerprint: format!("fp-{serial}"),
        spki_sha256: format!("spki-{serial}"),
        source: CertSource::Csr,
        der: vec![0x30, 0x82, 0x01, 0x00, serial.len() as u8, 0xff],
        created_at: t0(),
        revoked_at: None,
        revocation_reason: None,
        retire_at: None,
    }
}

pub fn ca(name: &str) -> CaRecord {
    CaRecord {
        name: name.to_owned(),
        kind: CaKind::DeviceIssuing,
        cert_der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        key_ref: Some(format!("vault:{name}")),
        identity_rule: "cn".to_owned(),
        auto_register: false,
        fingerprint: format!("ca-fp-{name}"),
        created_at: t0(),
    }
}

#[test]
fn database_name_replaced() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/postgres", "x"),
        "postgres://u:p@h:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h:5432", "x"),
        "postgres://u:p@h:5432/x"
    );
    assert_eq!(
        with_database("postgresql://h/db?sslmode=disable", "x"),
        "postgresql://h/x?sslmode=disable"
    );
}
