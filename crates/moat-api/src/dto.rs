//! Request and response bodies of the admin API (JSON), with their OpenAPI schemas.

use moat_core::{AllowlistEntry, AuditEntry, CaRecord, CertRecord, Device, Station};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    /// Device id (certificate identity and MQTT client id).
    pub id: String,
    /// `active`, `disabled` (suspended) or `revoked` (decommissioned).
    pub state: String,
    /// `deny_insecure` (mutual TLS only) or `allow_insecure`.
    pub policy: String,
    /// The CA whose certificates identify it.
    pub ca: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Manufacturer serial, for devices enrolled from the allow-list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// MAC address from the allow-list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Model from the allow-list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Lifecycle: `enrolled`, `provisioned`, `active` (has connected), `suspended` (state
    /// disabled) or `decommissioned` (state revoked).
    #[serde(default)]
    pub stage: String,
    /// The organisation that owns it, once claimed.
    #[serde(default)]
    pub owner: Option<String>,
    /// Why it is suspended or decommissioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        DeviceView {
            id: d.id.clone(),
            state: d.state.as_str().into(),
            policy: d.policy.as_str().into(),
            ca: d.ca_name.clone(),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            serial: d.factory.as_ref().map(|f| f.serial.clone()),
            mac: d.factory.as_ref().and_then(|f| f.mac.clone()),
            model: d.factory.as_ref().and_then(|f| f.model.clone()),
            stage: d.lifecycle().as_str().into(),
            owner: d.owner.clone(),
            status_reason: d.status_reason.clone(),
        }
    }
}

/// A certificate in the registry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertView {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Issuing CA.
    pub ca: String,
    /// Device it identifies.
    pub device_id: Option<String>,
    /// Subject (RFC 4514).
    pub subject: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// `hub_key`, `csr`, `bound` or `hub`.
    pub source: String,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// RFC 5280 reason name, when revoked.
    pub revocation_reason: Option<String>,
    /// RFC 3339: when a newer certificate superseded it, the end of its overlap (then it is
    /// revoked, reason superseded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<String>,
    /// The certificate, PEM: in the answer about one certificate (`GET
    /// /api/v1/certificates/{serial}`), e.g. for an application that verifies a relayed
    /// device's signed messages itself (`fingerprint` is their x5t).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
}

impl From<&CertRecord> for CertView {
    fn from(c: &CertRecord) -> Self {
        CertView {
            serial: c.serial.clone(),
            ca: c.ca_name.clone(),
            device_id: c.device_id.clone(),
            subject: c.subject.clone(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            fingerprint: c.fingerprint.clone(),
            source: c.source.as_str().into(),
            revoked_at: c.revoked_at.map(rfc3339),
            revocation_reason: c.revocation_reason.clone(),
            retire_at: c.retire_at.map(rfc3339),
            pem: None,
        }
    }
}

/// Create a device. Give `csr` to issue on the device's own key, `cert` to bind a
/// certificate from a registered CA, or neither to have the hub generate a key (returned
/// once, never stored).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeviceRequest {
    /// Device id: 1–64 of `A-Z a-z 0-9 . _ : -`.
    pub id: String,
    /// PKCS#10 CSR, PEM.
    #[serde(default)]
    pub csr: Option<String>,
    /// Certificate (and chain), PEM, issued by a registered CA.
    #[serde(default)]
    pub cert: Option<String>,
    /// Allow server-TLS and plain connections with a device token (returned once).
    #[serde(default)]
    pub allow_insecure: bool,
}

/// The created device. `private_key_pem` and `token` are shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateDeviceResponse {
    /// The device.
    pub device: DeviceView,
    /// Its certificate.
    pub certificate: CertView,
    /// Certificate then issuing CA, PEM.
    pub certificate_pem: String,
    /// Hub-generated key (PKCS#8 PEM), only when no CSR or certificate was given.
    pub private_key_pem: Option<String>,
    /// Device token, only with `allow_insecure`.
    pub token: Option<String>,
}

impl From<moat_core::CreatedDevice> for CreateDeviceResponse {
    fn from(c: moat_core::CreatedDevice) -> Self {
        CreateDeviceResponse {
            device: DeviceView::from(&c.device),
            certificate: (&c.certificate).into(),
            certificate_pem: c.chain_pem,
            private_key_pem: c.private_key_pem.map(|k| k.expose().to_string()),
            token: c.token.map(|t| t.expose().to_string()),
        }
    }
}

/// Revoke with a reason.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// RFC 5280 reason: `unspecified` (default), `key_compromise`, `ca_compromise`,
    /// `affiliation_changed`, `superseded`, `cessation_of_operation`, `privilege_withdrawn`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a revocation did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokeDeviceResponse {
    /// The device.
    pub device_id: String,
    /// Serials revoked now.
    pub revoked_serials: Vec<String>,
}

