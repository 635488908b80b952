//! Firmware persistence (migration `0005_firmware`): signing keys, the image catalogue,
//! campaigns and their devices, device inventory. A supertrait of [`Store`](crate::Store)
//! so that an `Arc<dyn Store>` reaches it, kept in its own trait and file so the registry
//! proper stays readable.
//!
//! Rules the store enforces (the rest is `moat-ota`'s): a key name and a (model, image)
//! pair are unique; an image is published only if no image of its model has a higher
//! security counter, checked and inserted in one statement so two uploads cannot race past
//! each other; a campaign and all its device rows are written in one transaction; state
//! changes of campaigns and of devices are compare-and-set, so two hub nodes (or two reports)
//! cannot both advance a wave or both move a device.

use crate::Error;
use crate::codec::RowExt;
use crate::firmware_model::*;
use async_trait::async_trait;
use time::OffsetDateTime;

/// Firmware keys, images, campaigns and inventory. Every method is one transaction.
#[async_trait]
pub trait FirmwareStore: Send + Sync + std::fmt::Debug {
    /// Registers a key. [`Error::Conflict`] if the name exists.
    async fn insert_firmware_key(&self, key: &FirmwareKey) -> Result<(), Error>;
    /// The key with this name.
    async fn firmware_key(&self, name: &str) -> Result<Option<FirmwareKey>, Error>;
    /// All keys, by name.
    async fn firmware_keys(&self) -> Result<Vec<FirmwareKey>, Error>;

    /// Publishes an image unless an image of the same model has a higher security counter
    /// (then returns false and stores nothing). [`Error::Conflict`] if the id or the
    /// (model, digest) pair exists; [`Error::NotFound`] if the key name is not registered.
    async fn publish_firmware(&self, fw: &FirmwareRecord) -> Result<bool, Error>;
    /// The highest security counter published for `model`.
    async fn max_security_counter(&self, model: &str) -> Result<Option<u32>, Error>;
    /// The image with this id.
    async fn firmware(&self, id: &str) -> Result<Option<FirmwareRecord>, Error>;
    /// All images, newest first.
    async fn list_firmware(&self) -> Result<Vec<FirmwareRecord>, Error>;

