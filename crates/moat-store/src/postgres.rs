//! PostgreSQL back end: the shared registry when several hub nodes serve one fleet.

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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use time::OffsetDateTime;

/// Connections per hub node.
const POOL_SIZE: u32 = 8;

/// The registry in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and runs the migrations.
    pub async fn open(url: &str) -> Result<Self, Error> {
        let options = PgConnectOptions::from_str(url).map_err(Error::Database)?;
        Self::connect_with(options).await
    }

    /// Connects with explicit options and runs the migrations.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await
            .map_err(Error::Database)?;
        Self::with_pool(pool).await
    }

    /// Wraps an existing pool and runs the migrations on it.
    pub async fn with_pool(pool: PgPool) -> Result<Self, Error> {
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(Error::Migrate)?;
        Ok(Self { pool })
    }

    /// The connection pool (for closing it, or for metrics).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A read-write transaction.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }
}

impl_store!(PgStore, sqlx::Postgres, "postgres");
