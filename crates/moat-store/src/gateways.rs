//! Gateways (migration `0013_gateways`): which devices each gateway may relay for, and the
//! replay window of every device whose messages arrive through a gateway. A supertrait of
//! [`Store`](crate::Store). A gateway itself is an identity of kind
//! [`IdentityKind::Gateway`](crate::IdentityKind::Gateway): a device row with its
//! certificates, so admission, revocation and sessions treat it like any other.

use crate::Error;
use crate::codec::RowExt;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What an allowance names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowanceKind {
    /// One device, by id.
    Device,
    /// Every device of an MQTT group (`{device.group}`).
    Group,
    /// Every device an enrollment group provisioned.
    EnrollmentGroup,
}

impl AllowanceKind {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            AllowanceKind::Device => "device",
            AllowanceKind::Group => "group",
            AllowanceKind::EnrollmentGroup => "enrollment_group",
        }
    }
    /// From column text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "device" => Some(AllowanceKind::Device),
            "group" => Some(AllowanceKind::Group),
            "enrollment_group" => Some(AllowanceKind::EnrollmentGroup),
            _ => None,
        }
    }
}

/// Devices a gateway may relay for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayAllowance {
    /// The gateway (its identity).
    pub gateway: String,
    /// What `name` is.
    pub kind: AllowanceKind,
    /// A device id, an MQTT group or an enrollment group.
    pub name: String,
    /// When it was given.
    pub created_at: OffsetDateTime,
}

/// A device's stored replay window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredWindow {
    /// The window's state (moat-cose's `ReplayWindow::to_bytes`; opaque here).
    pub state: Vec<u8>,
    /// Incremented by each write: what [`GatewayStore::put_relay_window`] compares.
    pub version: u64,
}

/// Gateway allowances and relay windows. Every method is one statement.
#[async_trait]
pub trait GatewayStore: Send + Sync {
    /// Adds an allowance; false if it was there already.
    async fn put_gateway_allowance(&self, allowance: &GatewayAllowance) -> Result<bool, Error>;
    /// Removes an allowance; false if there was none.
    async fn delete_gateway_allowance(
        &self,
        gateway: &str,
        kind: AllowanceKind,
        name: &str,
    ) -> Result<bool, Error>;
    /// A gateway's allowances, by kind then name.
    async fn gateway_allowances(&self, gateway: &str) -> Result<Vec<GatewayAllowance>, Error>;
    /// The identities of kind gateway, by name.
    async fn gateway_ids(&self) -> Result<Vec<String>, Error>;
    /// A device's replay window, if it has one.
    async fn relay_window(&self, device_id: &str) -> Result<Option<StoredWindow>, Error>;
    /// Stores a device's window if the stored one is still at version `expected` (`None`:
    /// there is none yet). Returns the new version, or `None` when another writer changed it
    /// first (read it again and decide again).
    async fn put_relay_window(
        &self,
        device_id: &str,
        state: &[u8],
        expected: Option<u64>,
        at: OffsetDateTime,
    ) -> Result<Option<u64>, Error>;
    /// Forgets a device's window (the device was deleted: a new device of that id starts
    /// afresh).
    async fn delete_relay_window(&self, device_id: &str) -> Result<(), Error>;
}

pub(crate) mod sql {
    pub(crate) const PUT_ALLOWANCE: &str = "INSERT INTO gateway_allowances \
         (gateway, kind, name, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (gateway, kind, name) DO NOTHING";
    pub(crate) const DELETE_ALLOWANCE: &str =
        "DELETE FROM gateway_allowances WHERE gateway = $1 AND kind = $2 AND name = $3";
    pub(crate) const ALLOWANCES: &str = "SELECT gateway, kind, name, created_at \
         FROM gateway_allowances WHERE gateway = $1 ORDER BY kind, name";
    pub(crate) const GATEWAY_IDS: &str =
        "SELECT device_id FROM identity_access WHERE kind = 'gateway' ORDER BY device_id";
    pub(crate) const WINDOW: &str = "SELECT state, version FROM relay_windows WHERE device_id = $1";
    pub(crate) const INSERT_WINDOW: &str = "INSERT INTO relay_windows \
         (device_id, state, version, updated_at) VALUES ($1, $2, 1, $3) \
         ON CONFLICT (device_id) DO NOTHING";
    pub(crate) const UPDATE_WINDOW: &str = "UPDATE relay_windows \
         SET state = $2, version = version + 1, updated_at = $4 \
         WHERE device_id = $1 AND version = $3";
    pub(crate) const DELETE_WINDOW: &str = "DELETE FROM relay_windows WHERE device_id = $1";
}

