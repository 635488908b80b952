//! Rows of the firmware tables (migration `0005_firmware`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Generates `as_str`/`parse` for a column enum from its (variant, text) pairs.
macro_rules! column_enum {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// Column text.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),* }
            }
            /// From column text.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($ty::$variant),)* _ => None }
            }
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
        }
    };
}

/// The signature algorithm of a firmware signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareKeyKind {
    /// ECDSA P-256 with SHA-256.
    P256,
    /// Ed25519.
    Ed25519,
}
column_enum!(FirmwareKeyKind { P256 => "p256", Ed25519 => "ed25519" });

/// A key firmware images are verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareKey {
    /// The name operators use (`--key release`).
    pub name: String,
    /// Its algorithm.
    pub kind: FirmwareKeyKind,
    /// The public key, SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
    /// The vault reference of the private key when the hub holds it; None when it is kept
    /// offline (images signed with imgtool).
    pub key_ref: Option<String>,
    /// Registered.
    pub created_at: OffsetDateTime,
}

/// A published image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareRecord {
    /// Catalogue id (`fw-…`).
    pub id: String,
    /// The device model it is for.
    pub model: String,
    /// Image version (`major.minor.revision+build`).
    pub version: String,
    /// Security counter from the image's protected TLVs (0 if it has none).
    pub security_counter: u32,
    /// Size of the image file in bytes.
    pub size: u64,
    /// SHA-256 of the image file, lowercase hex: its blob name and download path.
    pub digest: String,
    /// The registered key its signature verified against.
    pub key_name: String,
    /// Published.
    pub created_at: OffsetDateTime,
}

/// Where a campaign stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Notifying its current wave and following reports.
    Running,
    /// Stopped by an operator: no new wave starts; devices already notified go on.
    Paused,
    /// Every wave reached the success threshold.
    Succeeded,
    /// Failures reached the abort threshold: no further wave is notified.
    Aborted,
    /// Stopped for good by an operator.
    Cancelled,
}
column_enum!(CampaignState {
    Running => "running",
    Paused => "paused",
    Succeeded => "succeeded",
    Aborted => "aborted",
    Cancelled => "cancelled",
});

impl CampaignState {
    /// Running or paused: devices may still download and report.
    pub fn is_active(self) -> bool {
        matches!(self, CampaignState::Running | CampaignState::Paused)
    }
}

/// A rollout of one image to a set of devices, in waves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Campaign {
    /// Campaign id (`cmp-…`).
    pub id: String,
    /// The image.
    pub firmware_id: String,
    /// The target as the operator gave it (`group:G`, `model:M`, `devices:a,b`).
    pub target: String,
    /// Where it stands.
    pub state: CampaignState,
    /// Number of waves.
    pub waves: u32,
    /// The wave being rolled out (0-based).
    pub current_wave: u32,
    /// Percentage of a wave's devices that must confirm before the next wave starts.
    pub success_threshold: u32,
    /// Percentage of notified devices that may fail (or roll back) before the campaign aborts.
    pub abort_threshold: u32,
    /// Why it ended (abort, cancel), if it did.
    pub reason: Option<String>,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last change of state or wave.
    pub updated_at: OffsetDateTime,
}

/// Where one device stands in a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// In a wave not started yet.
    Pending,
    /// The signed manifest was published to it.
    Notified,
    /// It accepted the manifest and is downloading.
    Downloading,
    /// It verified and wrote the image and is booting it.
    Installed,
    /// It booted the new image and the image confirmed itself (counts toward success).
    Confirmed,
    /// It refused the update or could not install it (the reason says why).
    Failed,
    /// The new image did not confirm and the device went back to its previous image.
    RolledBack,
    /// Revoked, disabled or deleted: it gets nothing.
    Skipped,
    /// The campaign ended before this device was notified.
    Cancelled,
}
column_enum!(UpdateState {
    Pending => "pending",
    Notified => "notified",
    Downloading => "downloading",
    Installed => "installed",
    Confirmed => "confirmed",
    Failed => "failed",
    RolledBack => "rolled_back",
    Skipped => "skipped",
    Cancelled => "cancelled",
});

impl UpdateState {
    /// Nothing changes a device's state after these.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            UpdateState::Confirmed
                | UpdateState::Failed
                | UpdateState::RolledBack
                | UpdateState::Skipped
                | UpdateState::Cancelled
        )
    }

    /// Counts against the abort threshold.
    pub fn is_failure(self) -> bool {
        matches!(self, UpdateState::Failed | UpdateState::RolledBack)
    }

    /// Progress order: a report may only move a device forward.
    pub fn rank(self) -> u8 {
        match self {
            UpdateState::Pending => 0,
            UpdateState::Notified => 1,
            UpdateState::Downloading => 2,
            UpdateState::Installed => 3,
            _ => 4,
        }
    }
}

/// One device of a campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignDevice {
    /// The campaign.
    pub campaign_id: String,
    /// The device.
    pub device_id: String,
    /// Its wave (0-based).
    pub wave: u32,
    /// Where it stands.
    pub state: UpdateState,
    /// The device's (or the hub's) reason for a failure, rollback or skip.
    pub reason: Option<String>,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

/// How many devices of a wave are in a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaveCount {
    /// The wave.
    pub wave: u32,
    /// The state.
    pub state: UpdateState,
    /// How many devices.
    pub count: u64,
}

/// What a device last reported it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// The device.
    pub device_id: String,
    /// Its model (what `--target model:M` selects).
    pub model: String,
    /// The running image's version.
    pub version: String,
    /// The running image's security counter.
    pub security_counter: u32,
    /// When it said so.
    pub updated_at: OffsetDateTime,
}
