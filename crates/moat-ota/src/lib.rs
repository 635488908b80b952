//! Firmware updates, hub side: signing keys, the image catalogue, signed manifests and
//! rollout campaigns. No HTTP and no MQTT here: `moat-api` serves the admin routes and the
//! image downloads, and the binary connects [`Notifier`] and [`Ota::handle_report`] to the
//! MQTT broker.
//!
//! ```text
//!  moat fw upload ─▶ Ota::upload ─▶ moat_image::verify (registered keys) ─▶ counter ≥ published
//!                                   ─▶ firmware/<sha256> (tmp + rename) ─▶ registry row
//!  moat campaign create ─▶ targets (group / model / ids; active devices only) ─▶ waves
//!        ─▶ wave 0: manifest (COSE_Sign1, update key) ─▶ Notifier ─▶ devices/{id}/ota/notify
//!  device reports ─▶ Ota::handle_report ─▶ device state (forward only) ─▶ evaluate:
//!        failures ≥ abort threshold ─▶ aborted · confirmed ≥ success threshold ─▶ next wave
//!  moat-core events (revoked, disabled, deleted) ─▶ the device is skipped, its notice cleared
//! ```
//!
//! State lives in the registry ([`moat_store::FirmwareStore`]); every move of a campaign or
//! a device is compare-and-set there, so reports racing each other (or two hub nodes) cannot
//! advance a wave twice or move a device backwards. One lock per node serialises the
//! evaluation of thresholds on that node.

mod campaigns;
mod catalogue;
mod error;
mod keys;

pub use campaigns::{CampaignView, CreateCampaign, Target, WaveProgress, WaveSpec};
pub use catalogue::{Blob, Downloads, SignRequest, digest_hex, is_digest, parse_version};
pub use error::Error;
pub use keys::{KeyInfo, spki_pem};
/// The registry's firmware records, as the OTA service returns them.
pub use moat_store::{Campaign, CampaignDevice, FirmwareRecord};

use keys::VaultSigner;
use moat_core::{Actor, BusError, Event, Hub};
use moat_ota_proto::{Report, device_of_report_topic};
use moat_store::FirmwareStore;
use rand::RngCore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Setting key of the update key's vault reference.
const UPDATE_KEY_REF: &str = "ota.update_key_ref";

/// Configuration of the OTA service.
#[derive(Clone, Debug)]
pub struct OtaConfig {
    /// The data dir; blobs go under `firmware/`.
    pub data_dir: PathBuf,
    /// Base URL devices download from (`https://hub.example:8444`); manifests carry
    /// `{base}/fw/{digest}`.
    pub download_url: String,
    /// How long a manifest stays valid after it is signed.
    pub manifest_ttl: Duration,
    /// Largest image accepted.
    pub max_image_size: u64,
}

/// Delivers notices to devices: the binary implements it over the MQTT broker (a retained
/// message on `devices/{id}/ota/notify`, so a device that is offline gets it on connect).
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// Publishes the signed manifest to one device.
    fn notify(&self, device_id: &str, manifest: &[u8]);
    /// Withdraws the notice (the device finished, or the update was cancelled for it).
    fn clear(&self, device_id: &str);
}

/// The OTA service. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Ota {
    hub: Arc<Hub>,
    /// The firmware part of the registry (the rest goes through `hub`'s services).
    registry: Arc<dyn FirmwareStore>,
    cfg: OtaConfig,
    downloads: Downloads,
    update_key: VaultSigner,
    notifier: Arc<dyn Notifier>,
    /// Serialises threshold evaluation and wave starts on this node.
    engine: tokio::sync::Mutex<()>,
}