    /// Creates a campaign with its device rows, all or nothing. [`Error::Conflict`] if the
    /// id exists, [`Error::NotFound`] if the firmware does not.
    async fn create_campaign(
        &self,
        campaign: &Campaign,
        devices: &[CampaignDevice],
    ) -> Result<(), Error>;
    /// The campaign with this id.
    async fn campaign(&self, id: &str) -> Result<Option<Campaign>, Error>;
    /// All campaigns, newest first.
    async fn list_campaigns(&self) -> Result<Vec<Campaign>, Error>;
    /// Moves a campaign from `(state, wave)` `from` to `to`, recording `reason`; false (and
    /// nothing written) if it is no longer at `from`.
    async fn update_campaign(
        &self,
        id: &str,
        from: (CampaignState, u32),
        to: (CampaignState, u32),
        reason: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<bool, Error>;
    /// The devices of a campaign (of one wave if given), by wave then id.
    async fn campaign_devices(
        &self,
        campaign_id: &str,
        wave: Option<u32>,
    ) -> Result<Vec<CampaignDevice>, Error>;
    /// Moves one device of a campaign from `from` to `to`; false if it is not at `from`.
    async fn set_update_state(
        &self,
        campaign_id: &str,
        device_id: &str,
        from: UpdateState,
        to: UpdateState,
        reason: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<bool, Error>;
    /// One device's row in one campaign (whatever the campaign's state).
    async fn update_of_device(
        &self,
        campaign_id: &str,
        device_id: &str,
    ) -> Result<Option<CampaignDevice>, Error>;
    /// A device's rows in running or paused campaigns.
    async fn active_updates_of_device(&self, device_id: &str)
    -> Result<Vec<CampaignDevice>, Error>;
    /// Devices per (wave, state) of a campaign.
    async fn wave_counts(&self, campaign_id: &str) -> Result<Vec<WaveCount>, Error>;
    /// Whether `device_id` is active and was notified of an image with this digest by a
    /// running or paused campaign and has not finished with it: the download authorisation.
    async fn download_allowed(&self, device_id: &str, digest: &str) -> Result<bool, Error>;

    /// Stores (or replaces) what a device reported it runs.
    async fn put_inventory(&self, inventory: &Inventory) -> Result<(), Error>;
    /// What a device last reported it runs.
    async fn inventory(&self, device_id: &str) -> Result<Option<Inventory>, Error>;
    /// Devices of this model, by id: the model a device reported, else the one the
    /// registry holds for it (the allow-list's factory model for EST-enrolled devices, or
    /// the operator's [`Self::set_device_model`]).
    async fn devices_of_model(&self, model: &str) -> Result<Vec<String>, Error>;
    /// A device's model as [`Self::devices_of_model`] sees it (reported, else registered).
    async fn model_of_device(&self, device_id: &str) -> Result<Option<String>, Error>;
    /// Sets the model the registry holds for a device (its reports still win); false if
    /// there is no such device.
    async fn set_device_model(&self, device_id: &str, model: &str) -> Result<bool, Error>;
    /// Devices (not applications) in a group, by id.
    async fn group_members(&self, group: &str) -> Result<Vec<String>, Error>;
}

macro_rules! fw_cols {
    () => {
        "id, model, version, security_counter, size, digest, key_name, created_at"
    };
}
macro_rules! campaign_cols {
    () => {
        "id, firmware_id, target, state, waves, current_wave, success_threshold, \
         abort_threshold, reason, created_at, updated_at"
    };
}
macro_rules! cd_cols {
    () => {
        "cd.campaign_id, cd.device_id, cd.wave, cd.state, cd.reason, cd.updated_at"
    };
}

pub(crate) mod sql {
    pub(crate) const INSERT_KEY: &str = "INSERT INTO firmware_keys \
         (name, kind, spki_der, key_ref, created_at) VALUES ($1, $2, $3, $4, $5)";
    pub(crate) const KEY: &str =
        "SELECT name, kind, spki_der, key_ref, created_at FROM firmware_keys WHERE name = $1";
    pub(crate) const KEYS: &str =
        "SELECT name, kind, spki_der, key_ref, created_at FROM firmware_keys ORDER BY name";
    /// Checks the counter and inserts in one statement.
    pub(crate) const PUBLISH: &str = concat!(
        "INSERT INTO firmware (",
        fw_cols!(),
        ") SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS \
         (SELECT 1 FROM firmware WHERE model = $2 AND security_counter > $4)"
    );
    pub(crate) const MAX_COUNTER: &str =
        "SELECT MAX(security_counter) AS c FROM firmware WHERE model = $1";
    pub(crate) const FIRMWARE: &str =
        concat!("SELECT ", fw_cols!(), " FROM firmware WHERE id = $1");
    pub(crate) const FIRMWARES: &str = concat!(
        "SELECT ",
        fw_cols!(),
        " FROM firmware ORDER BY created_at DESC, id"
    );
    pub(crate) const INSERT_CAMPAIGN: &str = concat!(
        "INSERT INTO campaigns (",
        campaign_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    pub(crate) const INSERT_CAMPAIGN_DEVICE: &str = "INSERT INTO campaign_devices \
         (campaign_id, device_id, wave, state, reason, updated_at) VALUES ($1, $2, $3, $4, $5, $6)";
    pub(crate) const CAMPAIGN: &str =
        concat!("SELECT ", campaign_cols!(), " FROM campaigns WHERE id = $1");
    pub(crate) const CAMPAIGNS: &str = concat!(
        "SELECT ",
        campaign_cols!(),
        " FROM campaigns ORDER BY created_at DESC, id"
    );
    pub(crate) const UPDATE_CAMPAIGN: &str = "UPDATE campaigns \
         SET state = $1, current_wave = $2, reason = $3, updated_at = $4 \
         WHERE id = $5 AND state = $6 AND current_wave = $7";
    pub(crate) const CAMPAIGN_DEVICES: &str = concat!(
        "SELECT ",
        cd_cols!(),
        " FROM campaign_devices cd WHERE cd.campaign_id = $1 ORDER BY cd.wave, cd.device_id"
    );
    pub(crate) const WAVE_DEVICES: &str = concat!(
        "SELECT ",
        cd_cols!(),
        " FROM campaign_devices cd WHERE cd.campaign_id = $1 AND cd.wave = $2 ORDER BY cd.device_id"
    );
    pub(crate) const UPDATE_OF_DEVICE: &str = concat!(
        "SELECT ",
        cd_cols!(),
        " FROM campaign_devices cd WHERE cd.campaign_id = $1 AND cd.device_id = $2"
    );
    pub(crate) const SET_UPDATE_STATE: &str = "UPDATE campaign_devices \
         SET state = $1, reason = $2, updated_at = $3 \
         WHERE campaign_id = $4 AND device_id = $5 AND state = $6";
    pub(crate) const ACTIVE_OF_DEVICE: &str = concat!(
        "SELECT ",
        cd_cols!(),
        " FROM campaign_devices cd JOIN campaigns c ON c.id = cd.campaign_id \
         WHERE cd.device_id = $1 AND c.state IN ('running', 'paused') ORDER BY c.created_at, c.id"
    );
    pub(crate) const WAVE_COUNTS: &str = "SELECT wave, state, COUNT(*) AS n \
         FROM campaign_devices WHERE campaign_id = $1 GROUP BY wave, state ORDER BY wave, state";
    pub(crate) const DOWNLOAD_ALLOWED: &str = "SELECT 1 FROM campaign_devices cd \
         JOIN campaigns c ON c.id = cd.campaign_id JOIN firmware f ON f.id = c.firmware_id \
         WHERE cd.device_id = $1 AND f.digest = $2 AND c.state IN ('running', 'paused') \
         AND cd.state IN ('notified', 'downloading', 'installed') LIMIT 1";
    pub(crate) const PUT_INVENTORY: &str = "INSERT INTO ota_inventory \
         (device_id, model, version, security_counter, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (device_id) DO UPDATE SET model = excluded.model, \
         version = excluded.version, security_counter = excluded.security_counter, \
         updated_at = excluded.updated_at";
    pub(crate) const INVENTORY: &str = "SELECT device_id, model, version, security_counter, \
         updated_at FROM ota_inventory WHERE device_id = $1";
    pub(crate) const DEVICES_OF_MODEL: &str = "SELECT d.id AS device_id FROM devices d \
         LEFT JOIN ota_inventory i ON i.device_id = d.id \
         WHERE COALESCE(i.model, d.model) = $1 ORDER BY d.id";
    pub(crate) const MODEL_OF_DEVICE: &str = "SELECT COALESCE(i.model, d.model) AS model \
         FROM devices d LEFT JOIN ota_inventory i ON i.device_id = d.id WHERE d.id = $1";
    pub(crate) const SET_DEVICE_MODEL: &str = "UPDATE devices SET model = $2 WHERE id = $1";
    pub(crate) const GROUP_MEMBERS: &str = "SELECT device_id FROM identity_access \
         WHERE group_name = $1 AND kind = 'device' ORDER BY device_id";
}

/// A stored u32 (BIGINT); out of range is corrupt.
pub(crate) fn u32_of(v: i64, col: &'static str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_range| Error::Corrupt(col))
}

pub(crate) fn key(row: &impl RowExt) -> Result<FirmwareKey, Error> {
    Ok(FirmwareKey {
        name: row.text("name")?,
        kind: FirmwareKeyKind::parse(&row.text("kind")?)
            .ok_or(Error::Corrupt("firmware_keys.kind"))?,
        spki_der: row.bytes("spki_der")?,
        key_ref: row.opt_text("key_ref")?,
        created_at: row.ts("created_at")?,
    })
}

pub(crate) fn firmware(row: &impl RowExt) -> Result<FirmwareRecord, Error> {
    Ok(FirmwareRecord {
        id: row.text("id")?,
        model: row.text("model")?,
        version: row.text("version")?,
        security_counter: u32_of(row.int("security_counter")?, "firmware.security_counter")?,
        size: u64::try_from(row.int("size")?).map_err(|_neg| Error::Corrupt("firmware.size"))?,
        digest: row.text("digest")?,
        key_name: row.text("key_name")?,
        created_at: row.ts("created_at")?,
    })
}

pub(crate) fn campaign(row: &impl RowExt) -> Result<Campaign, Error> {
    Ok(Campaign {
        id: row.text("id")?,
        firmware_id: row.text("firmware_id")?,
        target: row.text("target")?,
        state: CampaignState::parse(&row.text("state")?)
            .ok_or(Error::Corrupt("campaigns.state"))?,
        waves: u32_of(row.int("waves")?, "campaigns.waves")?,
        current_wave: u32_of(row.int("current_wave")?, "campaigns.current_wave")?,
        success_threshold: u32_of(row.int("success_threshold")?, "campaigns.success_threshold")?,
        abort_threshold: u32_of(row.int("abort_threshold")?, "campaigns.abort_threshold")?,
        reason: row.opt_text("reason")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    })
}

pub(crate) fn campaign_device(row: &impl RowExt) -> Result<CampaignDevice, Error> {
    Ok(CampaignDevice {
        campaign_id: row.text("campaign_id")?,
        device_id: row.text("device_id")?,
        wave: u32_of(row.int("wave")?, "campaign_devices.wave")?,
        state: UpdateState::parse(&row.text("state")?)
            .ok_or(Error::Corrupt("campaign_devices.state"))?,
        reason: row.opt_text("reason")?,
        updated_at: row.ts("updated_at")?,
    })
}

pub(crate) fn inventory(row: &impl RowExt) -> Result<Inventory, Error> {
    Ok(Inventory {
        device_id: row.text("device_id")?,
        model: row.text("model")?,
        version: row.text("version")?,
        security_counter: u32_of(
            row.int("security_counter")?,
            "ota_inventory.security_counter",
        )?,
        updated_at: row.ts("updated_at")?,
    })
}

/// Implements [`FirmwareStore`] for `$store` (see `store_impl` for what the store provides).
macro_rules! impl_firmware_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::firmware::FirmwareStore for $store {
            async fn insert_firmware_key(&self, k: &FirmwareKey) -> Result<(), Error> {
                let k = k.clone();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    sqlx::query(fw::sql::INSERT_KEY)
                        .bind(&k.name)
                        .bind(k.kind.as_str())
                        .bind(&k.spki_der)
                        .bind(&k.key_ref)
                        .bind(micros(k.created_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| classify(e, || format!("firmware key {}", k.name)))
                        .map(drop)
                })
            }

            async fn firmware_key(&self, name: &str) -> Result<Option<FirmwareKey>, Error> {
                sqlx::query(fw::sql::KEY)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| fw::key(&r))
                    .transpose()
            }

            async fn firmware_keys(&self) -> Result<Vec<FirmwareKey>, Error> {
                sqlx::query(fw::sql::KEYS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(fw::key)
                    .collect()
            }

            async fn publish_firmware(&self, f: &FirmwareRecord) -> Result<bool, Error> {
                let f = f.clone();
                let size = i64::try_from(f.size).map_err(|_big| Error::Corrupt("firmware.size"))?;
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query(fw::sql::PUBLISH)
                        .bind(&f.id)
                        .bind(&f.model)
                        .bind(&f.version)
                        .bind(i64::from(f.security_counter))
                        .bind(size)
                        .bind(&f.digest)
                        .bind(&f.key_name)
                        .bind(micros(f.created_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| {
                            classify_fk(
                                e,
                                || {
                                    format!(
                                        "firmware {} (or this image for model {})",
                                        f.id, f.model
                                    )
                                },
                                || format!("firmware key {}", f.key_name),
                            )
                        })?;
                    Ok(done.rows_affected() == 1)
                })
            }

            async fn max_security_counter(&self, model: &str) -> Result<Option<u32>, Error> {
                let row = sqlx::query(fw::sql::MAX_COUNTER)
                    .bind(model)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                row.opt_int("c")?
                    .map(|c| fw::u32_of(c, "firmware.security_counter"))
                    .transpose()
            }

            async fn firmware(&self, id: &str) -> Result<Option<FirmwareRecord>, Error> {
                sqlx::query(fw::sql::FIRMWARE)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| fw::firmware(&r))
                    .transpose()
            }

