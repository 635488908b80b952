//! Campaigns: targets, staged waves, thresholds, per-device state driven by reports, and
//! the operator's pause, resume and cancel.
//!
//! Rules:
//! - Targets are resolved once, at creation, to active devices (a device whose model is
//!   another one is left out: the model it reported, else the registry's); they are split
//!   into waves in id order.
//! - A wave starts by signing one manifest (valid for `manifest_ttl`) and publishing it to
//!   each of its devices; a device is marked `notified` before its notice goes out, so its
//!   download is authorised by the time it can ask.
//! - A report moves a device forward only (notified → downloading → installed → a final
//!   state); `confirmed` is the only success.
//! - After every change: if failed + rolled back ≥ abort threshold × notified (and at least
//!   one failed), the campaign aborts and devices not yet notified are cancelled; else if
//!   confirmed ≥ success threshold × the current wave's devices, the next wave starts (or,
//!   after the last, the campaign succeeds).
//! - Revoked, disabled and deleted devices are skipped and their notices withdrawn; skipped
//!   devices do not count in a wave's denominator. A skipped device that is active again
//!   (re-enabled) while the campaign is running or paused is back in it: pending, and
//!   notified at once if its wave has started.

use crate::{Error, Ota, random_id, valid_name};
use moat_core::Actor;
use moat_ota_proto::{Manifest, Report, ReportState, sign_manifest};
use moat_store::{
    Campaign, CampaignDevice, CampaignState, DeviceState, Inventory, UpdateState, WaveCount,
};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Who a campaign is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Devices in a group.
    Group(String),
    /// Devices of this model: the one a device reported, else the one the registry holds
    /// (the allow-list's factory model, or `moat device set-model`).
    Model(String),
    /// These devices.
    Devices(Vec<String>),
}

impl Target {
    /// Parses `group:G`, `model:M` or `devices:a,b,c`.
    pub fn parse(s: &str) -> Result<Target, Error> {
        let bad = || {
            Error::Invalid(format!(
                "target {s:?} must be group:GROUP, model:MODEL or devices:ID,ID,…"
            ))
        };
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        let t = match kind {
            "group" => Target::Group(value.to_owned()),
            "model" => Target::Model(value.to_owned()),
            "devices" => Target::Devices(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => return Err(bad()),
        };
        match &t {
            Target::Group(v) | Target::Model(v) => valid_name(kind, v)?,
            Target::Devices(ids) if ids.is_empty() => return Err(bad()),
            Target::Devices(ids) => {
                for id in ids {
                    valid_name("device id", id)?;
                }
            }
        }
        Ok(t)
    }
}

/// One wave as the operator gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveSpec {
    /// This many devices.
    Count(u32),
    /// Up to this percentage of all targeted devices, cumulative (`10%,50%,100%`).
    Percent(u32),
}

impl WaveSpec {
    /// Parses `10%,50%,100%` (cumulative shares) or `5,20,75` (wave sizes). Devices left
    /// after the last wave form one more wave.
    pub fn parse_list(s: &str) -> Result<Vec<WaveSpec>, Error> {
        let bad = |w: &str| {
            Error::Invalid(format!(
                "wave {w:?}: give wave sizes (5,20,75) or increasing cumulative percentages (10%,50%,100%)"
            ))
        };
        let mut out = Vec::new();
        let mut last_pct = 0;
        for w in s.split(',').map(str::trim) {
            let spec = match w.strip_suffix('%') {
                Some(p) => {
                    let p: u32 = p.parse().map_err(|_| bad(w))?;
                    if p == 0 || p > 100 || p <= last_pct {
                        return Err(bad(w));
                    }
                    last_pct = p;
                    WaveSpec::Percent(p)
                }
                None => match w.parse::<u32>() {
                    Ok(n) if n > 0 => WaveSpec::Count(n),
                    _ => return Err(bad(w)),
                },
            };
            out.push(spec);
        }
        let pct = out.iter().any(|w| matches!(w, WaveSpec::Percent(_)));
        let cnt = out.iter().any(|w| matches!(w, WaveSpec::Count(_)));
        if out.is_empty() || (pct && cnt) {
            return Err(bad(s));
        }
        Ok(out)
    }