/// A certificate authority.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaView {
    /// Registry name.
    pub name: String,
    /// `root`, `device_issuing` or `registered`.
    pub kind: String,
    /// `cn`, `san-dns` or `san-uri`.
    pub identity_rule: String,
    /// Devices are created on first sight.
    pub auto_register: bool,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    /// Subject.
    pub subject: String,
    /// RFC 3339.
    pub not_after: String,
    /// RFC 3339.
    pub created_at: String,
    /// Certificate, PEM.
    pub certificate_pem: String,
}

impl From<&CaRecord> for CaView {
    fn from(c: &CaRecord) -> Self {
        let info = moat_pki::cert_info(&c.cert_der).ok();
        CaView {
            name: c.name.clone(),
            kind: c.kind.as_str().into(),
            identity_rule: c.identity_rule.clone(),
            auto_register: c.auto_register,
            fingerprint: c.fingerprint.clone(),
            subject: info.as_ref().map(|i| i.subject.clone()).unwrap_or_default(),
            not_after: info.map(|i| rfc3339(i.not_after)).unwrap_or_default(),
            created_at: rfc3339(c.created_at),
            certificate_pem: moat_pki::pem_of_cert(&c.cert_der),
        }
    }
}

/// A one-time CA registration code.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegistrationCodeResponse {
    /// Put this in the CN of a certificate signed by the CA's key.
    pub code: String,
    /// RFC 3339 expiry.
    pub expires_at: String,
}

/// Register a third-party CA.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCaRequest {
    /// Registry name (default: `ca-` + fingerprint prefix).
    #[serde(default)]
    pub name: Option<String>,
    /// The CA certificate, PEM.
    pub cert: String,
    /// Certificate with CN = registration code, signed by the CA key, PEM.
    pub verification_cert: String,
    /// `cn` (default), `san-dns` or `san-uri`.
    #[serde(default)]
    pub identity: Option<String>,
    /// Create devices on first sight.
    #[serde(default)]
    pub auto_register: bool,
}

/// A certificate to explain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// Certificate (and chain), PEM.
    pub cert: String,
}

/// One validation step.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// `chain`, `revocation`, `identity`, `registration`, `device_state`, `policy`.
    pub name: String,
    /// `pass`, `fail` or `skipped`.
    pub outcome: String,
    /// What was found.
    pub detail: String,
}

/// The verdict.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExplainResponse {
    /// Would the hub accept it.
    pub accepted: bool,
    /// The identity, when found.
    pub identity: Option<String>,
    /// Steps in validation order.
    pub steps: Vec<StepView>,
}

/// An audit entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    /// Id (newest is highest).
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// `ok`, `refused` or `error`.
    pub outcome: String,
    /// Detail.
    pub detail: Option<String>,
}

impl From<&AuditEntry> for AuditView {
    fn from(a: &AuditEntry) -> Self {
        AuditView {
            id: a.id,
            at: rfc3339(a.at),
            actor: a.actor.clone(),
            action: a.action.clone(),
            target: a.target.clone(),
            outcome: a.outcome.clone(),
            detail: a.detail.clone(),
        }
    }
}

/// A CRL.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CrlView {
    /// The CA.
    pub ca: String,
    /// CRL number.
    pub number: u64,
    /// RFC 3339.
    pub this_update: String,
    /// RFC 3339.
    pub next_update: String,
    /// The CRL, PEM.
    pub crl_pem: String,
}

/// Hub facts a client needs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HubInfo {
    /// Hub version.
    pub version: String,
    /// Registry back end.
    pub store: String,
    /// Secret store back end.
    pub vault: String,
    /// CA bundle, PEM.
    pub ca_bundle_pem: String,
}

/// The cluster as the registry records it (`GET /api/v1/cluster`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// The node that answered (None: not a cluster node).
    pub answered_by: Option<String>,
    /// The last event of the cluster's event log.
    pub event_log_head: u64,
    /// The node that holds the leader lease (CRL refresh, the retirement sweep, campaign
    /// steps, OTA notice renewal run there), if any.
    pub leader: Option<String>,
    /// Every node that ever joined, by name.
    pub nodes: Vec<ClusterNodeView>,
}

/// One node of the cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterNodeView {
    /// Its name.
    pub name: String,
    /// `up`, or `down` when it has not recorded itself for three heartbeat intervals.
    pub state: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its last heartbeat (RFC 3339).
    pub heartbeat_at: String,
    /// Seconds since then.
    pub last_heartbeat_seconds_ago: u64,
    /// Live MQTT sessions on it.
    pub sessions: u64,
    /// The last event of the log it had applied.
    pub applied_seq: u64,
    /// Events of the log it had not applied yet at its last heartbeat.
    pub events_behind: u64,
    /// `connected` or `disconnected` (NATS).
    pub nats: String,
    /// Its MQTT over TLS address.
    pub mqtt: String,
    /// Its admin API URL.
    pub api: String,
}