            async fn list_firmware(&self) -> Result<Vec<FirmwareRecord>, Error> {
                sqlx::query(fw::sql::FIRMWARES)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(fw::firmware)
                    .collect()
            }

            async fn create_campaign(
                &self,
                c: &Campaign,
                devices: &[CampaignDevice],
            ) -> Result<(), Error> {
                let (c, devices) = (c.clone(), devices.to_vec());
                write_op!(self, Tx::Needed, |conn| async {
                    sqlx::query(fw::sql::INSERT_CAMPAIGN)
                        .bind(&c.id)
                        .bind(&c.firmware_id)
                        .bind(&c.target)
                        .bind(c.state.as_str())
                        .bind(i64::from(c.waves))
                        .bind(i64::from(c.current_wave))
                        .bind(i64::from(c.success_threshold))
                        .bind(i64::from(c.abort_threshold))
                        .bind(&c.reason)
                        .bind(micros(c.created_at))
                        .bind(micros(c.updated_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| {
                            classify_fk(
                                e,
                                || format!("campaign {}", c.id),
                                || format!("firmware {}", c.firmware_id),
                            )
                        })?;
                    for d in &devices {
                        sqlx::query(fw::sql::INSERT_CAMPAIGN_DEVICE)
                            .bind(&c.id)
                            .bind(&d.device_id)
                            .bind(i64::from(d.wave))
                            .bind(d.state.as_str())
                            .bind(&d.reason)
                            .bind(micros(d.updated_at))
                            .execute(&mut *conn)
                            .await
                            .map_err(|e| {
                                classify(e, || {
                                    format!("device {} in campaign {}", d.device_id, c.id)
                                })
                            })?;
                    }
                    Ok(())
                })
            }

            async fn campaign(&self, id: &str) -> Result<Option<Campaign>, Error> {
                sqlx::query(fw::sql::CAMPAIGN)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| fw::campaign(&r))
                    .transpose()
            }