    /// Splits `n` devices into wave sizes (each wave at least one device; empty waves are
    /// dropped; leftovers form a last wave).
    pub fn sizes(specs: &[WaveSpec], n: usize) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut placed = 0usize;
        for s in specs {
            let end = match *s {
                WaveSpec::Count(c) => placed.saturating_add(c as usize),
                WaveSpec::Percent(p) => (n * p as usize).div_ceil(100),
            }
            .min(n);
            if end > placed {
                sizes.push(end - placed);
                placed = end;
            }
        }
        if placed < n {
            sizes.push(n - placed);
        }
        sizes
    }
}

/// A campaign to create.
#[derive(Clone, Debug)]
pub struct CreateCampaign {
    /// The image (catalogue id).
    pub firmware_id: String,
    /// Who gets it.
    pub target: Target,
    /// The waves (default: one wave of everyone).
    pub waves: Vec<WaveSpec>,
    /// Percentage of a wave that must confirm before the next starts (default 100).
    pub success_threshold: u32,
    /// Percentage of notified devices that may fail before the campaign aborts (default 10).
    pub abort_threshold: u32,
}

/// One wave's devices per state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaveProgress {
    /// The wave (0-based).
    pub wave: u32,
    /// Devices in it.
    pub devices: u64,
    /// Count per state.
    pub states: BTreeMap<&'static str, u64>,
}

impl WaveProgress {
    /// Devices in `state`.
    pub fn count(&self, state: UpdateState) -> u64 {
        self.states.get(state.as_str()).copied().unwrap_or(0)
    }
}

/// A campaign with its progress.
#[derive(Clone, Debug)]
pub struct CampaignView {
    /// The record.
    pub campaign: Campaign,
    /// Per wave.
    pub waves: Vec<WaveProgress>,
}

fn report_state(s: ReportState) -> Option<UpdateState> {
    Some(match s {
        ReportState::Idle => return None,
        ReportState::Downloading => UpdateState::Downloading,
        ReportState::Installed => UpdateState::Installed,
        ReportState::Confirmed => UpdateState::Confirmed,
        ReportState::Failed => UpdateState::Failed,
        ReportState::RolledBack => UpdateState::RolledBack,
    })
}

/// Reasons are the device's words; keep them to a sentence.
fn clip(reason: Option<&str>) -> Option<String> {
    reason.map(|r| r.chars().take(300).collect())
}

impl Ota {
    /// Creates a campaign and starts its first wave.
    pub async fn create_campaign(
        &self,
        req: CreateCampaign,
        actor: &Actor,
    ) -> Result<CampaignView, Error> {
        let result = self.create_inner(req).await;
        let target = result.as_ref().ok().map(|c| c.campaign.id.clone());
        self.audited(actor, "campaign.create", target.as_deref(), result)
            .await
    }

