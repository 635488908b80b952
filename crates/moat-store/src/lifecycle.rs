//! Device lifecycle and ownership, and certificate rotation (migration `0006_lifecycle`). A
//! supertrait of [`Store`](crate::Store), in its own trait and file like
//! [`FirmwareStore`](crate::FirmwareStore).
//!
//! Rules the store enforces: owner changes and suspensions are compare-and-set (two admins,
//! or two hub nodes, cannot both win); a retired (decommissioned) allow-list serial is never
//! claimed by an enrollment nor reset (the statements say so, not only the core); a new
//! certificate and the retirement date of the ones it supersedes are written in one
//! transaction; the retirement sweep revokes in one statement, so each certificate is
//! retired by exactly one caller.

use crate::Error;
use crate::model::{Device, DeviceState, RetiredCert, Stage};
use async_trait::async_trait;
use time::OffsetDateTime;

/// Lifecycle, ownership and rotation. Every method is one transaction.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Sets a device's commissioning stage (and `updated_at`) if it is not at it already.
    /// Returns whether it changed; [`Error::NotFound`] if there is no such device. Cheap
    /// enough for the CONNECT path: one indexed `UPDATE` that writes nothing when the stage
    /// is already set.
    async fn set_device_stage(
        &self,
        id: &str,
        stage: Stage,
        at: OffsetDateTime,
    ) -> Result<bool, Error>;
    /// Moves a device from state `from` to `to` with `reason` (kept in `status_reason`; None
    /// clears it). Returns false (nothing written) if it is no longer in `from`;
    /// [`Error::NotFound`] if there is no such device.
    async fn set_device_status(
        &self,
        id: &str,
        from: DeviceState,
        to: DeviceState,
        reason: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<bool, Error>;
    /// Sets a device's owner (None: unclaimed) if its owner is still `expected`. Returns
    /// false (nothing written) otherwise; [`Error::NotFound`] if there is no such device.
    async fn set_device_owner(
        &self,
        id: &str,
        expected: Option<&str>,
        owner: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<bool, Error>;
    /// Devices of one owner ordered by id, after `after` (keyset paging), at most `limit`.
    async fn list_devices_by_owner(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Device>, Error>;
    /// Retires an allow-listed serial for good (decommissioning): it can never enroll again
    /// and [`Store::reset_allowlist`](crate::Store::reset_allowlist) no longer resets it.
    /// Returns false if it was retired already; [`Error::NotFound`] if it is not listed.
    async fn retire_allowlist_serial(
        &self,
        serial: &str,
        at: OffsetDateTime,
    ) -> Result<bool, Error>;
    /// Revokes (reason `superseded`, at `now`) every unrevoked certificate whose `retire_at`
    /// is at or before `now`, and returns them, by CA and serial.
    async fn retire_due_certs(&self, now: OffsetDateTime) -> Result<Vec<RetiredCert>, Error>;
}

/// The statements (portable; see [`crate::sql`]).
pub(crate) mod sql {
    pub(crate) const SET_STAGE: &str =
        "UPDATE devices SET stage = $1, updated_at = $2 WHERE id = $3 AND stage <> $1";
    pub(crate) const SET_STATUS: &str = "UPDATE devices SET state = $1, status_reason = $2, \
         updated_at = $3 WHERE id = $4 AND state = $5";
    // `$2 IS NULL` is typed by `owner = $2` (PostgreSQL needs a type for every parameter).
    pub(crate) const SET_OWNER: &str = "UPDATE devices SET owner = $1, updated_at = $3 \
         WHERE id = $4 AND (owner = $2 OR (owner IS NULL AND $2 IS NULL))";
    pub(crate) const DEVICE_EXISTS: &str = "SELECT 1 FROM devices WHERE id = $1";
    pub(crate) const RETIRE_SERIAL: &str =
        "UPDATE allowlist SET retired_at = $1 WHERE serial = $2 AND retired_at IS NULL";
    pub(crate) const SET_RETIRE_AT: &str = "UPDATE certificates SET retire_at = $1 \
         WHERE serial = $2 AND ca_name = $3 AND revoked_at IS NULL AND not_after > $1 \
         AND (retire_at IS NULL OR retire_at > $1)";
    pub(crate) const RETIRE_DUE: &str = "UPDATE certificates \
         SET revoked_at = $1, revocation_reason = 'superseded' \
         WHERE retire_at IS NOT NULL AND retire_at <= $1 AND revoked_at IS NULL \
         RETURNING serial, ca_name, device_id";
}

/// Implements [`LifecycleStore`] for `$store` (which has `pool`, `write` and the `*_on`
/// writes of [`crate::writes`]).
macro_rules! impl_lifecycle_store {
    ($store:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl $crate::lifecycle::LifecycleStore for $store {
            async fn set_device_stage(
                &self,
                id: &str,
                stage: $crate::Stage,
                at: OffsetDateTime,
            ) -> Result<bool, Error> {
                let id = id.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query($crate::lifecycle::sql::SET_STAGE)
                        .bind(stage.as_str())
                        .bind(micros(at))
                        .bind(&id)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if done.rows_affected() > 0 {
                        return Ok(true);
                    }
                    Self::device_exists_on(conn, &id).await.map(|()| false)
                })
            }

            async fn set_device_status(
                &self,
                id: &str,
                from: DeviceState,
                to: DeviceState,
                reason: Option<&str>,
                at: OffsetDateTime,
            ) -> Result<bool, Error> {
                let (id, reason) = (id.to_owned(), reason.map(str::to_owned));
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query($crate::lifecycle::sql::SET_STATUS)
                        .bind(to.as_str())
                        .bind(&reason)
                        .bind(micros(at))
                        .bind(&id)
                        .bind(from.as_str())
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if done.rows_affected() > 0 {
                        return Ok(true);
                    }
                    Self::device_exists_on(conn, &id).await.map(|()| false)
                })
            }

            async fn set_device_owner(
                &self,
                id: &str,
                expected: Option<&str>,
                owner: Option<&str>,
                at: OffsetDateTime,
            ) -> Result<bool, Error> {
                let (id, expected, owner) = (
                    id.to_owned(),
                    expected.map(str::to_owned),
                    owner.map(str::to_owned),
                );
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query($crate::lifecycle::sql::SET_OWNER)
                        .bind(&owner)
                        .bind(&expected)
                        .bind(micros(at))
                        .bind(&id)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if done.rows_affected() > 0 {
                        return Ok(true);
                    }
                    Self::device_exists_on(conn, &id).await.map(|()| false)
                })
            }

            async fn list_devices_by_owner(
                &self,
                owner: &str,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<Device>, Error> {
                let rows = match after {
                    Some(after) => {
                        sqlx::query(sql::DEVICES_OF_OWNER_AFTER)
                            .bind(owner)
                            .bind(after)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                    None => {
                        sqlx::query(sql::DEVICES_OF_OWNER_FIRST)
                            .bind(owner)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                }
                .map_err(Error::Database)?;
                rows.iter().map(codec::device).collect()
            }

            async fn retire_allowlist_serial(
                &self,
                serial: &str,
                at: OffsetDateTime,
            ) -> Result<bool, Error> {
                let serial = serial.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query($crate::lifecycle::sql::RETIRE_SERIAL)
                        .bind(micros(at))
                        .bind(&serial)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if done.rows_affected() > 0 {
                        return Ok(true);
                    }
                    let listed = sqlx::query(sql::ALLOWLIST_EXISTS)
                        .bind(&serial)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    match listed {
                        Some(_) => Ok(false),
                        None => Err(Error::NotFound(format!("allow-list serial {serial}"))),
                    }
                })
            }

            async fn retire_due_certs(
                &self,
                now: OffsetDateTime,
            ) -> Result<Vec<$crate::RetiredCert>, Error> {
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let rows = sqlx::query($crate::lifecycle::sql::RETIRE_DUE)
                        .bind(micros(now))
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    let mut retired = rows
                        .iter()
                        .map(|r| {
                            Ok($crate::RetiredCert {
                                serial: r.text("serial")?,
                                ca_name: r.text("ca_name")?,
                                device_id: r.opt_text("device_id")?,
                            })
                        })
                        .collect::<Result<Vec<_>, Error>>()?;
                    retired.sort_by(|a, b| (&a.ca_name, &a.serial).cmp(&(&b.ca_name, &b.serial)));
                    Ok(retired)
                })
            }
        }

        impl $store {
            /// `Ok` if the device exists, [`Error::NotFound`] otherwise.
            async fn device_exists_on(conn: &mut $conn, id: &str) -> Result<(), Error> {
                let found = sqlx::query($crate::lifecycle::sql::DEVICE_EXISTS)
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                match found {
                    Some(_) => Ok(()),
                    None => Err(Error::NotFound(format!("device {id}"))),
                }
            }
        }
    };
}

pub(crate) use impl_lifecycle_store;
