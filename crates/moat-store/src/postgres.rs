//! PostgreSQL back end: the shared registry when several hub nodes serve one fleet.

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
use crate::store_impl::impl_store;
use crate::writes::{BoxFuture, Tx, impl_writes, write_op};
use crate::{Error, MqttQueued, MqttWrite, Store};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::str::FromStr;
use time::OffsetDateTime;

/// Connections per hub node.
const POOL_SIZE: u32 = 8;

/// How long a call waits for a connection of the pool.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

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
            // A server that is down or unreachable fails a call in seconds (an MQTT CONNECT
            // is refused with Server unavailable, an API call with 503) instead of holding it
            // for sqlx's default 30 s.
            .acquire_timeout(ACQUIRE_TIMEOUT)
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

    const BACKEND: &'static str = "postgres";

    /// Runs the write `f` on a pooled connection, in a transaction if `tx` says so.
    async fn write<T, F>(&self, tx: Tx, f: F) -> Result<T, Error>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, Error>>,
    {
        if tx == Tx::NotNeeded {
            let mut conn = self.pool.acquire().await.map_err(Error::Database)?;
            return f(&mut conn).await;
        }
        let mut tx = self.pool.begin().await.map_err(Error::Database)?;
        match f(&mut tx).await {
            Ok(value) => {
                tx.commit().await.map_err(Error::Database)?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rolling back a failed write failed");
                }
                Err(e)
            }
        }
    }
}

impl_writes!(PgStore, PgConnection);
impl_store!(PgStore);
impl_firmware_store!(PgStore);
impl_provisioning_store!(PgStore);
impl_posture_store!(PgStore);
impl_operator_store!(PgStore);
impl_cluster_store!(PgStore);
impl_gateway_store!(PgStore);
impl_lifecycle_store!(PgStore, PgConnection);
impl_console_store!(PgStore);