    async fn create_inner(&self, req: CreateCampaign) -> Result<CampaignView, Error> {
        for (what, v) in [
            ("success threshold", req.success_threshold),
            ("abort threshold", req.abort_threshold),
        ] {
            if v > 100 {
                return Err(Error::Invalid(format!("{what} {v}% is over 100%")));
            }
        }
        let fw = self.firmware(&req.firmware_id).await?;
        let candidates = match &req.target {
            Target::Group(g) => self.store().group_members(g).await?,
            Target::Model(m) => self.store().devices_of_model(m).await?,
            Target::Devices(ids) => {
                for id in ids {
                    if self.hub.find_device(id).await?.is_none() {
                        return Err(Error::NotFound {
                            kind: "device",
                            id: id.clone(),
                        });
                    }
                }
                ids.clone()
            }
        };
        let mut devices = Vec::new();
        for id in candidates {
            let Some(d) = self.hub.find_device(&id).await? else {
                continue;
            };
            if d.state != DeviceState::Active {
                continue;
            }
            if let Some(model) = self.store().model_of_device(&id).await?
                && model != fw.model
            {
                tracing::info!(device = %id, %model, "left out of a campaign for another model");
                continue;
            }
            devices.push(id);
        }
        devices.sort();
        devices.dedup();
        if devices.is_empty() {
            return Err(Error::Invalid(format!(
                "no active device of model {:?} matches the target",
                fw.model
            )));
        }
        let specs = if req.waves.is_empty() {
            vec![WaveSpec::Percent(100)]
        } else {
            req.waves.clone()
        };
        let sizes = WaveSpec::sizes(&specs, devices.len());
        let now = OffsetDateTime::now_utc();
        let campaign = Campaign {
            id: random_id("cmp-"),
            firmware_id: fw.id.clone(),
            target: match &req.target {
                Target::Group(g) => format!("group:{g}"),
                Target::Model(m) => format!("model:{m}"),
                Target::Devices(ids) => format!("devices:{}", ids.join(",")),
            },
            state: CampaignState::Running,
            waves: sizes.len() as u32,
            current_wave: 0,
            success_threshold: req.success_threshold,
            abort_threshold: req.abort_threshold,
            reason: None,
            created_at: now,
            updated_at: now,
        };
        let mut rows = Vec::with_capacity(devices.len());
        let mut ids = devices.into_iter();
        for (wave, size) in sizes.iter().enumerate() {
            for device_id in ids.by_ref().take(*size) {
                rows.push(CampaignDevice {
                    campaign_id: campaign.id.clone(),
                    device_id,
                    wave: wave as u32,
                    state: UpdateState::Pending,
                    reason: None,
                    updated_at: now,
                });
            }
        }
        self.store().create_campaign(&campaign, &rows).await?;
        tracing::info!(campaign = %campaign.id, firmware = %fw.id, devices = rows.len(), waves = sizes.len(), "campaign created");
        {
            let _engine = self.engine.lock().await;
            self.start_wave(&campaign, 0).await?;
            self.evaluate_locked(&campaign.id).await?;
        }
        self.campaign(&campaign.id).await
    }

    /// The signed manifest of `campaign`'s image, valid for `manifest_ttl` from now.
    async fn manifest(&self, campaign: &Campaign) -> Result<Vec<u8>, Error> {
        let fw = self.firmware(&campaign.firmware_id).await?;
        let now = OffsetDateTime::now_utc();
        let ttl = i64::try_from(self.cfg.manifest_ttl.as_secs()).unwrap_or(i64::MAX);
        let m = Manifest {
            campaign: campaign.id.clone(),
            firmware: fw.id.clone(),
            models: vec![fw.model.clone()],
            version: fw.version.clone(),
            security_counter: fw.security_counter,
            size: fw.size,
            url: format!(
                "{}{}",
                self.cfg.download_url.trim_end_matches('/'),
                moat_ota_proto::download_path(&fw.digest)
            ),
            digest: fw.digest,
            issued_at: now.unix_timestamp(),
            expires_at: now.unix_timestamp().saturating_add(ttl),
        };
        sign_manifest(&m, &self.update_key).map_err(|e| Error::Signing(e.to_string()))
    }

    /// Notifies the pending devices of `wave` (skipping those no longer active).
    async fn start_wave(&self, campaign: &Campaign, wave: u32) -> Result<(), Error> {
        let pending: Vec<_> = self
            .store()
            .campaign_devices(&campaign.id, Some(wave))
            .await?
            .into_iter()
            .filter(|d| d.state == UpdateState::Pending)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let manifest = self.manifest(campaign).await?;
        let now = OffsetDateTime::now_utc();
        let mut notified = 0;
        for d in pending {
            let active = self
                .hub
                .find_device(&d.device_id)
                .await?
                .is_some_and(|dev| dev.state == DeviceState::Active);
            if !active {
                self.store()
                    .set_update_state(
                        &campaign.id,
                        &d.device_id,
                        UpdateState::Pending,
                        UpdateState::Skipped,
                        Some("device is no longer active"),
                        now,
                    )
                    .await?;
                continue;
            }
            // Authorised before it is told, so its download never races its notice.
            if self
                .store()
                .set_update_state(
                    &campaign.id,
                    &d.device_id,
                    UpdateState::Pending,
                    UpdateState::Notified,
                    None,
                    now,
                )
                .await?
            {
                self.notifier.notify(&d.device_id, &manifest);
                notified += 1;
            }
        }
        tracing::info!(campaign = %campaign.id, wave, notified, "wave started");
        Ok(())
    }

