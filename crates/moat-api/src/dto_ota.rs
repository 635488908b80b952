//! Request and response bodies of the firmware and campaign routes.

use moat_ota::{Campaign, CampaignDevice, FirmwareRecord};
use moat_ota::{CampaignView, KeyInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A firmware signing key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FirmwareKeyView {
    /// Its name.
    pub name: String,
    /// `p256` or `ed25519`.
    pub kind: String,
    /// Whether the hub holds the private key (`moat fw sign` can use it).
    pub hub_held: bool,
    /// The public key (PEM).
    pub public_key_pem: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&KeyInfo> for FirmwareKeyView {
    fn from(k: &KeyInfo) -> Self {
        FirmwareKeyView {
            name: k.key.name.clone(),
            kind: k.key.kind.as_str().into(),
            hub_held: k.key.key_ref.is_some(),
            public_key_pem: k.public_pem.clone(),
            created_at: rfc3339(k.key.created_at),
        }
    }
}

/// Register a public key (images are signed offline).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddFirmwareKeyRequest {
    /// The key's name.
    pub name: String,
    /// PEM `PUBLIC KEY` (P-256 or Ed25519), e.g. from `imgtool getpub -e pem`.
    pub public_key_pem: String,
}

/// Generate a key held by the hub's vault.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GenerateFirmwareKeyRequest {
    /// The key's name.
    pub name: String,
}

/// A published image.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FirmwareView {
    /// Catalogue id.
    pub id: String,
    /// Device model.
    pub model: String,
    /// Image version.
    pub version: String,
    /// Security counter.
    pub security_counter: u32,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file, hex.
    pub digest: String,
    /// The key it verified against.
    pub key: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&FirmwareRecord> for FirmwareView {
    fn from(f: &FirmwareRecord) -> Self {
        FirmwareView {
            id: f.id.clone(),
            model: f.model.clone(),
            version: f.version.clone(),
            security_counter: f.security_counter,
            size: f.size,
            digest: f.digest.clone(),
            key: f.key_name.clone(),
            created_at: rfc3339(f.created_at),
        }
    }
}

/// The hub's update (manifest signing) key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UpdateKeyView {
    /// PEM `PUBLIC KEY` (P-256): install it on devices to verify manifests.
    pub public_key_pem: String,
}

/// Create a campaign.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateCampaignRequest {
    /// Catalogue id of the image.
    pub firmware: String,
    /// `group:G`, `model:M` or `devices:a,b,c`.
    pub target: String,
    /// Waves: sizes (`5,20`) or cumulative percentages (`10%,50%,100%`); default one wave.
    #[serde(default)]
    pub waves: Option<String>,
    /// Percent of a wave that must confirm before the next starts (default 100).
    #[serde(default)]
    pub success_threshold: Option<u32>,
    /// Percent of notified devices that may fail before the campaign aborts (default 10).
    #[serde(default)]
    pub abort_threshold: Option<u32>,
}

/// One wave's progress.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WaveView {
    /// Wave number (1-based, as shown).
    pub wave: u32,
    /// Devices in it.
    pub devices: u64,
    /// Devices per state (pending, notified, downloading, installed, confirmed, failed,
    /// rolled_back, skipped, cancelled).
    pub states: BTreeMap<String, u64>,
}

/// A campaign.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignInfo {
    /// Campaign id.
    pub id: String,
    /// Catalogue id of the image.
    pub firmware: String,
    /// The target as given.
    pub target: String,
    /// `running`, `paused`, `succeeded`, `aborted` or `cancelled`.
    pub state: String,
    /// Number of waves.
    pub waves: u32,
    /// The wave being rolled out (1-based).
    pub current_wave: u32,
    /// Percent.
    pub success_threshold: u32,
    /// Percent.
    pub abort_threshold: u32,
    /// Why it ended, if it did.
    pub reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Per-wave progress (only in single-campaign answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<WaveView>,
}

impl From<&Campaign> for CampaignInfo {
    fn from(c: &Campaign) -> Self {
        CampaignInfo {
            id: c.id.clone(),
            firmware: c.firmware_id.clone(),
            target: c.target.clone(),
            state: c.state.as_str().into(),
            waves: c.waves,
            current_wave: c.current_wave + 1,
            success_threshold: c.success_threshold,
            abort_threshold: c.abort_threshold,
            reason: c.reason.clone(),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
            progress: Vec::new(),
        }
    }
}

impl From<&CampaignView> for CampaignInfo {
    fn from(v: &CampaignView) -> Self {
        let mut info = CampaignInfo::from(&v.campaign);
        info.progress = v
            .waves
            .iter()
            .map(|w| WaveView {
                wave: w.wave + 1,
                devices: w.devices,
                states: w
                    .states
                    .iter()
                    .map(|(k, n)| ((*k).to_owned(), *n))
                    .collect(),
            })
            .collect();
        info
    }
}

/// The model campaigns target a device by.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceModelRequest {
    /// Model name (as `moat fw upload --model`).
    pub model: String,
}

/// A device's model as campaigns see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceModelView {
    /// Device id.
    pub device_id: String,
    /// The model the device reported, else the registry's (factory allow-list or operator).
    pub model: Option<String>,
}

/// One device of a campaign.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CampaignDeviceView {
    /// Device id.
    pub device_id: String,
    /// Wave (1-based).
    pub wave: u32,
    /// Its state.
    pub state: String,
    /// Why it failed, rolled back or was skipped.
    pub reason: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<&CampaignDevice> for CampaignDeviceView {
    fn from(d: &CampaignDevice) -> Self {
        CampaignDeviceView {
            device_id: d.device_id.clone(),
            wave: d.wave + 1,
            state: d.state.as_str().into(),
            reason: d.reason.clone(),
            updated_at: rfc3339(d.updated_at),
        }
    }
}