impl Ota {
    /// Opens the service: loads the update key from the vault, generating it on first use.
    pub async fn open(
        hub: Arc<Hub>,
        cfg: OtaConfig,
        notifier: Arc<dyn Notifier>,
    ) -> Result<Ota, Error> {
        let key = hub.named_signing_key(UPDATE_KEY_REF, "moat-update").await?;
        let registry = hub.firmware_registry();
        let downloads = Downloads::new(registry.clone(), &cfg.data_dir);
        std::fs::create_dir_all(downloads.dir()).map_err(error::Error::io(format!(
            "creating {}",
            downloads.dir().display()
        )))?;
        // Before any upload can run in this process: what an upload interrupted by a crash
        // left behind (its blob is written before its row) goes now.
        let known: std::collections::HashSet<String> = registry
            .list_firmware()
            .await?
            .into_iter()
            .map(|f| f.digest)
            .collect();
        downloads.sweep(&known)?;
        Ok(Ota {
            hub,
            registry,
            cfg,
            downloads,
            update_key: VaultSigner::new(key),
            notifier,
            engine: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn store(&self) -> &Arc<dyn FirmwareStore> {
        &self.registry
    }

    /// Blob access and download authorisation.
    pub fn downloads(&self) -> &Downloads {
        &self.downloads
    }

    /// The update key's public half (SubjectPublicKeyInfo DER): devices get it at
    /// provisioning time and verify every manifest with it.
    pub fn update_key_der(&self) -> &[u8] {
        self.update_key.spki()
    }

    /// The update key as PEM.
    pub fn update_key_pem(&self) -> String {
        spki_pem(self.update_key.spki())
    }

    /// Records the outcome of an admin action in the hub's audit log.
    async fn audited<T>(
        &self,
        actor: &Actor,
        action: &str,
        target: Option<&str>,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        let (outcome, detail) = match &result {
            Ok(_) => ("ok", None),
            Err(e) if e.is_client_error() => ("refused", Some(e.to_string())),
            Err(e) => ("error", Some(e.kind().to_string())),
        };
        self.hub
            .record_admin_action(actor, action, target, outcome, detail)
            .await;
        result
    }

    /// Handles one message from the report topic filter: checks that the publisher is the
    /// device the topic names (an application allowed to publish there cannot report for a
    /// device), parses it and applies it. Bad reports are logged and dropped.
    pub async fn handle_report_message(
        &self,
        topic: &str,
        publisher: Option<&str>,
        payload: &[u8],
    ) {
        let Some(device_id) = device_of_report_topic(topic) else {
            return;
        };
        if publisher != Some(device_id) {
            tracing::warn!(
                topic,
                ?publisher,
                "OTA report not published by its device; ignored"
            );
            return;
        }
        let Some(report) = Report::parse(payload) else {
            tracing::warn!(device = device_id, "malformed OTA report; ignored");
            return;
        };
        if let Err(e) = self.handle_report(device_id, &report).await {
            tracing::error!(device = device_id, error = ?e, "cannot apply an OTA report");
        }
    }

    /// Follows the hub's events until the bus closes: a revoked, disabled or deleted device
    /// is skipped in every active campaign and its notice withdrawn; a re-enabled one is
    /// taken back into the active campaigns that skipped it. On lag, every active
    /// campaign's devices are checked against the registry.
    pub async fn follow_events(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut rx = self.hub.subscribe();
        tokio::pin!(shutdown);
        loop {
            let ev = tokio::select! {
                _ = &mut shutdown => return,
                ev = rx.recv() => ev.map(|e| e.event),
            };
            let result = match ev {
                Ok(Event::DeviceRevoked { device_id, .. }) => {
                    self.device_gone(&device_id, "device revoked").await
                }
                Ok(Event::DeviceDisabled { device_id }) => {
                    self.device_gone(&device_id, "device disabled").await
                }
                Ok(Event::DeviceDeleted { device_id }) => {
                    self.device_gone(&device_id, "device deleted").await
                }
                Ok(Event::DeviceEnabled { device_id }) => self.device_back(&device_id).await,
                Ok(_) => Ok(()),
                Err(BusError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event bus lagged; rechecking campaign devices");
                    self.resync().await
                }
                Err(BusError::Closed) => return,
            };
            if let Err(e) = result {
                tracing::error!(error = ?e, "OTA could not apply a device event");
            }
        }
    }
}

impl Ota {
    /// Sets the model the registry holds for a device, so `model:M` campaigns target it
    /// before it has reported (what it reports wins afterwards). Audited.
    pub async fn set_device_model(
        &self,
        device_id: &str,
        model: &str,
        actor: &Actor,
    ) -> Result<(), Error> {
        let result = async {
            valid_name("model", model)?;
            if !self.store().set_device_model(device_id, model).await? {
                return Err(Error::NotFound {
                    kind: "device",
                    id: device_id.to_owned(),
                });
            }
            tracing::info!(device = device_id, model, "device model set");
            Ok(())
        }
        .await;
        self.audited(actor, "device.set_model", Some(device_id), result)
            .await
    }

    /// A device's model: the one it reported, else the registry's.
    pub async fn device_model(&self, device_id: &str) -> Result<Option<String>, Error> {
        Ok(self.store().model_of_device(device_id).await?)
    }
}

/// A random id with a prefix: `fw-` + 12 hex digits.
pub(crate) fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 6];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// Names of keys and models: 1 to 64 of `A-Z a-z 0-9 . _ : -`, not starting with `.` or `-`
/// (the device-id rule; they appear in paths, topics and file names).
pub(crate) fn valid_name(what: &str, s: &str) -> Result<(), Error> {
    moat_core::validate_device_id(s).map_err(|_| {
        Error::Invalid(format!(
            "{what} {s:?} must be 1 to 64 letters, digits, '.', '_', ':' or '-', not starting with '.' or '-'"
        ))
    })
}
