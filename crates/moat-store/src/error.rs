//! The one error type of this crate.

/// Store failures, classified so callers map them without reading messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A unique key already exists (duplicate device id, serial, CA name, fingerprint).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The row to change does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The URL is not `sqlite:` or `postgres:`.
    #[error("unsupported database URL (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl,
    /// A stored value does not decode (corrupt row or a newer schema).
    #[error("corrupt value in column {0}")]
    Corrupt(&'static str),
    /// Migrations failed.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The database failed.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// The shared transaction of a batch of SQLite writes failed (its commit, or an error
    /// that ended the whole transaction): nothing of this write was stored. Every write of
    /// the batch reports the same cause.
    #[error("database error (batched write)")]
    Batch(#[source] std::sync::Arc<Error>),
}

impl Error {
    /// The write failed because the database's disk is full (SQLite `SQLITE_FULL`,
    /// PostgreSQL `53100 disk_full`, or `ENOSPC` from the file system): the transaction
    /// stored nothing, and the same write can succeed once space is freed.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Database(e) => is_full(e),
            Error::Migrate(sqlx::migrate::MigrateError::Execute(e)) => is_full(e),
            Error::Batch(cause) => cause.is_storage_full(),
            _ => false,
        }
    }
}

impl Error {
    /// The database could not be reached or went away (connection refused or broken, the
    /// pool timed out waiting for one, the server shutting down or starting): nothing was
    /// written, and the same call can succeed once it is back.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(e) => is_unavailable(e),
            Error::Batch(cause) => cause.is_unavailable(),
            _ => false,
        }
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: class 08 connection exception; 57P01-57P03 shutting down or starting.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

fn is_full(e: &sqlx::Error) -> bool {
    match e {
        // SQLite reports its extended result code; SQLITE_FULL has no extended variants.
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("13") | Some("53100")),
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}