    /// Applies one device report: inventory, then its state in the campaign it names.
    pub async fn handle_report(&self, device_id: &str, report: &Report) -> Result<(), Error> {
        if let Some(r) = &report.running {
            self.store()
                .put_inventory(&Inventory {
                    device_id: device_id.to_owned(),
                    model: r.model.chars().take(64).collect(),
                    version: r.version.chars().take(64).collect(),
                    security_counter: r.security_counter,
                    updated_at: OffsetDateTime::now_utc(),
                })
                .await?;
        }
        let (Some(campaign_id), Some(to)) = (&report.campaign, report_state(report.state)) else {
            return Ok(());
        };
        let reason = clip(report.reason.as_deref());
        let mut moved = false;
        // Compare-and-set, retried if another report moved the device meanwhile. Reports
        // count after an abort or cancel too: the devices notified before it still finish.
        for _ in 0..4 {
            let Some(row) = self
                .store()
                .update_of_device(campaign_id, device_id)
                .await?
            else {
                tracing::debug!(device = device_id, campaign = %campaign_id, "report for a campaign this device is not in");
                return Ok(());
            };
            if row.state.is_final()
                || row.state == UpdateState::Pending
                || to.rank() <= row.state.rank()
            {
                return Ok(());
            }
            if self
                .store()
                .set_update_state(
                    campaign_id,
                    device_id,
                    row.state,
                    to,
                    if to.is_failure() {
                        reason.as_deref()
                    } else {
                        None
                    },
                    OffsetDateTime::now_utc(),
                )
                .await?
            {
                moved = true;
                break;
            }
        }
        if !moved {
            return Ok(());
        }
        if to.is_final() {
            self.notifier.clear(device_id);
        }
        // On a cluster, one node steps campaigns: the leader, here or in its next
        // `evaluate_running`.
        if !self.hub.is_leader() {
            return Ok(());
        }
        let _engine = self.engine.lock().await;
        self.evaluate_locked(campaign_id).await
    }

    /// Checks the thresholds of every running campaign (aborts, starts next waves). The
    /// leader of a cluster runs it periodically, for the reports other nodes recorded.
    pub async fn evaluate_running(&self) -> Result<(), Error> {
        let _engine = self.engine.lock().await;
        for c in self.store().list_campaigns().await? {
            if c.state == CampaignState::Running {
                self.evaluate_locked(&c.id).await?;
            }
        }
        Ok(())
    }

    /// Checks the thresholds of a running campaign and aborts it or starts its next wave(s).
    /// The caller holds the engine lock.
    async fn evaluate_locked(&self, campaign_id: &str) -> Result<(), Error> {
        loop {
            let Some(c) = self.store().campaign(campaign_id).await? else {
                return Ok(());
            };
            if c.state != CampaignState::Running {
                return Ok(());
            }
            let counts = self.store().wave_counts(campaign_id).await?;
            let sum = |pred: &dyn Fn(&WaveCount) -> bool| -> u64 {
                counts.iter().filter(|w| pred(w)).map(|w| w.count).sum()
            };
            let failures = sum(&|w| w.state.is_failure());
            let notified = sum(&|w| {
                !matches!(
                    w.state,
                    UpdateState::Pending | UpdateState::Skipped | UpdateState::Cancelled
                )
            });
            let now = OffsetDateTime::now_utc();
            if failures > 0 && failures * 100 >= u64::from(c.abort_threshold) * notified {
                let reason = format!(
                    "{failures} of {notified} notified devices failed or rolled back (abort threshold {}%)",
                    c.abort_threshold
                );
                if self
                    .store()
                    .update_campaign(
                        campaign_id,
                        (CampaignState::Running, c.current_wave),
                        (CampaignState::Aborted, c.current_wave),
                        Some(&reason),
                        now,
                    )
                    .await?
                {
                    tracing::warn!(campaign = campaign_id, %reason, "campaign aborted");
                    self.cancel_pending(&c, "campaign aborted").await?;
                    self.withdraw_unstarted(&c.id).await?;
                }
                return Ok(());
            }
            let wave = c.current_wave;
            let in_wave = sum(&|w| {
                w.wave == wave && !matches!(w.state, UpdateState::Skipped | UpdateState::Cancelled)
            });
            let confirmed = sum(&|w| w.wave == wave && w.state == UpdateState::Confirmed);
            if confirmed * 100 < u64::from(c.success_threshold) * in_wave {
                return Ok(());
            }
            let last = wave + 1 >= c.waves;
            let to = if last {
                (CampaignState::Succeeded, wave)
            } else {
                (CampaignState::Running, wave + 1)
            };
            if !self
                .store()
                .update_campaign(campaign_id, (CampaignState::Running, wave), to, None, now)
                .await?
            {
                return Ok(());
            }
            if last {
                tracing::info!(campaign = campaign_id, "campaign succeeded");
                return Ok(());
            }
            tracing::info!(
                campaign = campaign_id,
                wave = wave + 1,
                confirmed,
                in_wave,
                "wave threshold reached; next wave"
            );
            let c = Campaign {
                current_wave: wave + 1,
                ..c
            };
            self.start_wave(&c, wave + 1).await?;
        }
    }

