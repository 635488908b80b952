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