            async fn list_campaigns(&self) -> Result<Vec<Campaign>, Error> {
                sqlx::query(fw::sql::CAMPAIGNS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(fw::campaign)
                    .collect()
            }

            async fn update_campaign(
                &self,
                id: &str,
                from: (CampaignState, u32),
                to: (CampaignState, u32),
                reason: Option<&str>,
                at: OffsetDateTime,
            ) -> Result<bool, Error> {
                let (id, reason) = (id.to_owned(), reason.map(str::to_owned));
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query(fw::sql::UPDATE_CAMPAIGN)
                        .bind(to.0.as_str())
                        .bind(i64::from(to.1))
                        .bind(&reason)
                        .bind(micros(at))
                        .bind(&id)
                        .bind(from.0.as_str())
                        .bind(i64::from(from.1))
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    Ok(done.rows_affected() == 1)
                })
            }

            async fn campaign_devices(
                &self,
                campaign_id: &str,
                wave: Option<u32>,
            ) -> Result<Vec<CampaignDevice>, Error> {
                let rows = match wave {
                    Some(w) => {
                        sqlx::query(fw::sql::WAVE_DEVICES)
                            .bind(campaign_id)
                            .bind(i64::from(w))
                            .fetch_all(&self.pool)
                            .await
                    }
                    None => {
                        sqlx::query(fw::sql::CAMPAIGN_DEVICES)
                            .bind(campaign_id)
                            .fetch_all(&self.pool)
                            .await
                    }
                }
                .map_err(Error::Database)?;
                rows.iter().map(fw::campaign_device).collect()
            }

            async fn set_update_state(
                &self,
                campaign_id: &str,
                device_id: &str,
                from: UpdateState,
                to: UpdateState,
                reason: Option<&str>,
                at: OffsetDateTime,
            ) -> Result<bool, Error> {
                let (campaign_id, device_id, reason) = (
                    campaign_id.to_owned(),
                    device_id.to_owned(),
                    reason.map(str::to_owned),
                );
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query(fw::sql::SET_UPDATE_STATE)
                        .bind(to.as_str())
                        .bind(&reason)
                        .bind(micros(at))
                        .bind(&campaign_id)
                        .bind(&device_id)
                        .bind(from.as_str())
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    Ok(done.rows_affected() == 1)
                })
            }

            async fn update_of_device(
                &self,
                campaign_id: &str,
                device_id: &str,
            ) -> Result<Option<CampaignDevice>, Error> {
                sqlx::query(fw::sql::UPDATE_OF_DEVICE)
                    .bind(campaign_id)
                    .bind(device_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| fw::campaign_device(&r))
                    .transpose()
            }

            async fn active_updates_of_device(
                &self,
                device_id: &str,
            ) -> Result<Vec<CampaignDevice>, Error> {
                sqlx::query(fw::sql::ACTIVE_OF_DEVICE)
                    .bind(device_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(fw::campaign_device)
                    .collect()
            }

            async fn wave_counts(&self, campaign_id: &str) -> Result<Vec<WaveCount>, Error> {
                sqlx::query(fw::sql::WAVE_COUNTS)
                    .bind(campaign_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| {
                        Ok(WaveCount {
                            wave: fw::u32_of(r.int("wave")?, "campaign_devices.wave")?,
                            state: UpdateState::parse(&r.text("state")?)
                                .ok_or(Error::Corrupt("campaign_devices.state"))?,
                            count: u64::try_from(r.int("n")?)
                                .map_err(|_neg| Error::Corrupt("count"))?,
                        })
                    })
                    .collect()
            }

            async fn download_allowed(&self, device_id: &str, digest: &str) -> Result<bool, Error> {
                let row = sqlx::query(fw::sql::DOWNLOAD_ALLOWED)
                    .bind(device_id)
                    .bind(digest)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                Ok(row.is_some())
            }

            async fn put_inventory(&self, i: &Inventory) -> Result<(), Error> {
                let i = i.clone();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    sqlx::query(fw::sql::PUT_INVENTORY)
                        .bind(&i.device_id)
                        .bind(&i.model)
                        .bind(&i.version)
                        .bind(i64::from(i.security_counter))
                        .bind(micros(i.updated_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)
                        .map(drop)
                })
            }

            async fn inventory(&self, device_id: &str) -> Result<Option<Inventory>, Error> {
                sqlx::query(fw::sql::INVENTORY)
                    .bind(device_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| fw::inventory(&r))
                    .transpose()
            }

            async fn devices_of_model(&self, model: &str) -> Result<Vec<String>, Error> {
                sqlx::query(fw::sql::DEVICES_OF_MODEL)
                    .bind(model)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| r.text("device_id"))
                    .collect()
            }

            async fn model_of_device(&self, device_id: &str) -> Result<Option<String>, Error> {
                sqlx::query(fw::sql::MODEL_OF_DEVICE)
                    .bind(device_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| r.opt_text("model"))
                    .transpose()
                    .map(Option::flatten)
            }

            async fn set_device_model(&self, device_id: &str, model: &str) -> Result<bool, Error> {
                let (id, model) = (device_id.to_owned(), model.to_owned());
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query(fw::sql::SET_DEVICE_MODEL)
                        .bind(&id)
                        .bind(&model)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    Ok(done.rows_affected() == 1)
                })
            }

            async fn group_members(&self, group: &str) -> Result<Vec<String>, Error> {
                sqlx::query(fw::sql::GROUP_MEMBERS)
                    .bind(group)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| r.text("device_id"))
                    .collect()
            }
        }
    };
}

pub(crate) use impl_firmware_store;
