//! SQLite back end: the zero-setup default, one file in the data dir.
//!
//! WAL journal (readers never wait for the writer), `synchronous=FULL` (a certificate the
//! hub handed out survives a power loss), foreign keys on, a 5 s busy timeout for writers
//! for a writer of another process. In-memory databases (`sqlite::memory:`) use one
//! connection that is never closed, so every query sees the same database.
//!
//! Reads run on the pool; every write goes to the writer task ([`crate::sqlite_writer`]),
//! which commits the writes queued at the same time together: one fsync for many writes.

use crate::cluster::{self, impl_cluster_store};
use crate::codec::{
    self, RowExt, classify, classify_fk, crl_number_from_db, crl_number_to_db, micros,
};
use crate::console::impl_console_store;
use crate::firmware::{self as fw, impl_firmware_store};
use crate::firmware_model::{
    Campaign, CampaignDevice, CampaignState, FirmwareKey, FirmwareRecord, Inventory, UpdateState,
    WaveCount,
};
use crate::gateways::{self, impl_gateway_store};
use crate::lifecycle::impl_lifecycle_store;
use crate::model::{
    AclPolicy, AllowlistEntry, AuditEntry, CaRecord, CertRecord, CrlRecord, Device, DeviceState,
    IdentityAccess, NewAuditEntry, RevokedCert, Station,
};
use crate::operators::{self, impl_operator_store};
use crate::posture::{self, impl_posture_store};
use crate::provisioning::{self as prov, Assignment, EnrollmentGroup, impl_provisioning_store};
use crate::sql;
use crate::sqlite_writer::Writer;
use crate::store_impl::impl_store;
use crate::writes::{BoxFuture, Tx, impl_writes, write_op};
use crate::{Error, MqttQueued, MqttWrite, Store};
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

/// Connections to a database file: WAL lets readers run beside the one writer.
const FILE_POOL_SIZE: u32 = 4;
/// How long a write batch waits for the write lock (held by another process or store on the
/// same file) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The registry in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads (and the writer's connection for each batch).
    pool: SqlitePool,
    /// Every write goes through here; the writer task ends when the last clone is dropped.
    writer: Writer,
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
        let memory = is_memory(url);
        let pool = if memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options.clone())
                .await
        } else {
            SqlitePoolOptions::new()
                .max_connections(FILE_POOL_SIZE)
                .connect_with(options.clone().journal_mode(SqliteJournalMode::Wal))
                .await
        }
        .map_err(Error::Database)?;
        migrate(&pool).await?;
        // A file gets a write connection of its own, beside the pool of readers.
        let own = if memory {
            None
        } else {
            let options = options.journal_mode(SqliteJournalMode::Wal);
            let conn = options.connect().await.map_err(Error::Database)?;
            Some((conn, options))
        };
        let writer = Writer::spawn(pool.clone(), own);
        Ok(Self { pool, writer })
    }

    /// Wraps an existing pool, runs the migrations on it and starts the writer task (so it
    /// must be called inside a Tokio runtime, as sqlx requires). The pool's connect options
    /// are the caller's: see [`SqliteStore::open`] for the ones this crate relies on.
    ///
    /// The writer borrows a pool connection for each batch of writes.
    pub async fn with_pool(pool: SqlitePool) -> Result<Self, Error> {
        migrate(&pool).await?;
        let writer = Writer::spawn(pool.clone(), None);
        Ok(Self { pool, writer })
    }

    /// The connection pool (for closing it, or for metrics).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    const BACKEND: &'static str = "sqlite";

    /// Runs the write `f` in the writer's next batch (in a savepoint if `tx` says so).
    async fn write<T, F>(&self, tx: Tx, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, Error>>
            + Send
            + 'static,
    {
        self.writer.write(tx, f).await
    }
}

/// Runs the embedded migrations.
async fn migrate(pool: &SqlitePool) -> Result<(), Error> {
    sqlx::migrate!("./migrations/sqlite")
        .run(pool)
        .await
        .map_err(Error::Migrate)
}

/// Whether a `sqlite:` URL names an in-memory database.
fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

impl_writes!(SqliteStore, SqliteConnection);
impl_store!(SqliteStore);
impl_firmware_store!(SqliteStore);
impl_provisioning_store!(SqliteStore);
impl_posture_store!(SqliteStore);
impl_operator_store!(SqliteStore);
impl_cluster_store!(SqliteStore);
impl_gateway_store!(SqliteStore);
impl_lifecycle_store!(SqliteStore, SqliteConnection);
impl_console_store!(SqliteStore);
