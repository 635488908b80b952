//! Field provisioning between a Moat hub and its devices: the messages of the one round trip,
//! shared by the hub (moat-api answers) and the device SDK (moat-device asks) so that they
//! cannot drift apart. Serde types only: no I/O, no checks.
//!
//! ```text
//!  device ── POST /provisioning/v1/register (mutual TLS: factory certificate) ──▶ hub
//!            ProvisionRequest {"csr": "<PEM CSR>"}
//!  device ◀── 200 ProvisionResponse {"device_id", "certificate", "chain", "mqtt": {…},
//!            "enrollment_group", "policy", "provisions", "moved_from"} ─────────── hub
//!            401/403/409: application/problem+json
//! ```
//!
//! Not here: who may provision and what it gets (`moat-core`), the HTTP handling (`moat-api`),
//! the client and the checks of the answer (`moat-device`).

use serde::{Deserialize, Serialize};

/// The request path under the hub's HTTPS base.
pub const REGISTER_PATH: &str = "/provisioning/v1/register";

/// A provisioning request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    /// PKCS#10 CSR, PEM: the key of the operational certificate (its subject is not used: the
    /// certificate names the device id).
    pub csr: String,
}

/// Where a provisioned device connects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MqttAssignment {
    /// `mqtts://host:port`.
    pub url: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// PEM CA certificates to verify the hub's server certificate with.
    pub ca_bundle: String,
}

/// A provisioned device's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionResponse {
    /// The device id (the certificate's CN and the MQTT client id).
    pub device_id: String,
    /// The operational certificate, PEM.
    pub certificate: String,
    /// The issuing CA certificate, PEM (send it with the certificate).
    pub chain: String,
    /// The hub assignment.
    pub mqtt: MqttAssignment,
    /// The enrollment group that decided it.
    pub enrollment_group: Option<String>,
    /// `deny_insecure` or `allow_insecure`.
    pub policy: String,
    /// How many times this device has been provisioned (1 the first time).
    pub provisions: u32,
    /// The hub it was assigned to before, when this call moved it.
    pub moved_from: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_refuses_unknown_fields_and_answer_round_trips() {
        let req: ProvisionRequest = serde_json::from_str(r#"{"csr": "PEM"}"#).expect("request");
        assert_eq!(req.csr, "PEM");
        assert!(serde_json::from_str::<ProvisionRequest>(r#"{"csr": "PEM", "x": 1}"#).is_err());

        let answer = ProvisionResponse {
            device_id: "SN-1".into(),
            certificate: "LEAF".into(),
            chain: "CA".into(),
            mqtt: MqttAssignment {
                url: "mqtts://hub:8883".into(),
                host: "hub".into(),
                port: 8883,
                ca_bundle: "BUNDLE".into(),
            },
            enrollment_group: None,
            policy: "deny_insecure".into(),
            provisions: 1,
            moved_from: None,
        };
        let json = serde_json::to_string(&answer).expect("encode");
        assert_eq!(
            serde_json::from_str::<ProvisionResponse>(&json).expect("decode"),
            answer
        );
        // Every field but the two options is required.
        let partial = json.replace(r#","provisions":1"#, "");
        assert!(serde_json::from_str::<ProvisionResponse>(&partial).is_err());
    }
}
