//! SQLite back end: the zero-setup default, one file in the data dir.
//!
//! WAL journal (readers never wait for the writer), `synchronous=FULL` (a certificate the
//! hub handed out survives a power loss), foreign keys on, a 5 s busy timeout for writers
//! queueing behind each other. In-memory databases (`sqlite::memory:`) use one connection
//! that is never closed, so every query sees the same database.

use crate::codec::{
    self, RowExt, classify, classify_fk, crl_number_from_db, crl_number_to_db, is_unique_violation,
    micros,
};
use crate::model::{
    AuditEntry, CaRecord, CertRecord, CrlRecord, Device, DeviceState, NewAuditEntry, RevokedCert,
};
use crate::sql;
use crate::store_impl::impl_store;
use crate::{Error, Store};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

/// Connections to a database file: WAL lets readers run beside the one writer.
const FILE_POOL_SIZE: u32 = 4;
/// How long a writer waits for the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The registry in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating the file if missing) the database at `url` (`sqlite://PATH`,
    /// `sqlite:PATH` or `sqlite::memory:`) and runs the migrations.
    ///
    /// The parent directory of the file must exist.
    pub async fn open(url: &str) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(Error::Database)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full);
        let pool = if is_memory(url) {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
        } else {
            SqlitePoolOptions::new()
                .max_connections(FILE_POOL_SIZE)
                .connect_with(options.journal_mode(SqliteJournalMode::Wal))
                .await
        }
        .map_err(Error::Database)?;
        Self::with_pool(pool).await
    }

    /// Wraps an existing pool and runs the migrations on it. The pool's connect options are
    /// the caller's: see [`SqliteStore::open`] for the ones this crate relies on.
    pub async fn with_pool(pool: SqlitePool) -> Result<Self, Error> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(Error::Migrate)?;
        Ok(Self { pool })
    }

    /// The connection pool (for closing it, or for metrics).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A transaction that takes the write lock at once (`BEGIN IMMEDIATE`), so it waits on
    /// the busy timeout instead of failing when it upgrades from reading to writing.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Whether a `sqlite:` URL names an in-memory database.
fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

impl_store!(SqliteStore, sqlx::Sqlite, "sqlite");
