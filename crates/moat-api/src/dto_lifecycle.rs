//! Request and response bodies of the device lifecycle routes (claim, transfer, suspend,
//! resume, decommission, rotate, live certificates).

use crate::dto::{CertView, DeviceView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Claim an unowned device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The owning organisation (1–128 printable characters).
    pub owner: String,
}

/// Move a device to another owner.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The new owner.
    pub to: String,
    /// Only if this is the current owner (409 otherwise).
    #[serde(default)]
    pub from: Option<String>,
}

/// A reason for a suspension, resumption or decommissioning (recorded in the audit log; a
/// suspension's and a decommissioning's also on the device).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// Free text, at most 512 characters.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What decommissioning did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecommissionResponse {
    /// The device, now decommissioned.
    pub device: DeviceView,
    /// Serials revoked now (reason cessation_of_operation).
    pub revoked_serials: Vec<String>,
}

/// A rotated certificate. `private_key_pem` is shown this once; the hub does not keep it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotateResponse {
    /// The device.
    pub device: DeviceView,
    /// The new certificate.
    pub certificate: CertView,
    /// New certificate then issuing CA, PEM.
    pub certificate_pem: String,
    /// The new hub-generated key (PKCS#8 PEM).
    pub private_key_pem: String,
    /// Serials of the certificates it supersedes.
    pub superseded: Vec<String>,
    /// RFC 3339: when they retire (revoked, reason superseded); absent if none.
    pub retire_at: Option<String>,
}