/// A live MQTT session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// MQTT client id.
    pub client_id: String,
    /// Authenticated identity (device id).
    pub identity: String,
    /// `mtls`, `tls` or `plain`.
    pub mode: String,
    /// Peer address.
    pub peer: String,
    /// `3.1.1` or `5.0`.
    pub protocol: String,
    /// RFC 3339.
    pub connected_at: String,
}

/// A named topic policy (MQTT filter templates with `{device.id}` and `{device.group}`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AclPolicyView {
    /// Name.
    pub name: String,
    /// Publish filter templates.
    pub publish: Vec<String>,
    /// Subscribe filter templates.
    pub subscribe: Vec<String>,
}

/// Create or replace a policy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAclPolicyRequest {
    /// Publish filter templates.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Subscribe filter templates.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Assign a group and/or policy to an identity (`""` clears; absent leaves unchanged).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// Group.
    #[serde(default)]
    pub group: Option<String>,
    /// Policy name.
    #[serde(default)]
    pub policy: Option<String>,
}

/// An identity's access settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessView {
    /// Identity.
    pub device_id: String,
    /// `device` or `app`.
    pub kind: String,
    /// Group.
    pub group: Option<String>,
    /// Own policy.
    pub policy: Option<String>,
}

/// Set a group's policy (`null` clears it).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPolicyRequest {
    /// Policy name.
    pub policy: Option<String>,
}

/// Create a backend application identity.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    /// Name (identity and MQTT client id).
    pub name: String,
    /// Authenticate by token instead of a hub-generated key and certificate.
    #[serde(default)]
    pub token: bool,
    /// Publish filter templates.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Subscribe filter templates.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Serials for the factory allow-list, as the manufacturer's CSV (`serial[,mac[,model]]` per
/// line, optional header). Refused whole, with line numbers, if any line is bad.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowlistUpload {
    /// The CSV text.
    pub csv: String,
}

/// What an upload added.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AllowlistAdded {
    /// Serials added.
    pub added: usize,
}

/// A serial on the allow-list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AllowlistView {
    /// Manufacturer serial (the device id it enrolls as).
    pub serial: String,
    /// MAC address.
    pub mac: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// RFC 3339.
    pub added_at: String,
    /// RFC 3339, once enrolled.
    pub enrolled_at: Option<String>,
    /// The device it enrolled as.
    pub device_id: Option<String>,
    /// RFC 3339, when its device was decommissioned: it never enrolls again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

impl From<&AllowlistEntry> for AllowlistView {
    fn from(e: &AllowlistEntry) -> Self {
        AllowlistView {
            serial: e.factory.serial.clone(),
            mac: e.factory.mac.clone(),
            model: e.factory.model.clone(),
            added_at: rfc3339(e.added_at),
            enrolled_at: e.enrolled_at.map(rfc3339),
            device_id: e.device_id.clone(),
            retired_at: e.retired_at.map(rfc3339),
        }
    }
}

/// Create a factory station.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStationRequest {
    /// Name: 1–64 of `A-Z a-z 0-9 . _ : -`.
    pub name: String,
    /// An HTTP Basic token instead of a hub-issued certificate and key.
    #[serde(default)]
    pub token: bool,
}

/// A factory station.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StationView {
    /// Name.
    pub name: String,
    /// `certificate` or `token`.
    pub credential: String,
    /// Serial of its certificate.
    pub cert_serial: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Station> for StationView {
    fn from(s: &Station) -> Self {
        StationView {
            name: s.name.clone(),
            credential: if s.cert_serial.is_some() {
                "certificate"
            } else {
                "token"
            }
            .into(),
            cert_serial: s.cert_serial.clone(),
            created_at: rfc3339(s.created_at),
        }
    }
}

/// A created station. `private_key_pem` and `token` are shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateStationResponse {
    /// The station.
    pub station: StationView,
    /// Its certificate then the device CA, PEM (certificate stations).
    pub certificate_pem: Option<String>,
    /// Its hub-generated key, PKCS#8 PEM (certificate stations).
    pub private_key_pem: Option<String>,
    /// Its HTTP Basic token (token stations; user name = station name).
    pub token: Option<String>,
}

impl From<moat_core::CreatedStation> for CreateStationResponse {
    fn from(c: moat_core::CreatedStation) -> Self {
        CreateStationResponse {
            station: StationView::from(&c.station),
            certificate_pem: c.chain_pem,
            private_key_pem: c.private_key_pem.map(|k| k.expose().to_string()),
            token: c.token.map(|t| t.expose().to_string()),
        }
    }
}
