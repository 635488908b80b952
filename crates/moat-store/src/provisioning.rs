//! Field provisioning persistence (migration `0007_provisioning`): enrollment groups and the
//! hub each provisioned device is assigned to. A supertrait of [`Store`](crate::Store), like
//! [`FirmwareStore`](crate::FirmwareStore).
//!
//! A provisioning is one transaction ([`ProvisioningStore::provision`]): the operational
//! certificate, the device's connection policy and lifecycle stage (`provisioned`), its group
//! / ACL policy, its assignment and the audit entry are written together or not at all.

use crate::Error;
use crate::codec::RowExt;
use crate::model::ConnectionPolicy;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How an enrollment group picks a device's hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Allocation {
    /// Always the group's hub (or the first configured hub).
    Fixed,
    /// A stable hash of the device id over the configured hubs.
    Hashed,
}

impl Allocation {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            Allocation::Fixed => "fixed",
            Allocation::Hashed => "hashed",
        }
    }
    /// From column text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fixed" => Some(Allocation::Fixed),
            "hashed" => Some(Allocation::Hashed),
            _ => None,
        }
    }
}

/// Which devices a provisioning call matches, and what they get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentGroup {
    /// Its name.
    pub name: String,
    /// Devices whose provisioning certificate this CA issued (None: any CA).
    pub ca_name: Option<String>,
    /// Devices of this factory model (None: any model).
    pub model: Option<String>,
    /// How the hub is chosen.
    pub allocation: Allocation,
    /// The hub endpoint of a fixed allocation (None: the first configured hub).
    pub hub: Option<String>,
    /// The connection policy a provisioned device gets.
    pub policy: ConnectionPolicy,
    /// The MQTT group it joins.
    pub mqtt_group: Option<String>,
    /// The ACL policy it gets as its own.
    pub acl_policy: Option<String>,
    /// Created.
    pub created_at: OffsetDateTime,
}

/// Where a device was provisioned to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The device.
    pub device_id: String,
    /// The hub's MQTT endpoint (`mqtts://host:port`).
    pub hub: String,
    /// The enrollment group that decided it (None: the hub's defaults).
    pub enrollment_group: Option<String>,
    /// Last provisioned.
    pub provisioned_at: OffsetDateTime,
    /// How many times it was provisioned.
    pub provisions: u32,
}

/// Enrollment groups and assignments. Every method is one transaction.
#[async_trait]
pub trait ProvisioningStore: Send + Sync {
    /// Adds a group. [`Error::Conflict`] if the name exists.
    async fn insert_enrollment_group(&self, group: &EnrollmentGroup) -> Result<(), Error>;
    /// All groups, by name.
    async fn enrollment_groups(&self) -> Result<Vec<EnrollmentGroup>, Error>;
    /// Deletes a group. [`Error::NotFound`] if there is none of that name.
    async fn delete_enrollment_group(&self, name: &str) -> Result<(), Error>;
    /// A device's assignment.
    async fn assignment(&self, device_id: &str) -> Result<Option<Assignment>, Error>;
}

pub(crate) mod sql {
    pub(crate) const INSERT_GROUP: &str = "INSERT INTO enrollment_groups \
         (name, ca_name, model, allocation, hub, policy, mqtt_group, acl_policy, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    pub(crate) const GROUPS: &str = "SELECT name, ca_name, model, allocation, hub, policy, \
         mqtt_group, acl_policy, created_at FROM enrollment_groups ORDER BY name";
    pub(crate) const DELETE_GROUP: &str = "DELETE FROM enrollment_groups WHERE name = $1";
    pub(crate) const ASSIGNMENT: &str = "SELECT device_id, hub, enrollment_group, \
         provisioned_at, provisions FROM device_assignments WHERE device_id = $1";
    pub(crate) const UPSERT_ASSIGNMENT: &str = "INSERT INTO device_assignments \
         (device_id, hub, enrollment_group, provisioned_at, provisions) \
         VALUES ($1, $2, $3, $4, 1) ON CONFLICT (device_id) DO UPDATE SET hub = excluded.hub, \
         enrollment_group = excluded.enrollment_group, provisioned_at = excluded.provisioned_at, \
         provisions = device_assignments.provisions + 1";
    /// The policy the enrollment group gives, and the lifecycle stage `provisioned`.
    pub(crate) const SET_POLICY: &str =
        "UPDATE devices SET policy = $2, updated_at = $3, stage = 'provisioned' WHERE id = $1";
}

pub(crate) fn group(row: &impl RowExt) -> Result<EnrollmentGroup, Error> {
    Ok(EnrollmentGroup {
        name: row.text("name")?,
        ca_name: row.opt_text("ca_name")?,
        model: row.opt_text("model")?,
        allocation: Allocation::parse(&row.text("allocation")?)
            .ok_or(Error::Corrupt("enrollment_groups.allocation"))?,
        hub: row.opt_text("hub")?,
        policy: ConnectionPolicy::parse(&row.text("policy")?)
            .ok_or(Error::Corrupt("enrollment_groups.policy"))?,
        mqtt_group: row.opt_text("mqtt_group")?,
        acl_policy: row.opt_text("acl_policy")?,
        created_at: row.ts("created_at")?,
    })
}

pub(crate) fn assignment(row: &impl RowExt) -> Result<Assignment, Error> {
    Ok(Assignment {
        device_id: row.text("device_id")?,
        hub: row.text("hub")?,
        enrollment_group: row.opt_text("enrollment_group")?,
        provisioned_at: row.ts("provisioned_at")?,
        provisions: u32::try_from(row.int("provisions")?)
            .map_err(|_| Error::Corrupt("device_assignments.provisions"))?,
    })
}

/// Implements [`ProvisioningStore`] for `$store` (see `store_impl` for what the store provides).
macro_rules! impl_provisioning_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::provisioning::ProvisioningStore for $store {
            async fn insert_enrollment_group(&self, g: &EnrollmentGroup) -> Result<(), Error> {
                let g = g.clone();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    sqlx::query(prov::sql::INSERT_GROUP)
                        .bind(&g.name)
                        .bind(&g.ca_name)
                        .bind(&g.model)
                        .bind(g.allocation.as_str())
                        .bind(&g.hub)
                        .bind(g.policy.as_str())
                        .bind(&g.mqtt_group)
                        .bind(&g.acl_policy)
                        .bind(micros(g.created_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| classify(e, || format!("enrollment group {}", g.name)))
                        .map(drop)
                })
            }

            async fn enrollment_groups(&self) -> Result<Vec<EnrollmentGroup>, Error> {
                sqlx::query(prov::sql::GROUPS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(prov::group)
                    .collect()
            }

            async fn delete_enrollment_group(&self, name: &str) -> Result<(), Error> {
                let name = name.to_string();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query(prov::sql::DELETE_GROUP)
                        .bind(&name)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if done.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("enrollment group {name}")));
                    }
                    Ok(())
                })
            }

            async fn assignment(&self, device_id: &str) -> Result<Option<Assignment>, Error> {
                sqlx::query(prov::sql::ASSIGNMENT)
                    .bind(device_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| prov::assignment(&r))
                    .transpose()
            }
        }
    };
}

pub(crate) use impl_provisioning_store;