    /// Marks every device not yet notified as cancelled.
    async fn cancel_pending(&self, c: &Campaign, reason: &str) -> Result<(), Error> {
        let now = OffsetDateTime::now_utc();
        for d in self.store().campaign_devices(&c.id, None).await? {
            if d.state == UpdateState::Pending {
                self.store()
                    .set_update_state(
                        &c.id,
                        &d.device_id,
                        UpdateState::Pending,
                        UpdateState::Cancelled,
                        Some(reason),
                        now,
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Re-signs and re-sends the notices of devices that were notified more than half a
    /// manifest lifetime ago and have not started (offline, usually), so a device that comes
    /// back late finds a manifest it can still accept rather than an expired one. Returns
    /// how many notices were renewed. `serve` calls it periodically.
    pub async fn refresh_notices(&self) -> Result<usize, Error> {
        let now = OffsetDateTime::now_utc();
        let half =
            time::Duration::try_from(self.cfg.manifest_ttl / 2).unwrap_or(time::Duration::MAX);
        let mut renewed = 0;
        for c in self.store().list_campaigns().await? {
            if !c.state.is_active() {
                continue;
            }
            let stale: Vec<_> = self
                .store()
                .campaign_devices(&c.id, None)
                .await?
                .into_iter()
                .filter(|d| d.state == UpdateState::Notified && now - d.updated_at >= half)
                .collect();
            if stale.is_empty() {
                continue;
            }
            let manifest = self.manifest(&c).await?;
            for d in stale {
                // Touch first: a report that moved the device meanwhile wins.
                if self
                    .store()
                    .set_update_state(
                        &c.id,
                        &d.device_id,
                        UpdateState::Notified,
                        UpdateState::Notified,
                        None,
                        now,
                    )
                    .await?
                {
                    self.notifier.notify(&d.device_id, &manifest);
                    renewed += 1;
                }
            }
        }
        if renewed > 0 {
            tracing::info!(renewed, "renewed OTA notices before their manifests expire");
        }
        Ok(renewed)
    }

    /// Withdraws the notices of devices that were notified but have not started (their
    /// downloads are refused from now on, since the campaign is no longer active).
    async fn withdraw_unstarted(&self, campaign_id: &str) -> Result<(), Error> {
        for d in self.store().campaign_devices(campaign_id, None).await? {
            if d.state == UpdateState::Notified {
                self.notifier.clear(&d.device_id);
            }
        }
        Ok(())
    }

    /// A campaign with per-wave progress.
    pub async fn campaign(&self, id: &str) -> Result<CampaignView, Error> {
        let campaign = self
            .store()
            .campaign(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "campaign",
                id: id.to_owned(),
            })?;
        let mut waves: Vec<WaveProgress> = (0..campaign.waves)
            .map(|wave| WaveProgress {
                wave,
                ..WaveProgress::default()
            })
            .collect();
        for wc in self.store().wave_counts(id).await? {
            if let Some(w) = waves.get_mut(wc.wave as usize) {
                w.devices += wc.count;
                *w.states.entry(wc.state.as_str()).or_default() += wc.count;
            }
        }
        Ok(CampaignView { campaign, waves })
    }

    /// Every campaign, newest first.
    pub async fn campaigns(&self) -> Result<Vec<Campaign>, Error> {
        Ok(self.store().list_campaigns().await?)
    }

    /// The devices of a campaign with their states.
    pub async fn campaign_devices(&self, id: &str) -> Result<Vec<CampaignDevice>, Error> {
        self.campaign(id).await?;
        Ok(self.store().campaign_devices(id, None).await?)
    }

    /// Stops starting waves; devices already notified go on.
    pub async fn pause(&self, id: &str, actor: &Actor) -> Result<CampaignView, Error> {
        let result = self
            .transition(id, &[CampaignState::Running], CampaignState::Paused, None)
            .await;
        self.audited(actor, "campaign.pause", Some(id), result)
            .await
    }

    /// Resumes a paused campaign: notifies what its current wave still lacks and re-checks
    /// the thresholds.
    pub async fn resume(&self, id: &str, actor: &Actor) -> Result<CampaignView, Error> {
        let result = async {
            let _engine = self.engine.lock().await;
            let view = self
                .transition_locked(id, &[CampaignState::Paused], CampaignState::Running, None)
                .await?;
            // Earlier waves too: a device re-enabled while the campaign was paused.
            for wave in 0..=view.campaign.current_wave {
                self.start_wave(&view.campaign, wave).await?;
            }
            self.evaluate_locked(id).await?;
            drop(_engine);
            self.campaign(id).await
        }
        .await;
        self.audited(actor, "campaign.resume", Some(id), result)
            .await
    }

    /// Stops a campaign for good: devices not yet notified are cancelled, notices of
    /// devices that have not started are withdrawn.
    pub async fn cancel(&self, id: &str, actor: &Actor) -> Result<CampaignView, Error> {
        let result = async {
            let view = self
                .transition(
                    id,
                    &[CampaignState::Running, CampaignState::Paused],
                    CampaignState::Cancelled,
                    Some("cancelled by an operator"),
                )
                .await?;
            self.cancel_pending(&view.campaign, "campaign cancelled")
                .await?;
            self.withdraw_unstarted(id).await?;
            self.campaign(id).await
        }
        .await;
        self.audited(actor, "campaign.cancel", Some(id), result)
            .await
    }

    async fn transition(
        &self,
        id: &str,
        from: &[CampaignState],
        to: CampaignState,
        reason: Option<&str>,
    ) -> Result<CampaignView, Error> {
        let _engine = self.engine.lock().await;
        self.transition_locked(id, from, to, reason).await
    }

    async fn transition_locked(
        &self,
        id: &str,
        from: &[CampaignState],
        to: CampaignState,
        reason: Option<&str>,
    ) -> Result<CampaignView, Error> {
        let view = self.campaign(id).await?;
        let c = &view.campaign;
        if !from.contains(&c.state) {
            return Err(Error::State(format!(
                "campaign {id} is {}; only a {} campaign can be made {}",
                c.state.as_str(),
                from.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                to.as_str()
            )));
        }
        let moved = self
            .store()
            .update_campaign(
                id,
                (c.state, c.current_wave),
                (to, c.current_wave),
                reason,
                OffsetDateTime::now_utc(),
            )
            .await?;
        if !moved {
            return Err(Error::State(format!(
                "campaign {id} changed meanwhile; look at it again (`moat campaign show {id}`)"
            )));
        }
        self.campaign(id).await
    }

    /// Skips a device that may no longer update in every active campaign, withdraws its
    /// notice, and re-checks those campaigns (their wave may now be complete).
    pub(crate) async fn device_gone(&self, device_id: &str, reason: &str) -> Result<(), Error> {
        let rows = self.store().active_updates_of_device(device_id).await?;
        if rows.is_empty() {
            return Ok(());
        }
        self.notifier.clear(device_id);
        let _engine = self.engine.lock().await;
        for row in rows.iter().filter(|r| !r.state.is_final()) {
            let skipped = self
                .store()
                .set_update_state(
                    &row.campaign_id,
                    device_id,
                    row.state,
                    UpdateState::Skipped,
                    Some(reason),
                    OffsetDateTime::now_utc(),
                )
                .await?;
            if skipped {
                tracing::info!(device = device_id, campaign = %row.campaign_id, reason, "device skipped");
                self.evaluate_locked(&row.campaign_id).await?;
            }
        }
        Ok(())
    }

    /// Takes a device that is active again (re-enabled) back into the running or paused
    /// campaigns that skipped it: pending again, and notified at once where its wave has
    /// started (a paused campaign notifies it on resume). Campaigns that ended stay as they
    /// are. Nothing happens unless the registry says the device is active.
    pub(crate) async fn device_back(&self, device_id: &str) -> Result<(), Error> {
        let active = self
            .hub
            .find_device(device_id)
            .await?
            .is_some_and(|d| d.state == DeviceState::Active);
        if !active {
            return Ok(());
        }
        let rows = self.store().active_updates_of_device(device_id).await?;
        let _engine = self.engine.lock().await;
        for row in rows.iter().filter(|r| r.state == UpdateState::Skipped) {
            let Some(c) = self.store().campaign(&row.campaign_id).await? else {
                continue;
            };
            let back = c.state.is_active()
                && self
                    .store()
                    .set_update_state(
                        &c.id,
                        device_id,
                        UpdateState::Skipped,
                        UpdateState::Pending,
                        None,
                        OffsetDateTime::now_utc(),
                    )
                    .await?;
            if !back {
                continue;
            }
            tracing::info!(device = device_id, campaign = %c.id, "device active again; back in the campaign");
            if c.state == CampaignState::Running && row.wave <= c.current_wave {
                self.start_wave(&c, row.wave).await?;
            }
        }
        Ok(())
    }

    /// Re-checks every device of every active campaign against the registry (after the
    /// event bus lagged): devices no longer active are skipped, skipped ones that are active
    /// again are taken back.
    pub(crate) async fn resync(&self) -> Result<(), Error> {
        for c in self.store().list_campaigns().await? {
            if !c.state.is_active() {
                continue;
            }
            for d in self.store().campaign_devices(&c.id, None).await? {
                if d.state.is_final() && d.state != UpdateState::Skipped {
                    continue;
                }
                let active = self
                    .hub
                    .find_device(&d.device_id)
                    .await?
                    .is_some_and(|dev| dev.state == DeviceState::Active);
                match (active, d.state) {
                    (true, UpdateState::Skipped) => self.device_back(&d.device_id).await?,
                    (false, UpdateState::Skipped) | (true, _) => {}
                    (false, _) => {
                        self.device_gone(&d.device_id, "device is no longer active")
                            .await?
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("group:lab").ok(),
            Some(Target::Group("lab".into()))
        );
        assert_eq!(
            Target::parse("model:s-2").ok(),
            Some(Target::Model("s-2".into()))
        );
        assert_eq!(
            Target::parse("devices:a, b,c").ok(),
            Some(Target::Devices(vec!["a".into(), "b".into(), "c".into()]))
        );
        for bad in [
            "",
            "group",
            "group:",
            "devices:",
            "devices:a/b",
            "fleet:x",
            "model:a b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn waves() {
        let p = WaveSpec::parse_list("10%,50%,100%")
            .ok()
            .unwrap_or_default();
        assert_eq!(WaveSpec::sizes(&p, 60), [6, 24, 30]);
        // Rounding up: every wave gets at least one device; empty waves are dropped.
        assert_eq!(WaveSpec::sizes(&p, 3), [1, 1, 1]);
        assert_eq!(WaveSpec::sizes(&p, 1), [1]);
        let p = WaveSpec::parse_list("10%,50%").ok().unwrap_or_default();
        assert_eq!(
            WaveSpec::sizes(&p, 10),
            [1, 4, 5],
            "leftovers form a last wave"
        );
        let c = WaveSpec::parse_list("5,20").ok().unwrap_or_default();
        assert_eq!(WaveSpec::sizes(&c, 50), [5, 20, 25]);
        assert_eq!(WaveSpec::sizes(&c, 7), [5, 2]);
        for bad in ["", "0", "50%,10%", "0%", "101%", "5,10%", "x", "10%,10%"] {
            assert!(WaveSpec::parse_list(bad).is_err(), "{bad}");
        }
    }
}
