//! Reads for the security posture audit (index in migration `0008_posture`). A supertrait of
//! [`Store`](crate::Store), like [`FirmwareStore`](crate::FirmwareStore). Each read is bounded
//! by a limit: an audit reports the first findings of a kind, never the whole registry.

use crate::codec::RowExt;
use crate::{AuditEntry, Device, Error, Inventory};
use async_trait::async_trait;
use time::OffsetDateTime;

/// One public key in live certificates of several devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedKey {
    /// SHA-256 of the SubjectPublicKeyInfo, lowercase hex.
    pub spki_sha256: String,
    /// The devices whose unrevoked certificates carry it, by id.
    pub device_ids: Vec<String>,
}

/// Posture reads.
#[async_trait]
pub trait PostureStore: Send + Sync {
    /// Devices (not revoked) whose policy allows insecure connections, by id.
    async fn insecure_devices(&self, limit: u32) -> Result<Vec<Device>, Error>;
    /// Public keys found in unrevoked certificates of more than one device.
    async fn shared_keys(&self, limit: u32) -> Result<Vec<SharedKey>, Error>;
    /// Devices whose reported `model` firmware has a security counter below `min`.
    async fn devices_below_counter(
        &self,
        model: &str,
        min: u32,
        limit: u32,
    ) -> Result<Vec<Inventory>, Error>;
    /// Devices (not revoked, not applications) that never completed an MQTT CONNECT (stage
    /// enrolled or provisioned) and were created before `before`, oldest first.
    async fn never_connected(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Device>, Error>;
    /// Audit entries of `action` at or after `since`, newest first.
    async fn audit_by_action(
        &self,
        action: &str,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, Error>;
}

pub(crate) mod sql {
    use crate::sql::{audit_cols, device_cols};

    pub(crate) const INSECURE_DEVICES: &str = concat!(
        "SELECT ",
        device_cols!(),
        " FROM devices WHERE policy = 'allow_insecure' AND state <> 'revoked' ORDER BY id LIMIT $1"
    );
    pub(crate) const NEVER_CONNECTED: &str = concat!(
        "SELECT ",
        device_cols!(),
        " FROM devices WHERE stage <> 'active' AND state <> 'revoked' AND created_at < $1 \
         AND id NOT IN (SELECT device_id FROM identity_access WHERE kind = 'app') \
         ORDER BY created_at, id LIMIT $2"
    );
    pub(crate) const SHARED_KEYS: &str = "SELECT spki_sha256 FROM certificates \
         WHERE revoked_at IS NULL AND device_id IS NOT NULL GROUP BY spki_sha256 \
         HAVING COUNT(DISTINCT device_id) > 1 ORDER BY spki_sha256 LIMIT $1";
    pub(crate) const KEY_DEVICES: &str = "SELECT DISTINCT device_id FROM certificates \
         WHERE spki_sha256 = $1 AND revoked_at IS NULL AND device_id IS NOT NULL \
         ORDER BY device_id LIMIT 100";
    pub(crate) const BELOW_COUNTER: &str = "SELECT device_id, model, version, \
         security_counter, updated_at FROM ota_inventory WHERE model = $1 \
         AND security_counter < $2 ORDER BY device_id LIMIT $3";
    pub(crate) const AUDIT_BY_ACTION: &str = concat!(
        "SELECT ",
        audit_cols!(),
        " FROM audit_log WHERE action = $1 AND at >= $2 ORDER BY at DESC, id DESC LIMIT $3"
    );
}

pub(crate) fn text_col(row: &impl RowExt, col: &'static str) -> Result<String, Error> {
    row.text(col)
}

/// Implements [`PostureStore`] for `$store`.
macro_rules! impl_posture_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::posture::PostureStore for $store {
            async fn insecure_devices(&self, limit: u32) -> Result<Vec<Device>, Error> {
                sqlx::query(posture::sql::INSECURE_DEVICES)
                    .bind(codec::limit(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(codec::device)
                    .collect()
            }

            async fn shared_keys(&self, limit: u32) -> Result<Vec<posture::SharedKey>, Error> {
                let keys: Vec<String> = sqlx::query(posture::sql::SHARED_KEYS)
                    .bind(codec::limit(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| posture::text_col(r, "spki_sha256"))
                    .collect::<Result<_, _>>()?;
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    let device_ids = sqlx::query(posture::sql::KEY_DEVICES)
                        .bind(&k)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(Error::Database)?
                        .iter()
                        .map(|r| posture::text_col(r, "device_id"))
                        .collect::<Result<_, _>>()?;
                    out.push(posture::SharedKey {
                        spki_sha256: k,
                        device_ids,
                    });
                }
                Ok(out)
            }

            async fn devices_below_counter(
                &self,
                model: &str,
                min: u32,
                limit: u32,
            ) -> Result<Vec<Inventory>, Error> {
                sqlx::query(posture::sql::BELOW_COUNTER)
                    .bind(model)
                    .bind(i64::from(min))
                    .bind(codec::limit(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(fw::inventory)
                    .collect()
            }

            async fn never_connected(
                &self,
                before: OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<Device>, Error> {
                sqlx::query(posture::sql::NEVER_CONNECTED)
                    .bind(micros(before))
                    .bind(codec::limit(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(codec::device)
                    .collect()
            }

            async fn audit_by_action(
                &self,
                action: &str,
                since: OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<AuditEntry>, Error> {
                sqlx::query(posture::sql::AUDIT_BY_ACTION)
                    .bind(action)
                    .bind(micros(since))
                    .bind(codec::limit(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(codec::audit)
                    .collect()
            }
        }
    };
}

pub(crate) use impl_posture_store;
