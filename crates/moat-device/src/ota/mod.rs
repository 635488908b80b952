//! The device's OTA agent: from a signed manifest to a confirmed (or rolled back) image.
//!
//! ```text
//!  manifest ─▶ COSE signature (update key) ─▶ expiry ─▶ model ─▶ counter ≥ running
//!     ─▶ report downloading ─▶ Fetcher (resumes with Range from what it has) ─▶ size, SHA-256
//!     ─▶ moat_image::verify (firmware keys, running counter) ─▶ matches the manifest
//!     ─▶ begin_update(inactive) ─▶ write slot ─▶ request_test ─▶ report installed
//!     ─▶ reboot: Bootloader::boot (verifies the chain) ─▶ the image confirms itself ─▶ confirmed
//!                                                     └─ it does not: reset ─▶ reverted ─▶ rolled_back
//! ```
//!
//! Every refusal is reported with its reason (`lower security counter`, `expired manifest`,
//! `other model`, `digest mismatch`, the verifier's reason) before any byte is written to
//! flash. Flash is simulated ([`SimFlash`], two slots in RAM behind
//! [`moat_image::boot::BootStorage`]), and so is the firmware's health: an image whose
//! payload contains [`NO_CONFIRM_MARKER`] never confirms itself, standing for an image that
//! crashes before its health check.

mod fetch;
mod flash;
mod outbox;

pub use fetch::{FetchError, Fetcher, HttpsFetcher};
pub use flash::{NO_CONFIRM_MARKER, SimFlash};
pub use outbox::ReportOutbox;

use moat_image::TrustedKey;
use moat_image::boot::{
    BootMode, BootOutcome, Bootloader, Confirmation, begin_update, request_test,
};
use moat_ota_proto::{Manifest, Report, ReportState, Running, UpdateKey, open_manifest};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::Duration;

/// What the agent trusts and is.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This device's model.
    pub model: String,
    /// The hub's update key (manifests).
    pub update_key: UpdateKey,
    /// The boot ROM's keys (images).
    pub firmware_keys: Vec<TrustedKey>,
    /// Download attempts before giving up (each resumes where the last stopped).
    pub download_attempts: u32,
    /// Pause between attempts.
    pub retry_pause: Duration,
}

/// How an update ended (also sent as the last report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Running the new image, confirmed.
    Confirmed,
    /// Refused or failed before anything changed on the device.
    Failed(String),
    /// The new image did not confirm; back on the previous one.
    RolledBack(String),
    /// Nothing to do (already handled, empty notice, not verifiable).
    Ignored(String),
}

/// Where the agent's reports go (the device's MQTT session, or a list in tests).
#[async_trait::async_trait]
pub trait Reports: Send {
    /// Sends one report; delivery problems are the sink's to record.
    async fn report(&mut self, report: Report);
}

#[async_trait::async_trait]
impl Reports for Vec<Report> {
    async fn report(&mut self, report: Report) {
        self.push(report);
    }
}

/// The OTA agent of one device.
#[derive(Debug)]
pub struct Agent<F> {
    cfg: AgentConfig,
    fetcher: F,
    flash: SimFlash,
    /// Campaigns this device has finished with (a retained notice comes back on reconnect).
    done: HashSet<String>,
    /// Bytes fetched over the last update, counting resumed ones once.
    pub last_download_bytes: u64,
    /// Fetch attempts of the last update.
    pub last_download_attempts: u32,
}