pub(crate) fn allowance(row: &impl RowExt) -> Result<GatewayAllowance, Error> {
    Ok(GatewayAllowance {
        gateway: row.text("gateway")?,
        kind: AllowanceKind::parse(&row.text("kind")?)
            .ok_or(Error::Corrupt("gateway_allowances.kind"))?,
        name: row.text("name")?,
        created_at: row.ts("created_at")?,
    })
}

pub(crate) fn window(row: &impl RowExt) -> Result<StoredWindow, Error> {
    Ok(StoredWindow {
        state: row.bytes("state")?,
        version: u64::try_from(row.int("version")?)
            .map_err(|_| Error::Corrupt("relay_windows.version"))?,
    })
}

/// Implements [`GatewayStore`] for `$store`.
macro_rules! impl_gateway_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::gateways::GatewayStore for $store {
            async fn put_gateway_allowance(
                &self,
                a: &$crate::gateways::GatewayAllowance,
            ) -> Result<bool, Error> {
                let a = a.clone();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    sqlx::query(gateways::sql::PUT_ALLOWANCE)
                        .bind(&a.gateway)
                        .bind(a.kind.as_str())
                        .bind(&a.name)
                        .bind(micros(a.created_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)
                        .map(|r| r.rows_affected() == 1)
                })
            }

            async fn delete_gateway_allowance(
                &self,
                gateway: &str,
                kind: $crate::gateways::AllowanceKind,
                name: &str,
            ) -> Result<bool, Error> {
                let (gateway, name) = (gateway.to_string(), name.to_string());
                write_op!(self, Tx::NotNeeded, |conn| async {
                    sqlx::query(gateways::sql::DELETE_ALLOWANCE)
                        .bind(&gateway)
                        .bind(kind.as_str())
                        .bind(&name)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)
                        .map(|r| r.rows_affected() > 0)
                })
            }

            async fn gateway_allowances(
                &self,
                gateway: &str,
            ) -> Result<Vec<$crate::gateways::GatewayAllowance>, Error> {
                sqlx::query(gateways::sql::ALLOWANCES)
                    .bind(gateway)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(gateways::allowance)
                    .collect()
            }

            async fn gateway_ids(&self) -> Result<Vec<String>, Error> {
                sqlx::query(gateways::sql::GATEWAY_IDS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| r.text("device_id"))
                    .collect()
            }

            async fn relay_window(
                &self,
                device_id: &str,
            ) -> Result<Option<$crate::gateways::StoredWindow>, Error> {
                sqlx::query(gateways::sql::WINDOW)
                    .bind(device_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| gateways::window(&r))
                    .transpose()
            }

            async fn put_relay_window(
                &self,
                device_id: &str,
                state: &[u8],
                expected: Option<u64>,
                at: OffsetDateTime,
            ) -> Result<Option<u64>, Error> {
                let (device_id, state) = (device_id.to_string(), state.to_vec());
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = match expected {
                        None => sqlx::query(gateways::sql::INSERT_WINDOW)
                            .bind(&device_id)
                            .bind(&state)
                            .bind(micros(at))
                            .execute(&mut *conn)
                            .await
                            .map_err(Error::Database)?,
                        Some(v) => sqlx::query(gateways::sql::UPDATE_WINDOW)
                            .bind(&device_id)
                            .bind(&state)
                            .bind(
                                i64::try_from(v)
                                    .map_err(|_| Error::Corrupt("relay_windows.version"))?,
                            )
                            .bind(micros(at))
                            .execute(&mut *conn)
                            .await
                            .map_err(Error::Database)?,
                    };
                    Ok((done.rows_affected() == 1).then(|| expected.map_or(1, |v| v + 1)))
                })
            }

            async fn delete_relay_window(&self, device_id: &str) -> Result<(), Error> {
                let device_id = device_id.to_string();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    sqlx::query(gateways::sql::DELETE_WINDOW)
                        .bind(&device_id)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)
                        .map(drop)
                })
            }
        }
    };
}

pub(crate) use impl_gateway_store;
