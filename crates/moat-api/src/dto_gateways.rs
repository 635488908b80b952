//! Request and response bodies of the gateway routes (`/api/v1/gateways`).

use crate::dto::rfc3339;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Create a gateway. Give `csr` to issue on the gateway's own key, `cert` to bind a
/// certificate from a registered CA, or neither to have the hub generate a key (returned once,
/// never stored). Gateways connect with mutual TLS only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGatewayRequest {
    /// Gateway name: its identity, MQTT client id, and its topic tree `gateways/{name}/#`.
    pub name: String,
    /// PKCS#10 request, PEM.
    #[serde(default)]
    pub csr: Option<String>,
    /// Certificate (PEM, optionally with its chain) from a registered CA.
    #[serde(default)]
    pub cert: Option<String>,
}

/// Which devices a gateway may relay for (allow) or no longer (disallow): exactly one of
/// `device`, `group` (an MQTT group: `{device.group}`) or `enrollment_group` (the devices it
/// provisioned).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayAllowRequest {
    /// A device id.
    #[serde(default)]
    pub device: Option<String>,
    /// An MQTT group.
    #[serde(default)]
    pub group: Option<String>,
    /// An enrollment group.
    #[serde(default)]
    pub enrollment_group: Option<String>,
}

/// One allowance of a gateway.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AllowanceView {
    /// `device`, `group` or `enrollment_group`.
    pub kind: String,
    /// The device id or the group's name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A gateway.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GatewayView {
    /// Its name (identity).
    pub name: String,
    /// `active`, `disabled` or `revoked`.
    pub state: String,
    /// The CA whose certificates identify it.
    pub ca: String,
    /// RFC 3339.
    pub created_at: String,
    /// Where it publishes and subscribes: `gateways/{name}/#`.
    pub topics: String,
    /// What it may relay for.
    pub allowances: Vec<AllowanceView>,
}

impl From<&moat_core::Gateway> for GatewayView {
    fn from(g: &moat_core::Gateway) -> Self {
        GatewayView {
            name: g.device.id.clone(),
            state: g.device.state.as_str().into(),
            ca: g.device.ca_name.clone(),
            created_at: rfc3339(g.device.created_at),
            topics: format!("{}/#", moat_core::gateway_root(&g.device.id)),
            allowances: g
                .allowances
                .iter()
                .map(|a| AllowanceView {
                    kind: a.kind.as_str().into(),
                    name: a.name.clone(),
                    created_at: rfc3339(a.created_at),
                })
                .collect(),
        }
    }
}