/// Seconds since the Unix epoch.
fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl<F: Fetcher> Agent<F> {
    /// An agent over `flash` (which boots its factory image), downloading with `fetcher`.
    pub fn new(cfg: AgentConfig, fetcher: F, flash: SimFlash) -> Self {
        Agent {
            cfg,
            fetcher,
            flash,
            done: HashSet::new(),
            last_download_bytes: 0,
            last_download_attempts: 0,
        }
    }

    /// The flash (to inspect slots and counters).
    pub fn flash(&self) -> &SimFlash {
        &self.flash
    }

    /// What runs now: model, version and the anti-rollback counter of the booted image.
    pub fn running(&self) -> Running {
        Running {
            model: self.cfg.model.clone(),
            version: self.flash.running_version().to_string(),
            security_counter: self.flash.min_counter(),
        }
    }

    /// The report that announces the device (on every connect).
    pub fn idle_report(&self) -> Report {
        Report {
            campaign: None,
            state: ReportState::Idle,
            reason: None,
            running: Some(self.running()),
        }
    }

    fn report(&self, campaign: &str, state: ReportState, reason: Option<String>) -> Report {
        Report {
            campaign: Some(campaign.to_owned()),
            state,
            reason,
            running: Some(self.running()),
        }
    }

    /// Handles one notice (the payload of `devices/{id}/ota/notify`), sending each report
    /// to `sink` as it happens. Returns how it ended.
    pub async fn handle_notice(&mut self, payload: &[u8], sink: &mut dyn Reports) -> Outcome {
        if payload.is_empty() {
            return Outcome::Ignored("notice withdrawn".into());
        }
        let manifest = match open_manifest(payload, &self.cfg.update_key) {
            Ok(m) => m,
            // Nothing in an unverified notice can be trusted, not even its campaign id.
            Err(e) => return Outcome::Ignored(format!("manifest refused: {e}")),
        };
        if self.done.contains(&manifest.campaign) {
            return Outcome::Ignored(format!("campaign {} already handled", manifest.campaign));
        }
        let campaign = manifest.campaign.clone();
        let outcome = self.update(&manifest, sink).await;
        let (state, reason) = match &outcome {
            Outcome::Confirmed => (ReportState::Confirmed, None),
            Outcome::Failed(r) => (ReportState::Failed, Some(r.clone())),
            Outcome::RolledBack(r) => (ReportState::RolledBack, Some(r.clone())),
            Outcome::Ignored(_) => return outcome,
        };
        self.done.insert(campaign.clone());
        sink.report(self.report(&campaign, state, reason)).await;
        outcome
    }

    /// Checks the manifest, downloads, verifies, installs and boots.
    async fn update(&mut self, m: &Manifest, sink: &mut dyn Reports) -> Outcome {
        let now = now_unix();
        if m.expires_at < now {
            return Outcome::Failed(format!(
                "expired manifest: valid until {} (Unix time), now {now}",
                m.expires_at
            ));
        }
        if !m.models.contains(&self.cfg.model) {
            return Outcome::Failed(format!(
                "other model: the image is for {:?}, this device is {:?}",
                m.models, self.cfg.model
            ));
        }
        let floor = self.flash.min_counter();
        if m.security_counter < floor {
            return Outcome::Failed(format!(
                "lower security counter: the image has {}, this device requires at least {floor}",
                m.security_counter
            ));
        }
        let Ok(size) = usize::try_from(m.size) else {
            return Outcome::Failed("image size does not fit this device".into());
        };
        if size > self.flash.slot_len() {
            return Outcome::Failed(format!(
                "image of {size} bytes does not fit the {}-byte slot",
                self.flash.slot_len()
            ));
        }
        sink.report(self.report(&m.campaign, ReportState::Downloading, None))
            .await;
        let image = match self.download(m).await {
            Ok(i) => i,
            Err(e) => return Outcome::Failed(e),
        };
        let digest = hex::encode(Sha256::digest(&image));
        if digest != m.digest {
            return Outcome::Failed(format!(
                "digest mismatch: the manifest says {}, the download is {digest}",
                m.digest
            ));
        }
        let verified = match moat_image::verify(&image, &self.cfg.firmware_keys, floor) {
            Ok(v) => v,
            Err(e) => return Outcome::Failed(format!("image refused: {e}")),
        };
        if verified.security_counter.unwrap_or(0) != m.security_counter
            || verified.version().to_string() != m.version
        {
            return Outcome::Failed(format!(
                "image does not match its manifest: image {} counter {}, manifest {} counter {}",
                verified.version(),
                verified.security_counter.unwrap_or(0),
                m.version,
                m.security_counter
            ));
        }
        let from = self.flash.running_version();
        let slot = self.flash.inactive();
        if let Err(e) = begin_update(&mut self.flash, slot) {
            return Outcome::Failed(format!("cannot start the update: {e}"));
        }
        self.flash.write_slot(slot, &image);
        if let Err(e) = request_test(&mut self.flash, slot) {
            return Outcome::Failed(format!("cannot schedule the new image: {e}"));
        }
        sink.report(self.report(&m.campaign, ReportState::Installed, None))
            .await;
        self.reboot_into_update(&from)
    }

    /// Simulated reset: the bootloader tries the new image once; a healthy image confirms
    /// itself, a broken one never does and the next reset goes back.
    fn reboot_into_update(&mut self, from: &moat_image::ImageVersion) -> Outcome {
        let keys = self.cfg.firmware_keys.clone();
        let boot = Bootloader::new(&keys);
        match boot.boot(&mut self.flash) {
            Ok(BootOutcome::Booted(b)) => match b.mode {
                BootMode::Trial => {
                    self.flash.booted(b.slot, &b.chain);
                    if self.flash.healthy(b.slot) {
                        match moat_image::boot::confirm(&mut self.flash) {
                            Ok(Confirmation::Permanent { .. }) => Outcome::Confirmed,
                            Ok(Confirmation::AlreadyPermanent) => Outcome::Confirmed,
                            Err(e) => Outcome::RolledBack(format!("confirm failed: {e:?}")),
                        }
                    } else {
                        // The watchdog resets the device before the image confirms.
                        match boot.boot(&mut self.flash) {
                            Ok(BootOutcome::Booted(b)) => {
                                self.flash.booted(b.slot, &b.chain);
                                Outcome::RolledBack(format!(
                                    "the new image did not confirm itself; back on version {from}"
                                ))
                            }
                            Ok(BootOutcome::SafeMode { .. }) | Err(_) => Outcome::RolledBack(
                                "the new image did not confirm itself; device in safe mode".into(),
                            ),
                        }
                    }
                }
                BootMode::TrialRefused(e) => {
                    self.flash.booted(b.slot, &b.chain);
                    Outcome::RolledBack(format!("the bootloader refused the new image: {e}"))
                }
                BootMode::Normal | BootMode::Reverted => {
                    self.flash.booted(b.slot, &b.chain);
                    Outcome::RolledBack(format!(
                        "the new image was not booted; back on version {from}"
                    ))
                }
            },
            Ok(BootOutcome::SafeMode { active, .. }) => {
                Outcome::RolledBack(format!("nothing bootable, safe mode: {active}"))
            }
            Err(e) => Outcome::RolledBack(format!("boot state storage failed: {e:?}")),
        }
    }

    /// Downloads the image, resuming from what arrived after each cut.
    async fn download(&mut self, m: &Manifest) -> Result<Vec<u8>, String> {
        let mut buf = Vec::with_capacity(usize::try_from(m.size).unwrap_or(0));
        let mut last = String::new();
        self.last_download_attempts = 0;
        for attempt in 0..self.cfg.download_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.cfg.retry_pause).await;
            }
            self.last_download_attempts += 1;
            match self.fetcher.fetch(&m.url, &mut buf, m.size).await {
                Ok(()) if buf.len() as u64 == m.size => {
                    self.last_download_bytes = m.size;
                    return Ok(buf);
                }
                Ok(()) => {
                    last = format!("download ended at {} of {} bytes", buf.len(), m.size);
                }
                Err(FetchError::Refused(status)) => {
                    return Err(format!("download refused by the hub: HTTP {status}"));
                }
                Err(e) => last = e.to_string(),
            }
            tracing::debug!(attempt, have = buf.len(), error = %last, "download interrupted; resuming");
        }
        Err(format!(
            "download failed after {} attempts: {last}",
            self.cfg.download_attempts
        ))
    }
}

#[cfg(test)]
mod tests;
