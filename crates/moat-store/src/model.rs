//! Rows of the registry.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where a device stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// May connect (within its policy).
    Active,
    /// Temporarily refused; certificates kept.
    Disabled,
    /// Refused for good; its certificates are revoked.
    Revoked,
}

impl DeviceState {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Active => "active",
            DeviceState::Disabled => "disabled",
            DeviceState::Revoked => "revoked",
        }
    }
    /// From column text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => DeviceState::Active,
            "disabled" => DeviceState::Disabled,
            "revoked" => DeviceState::Revoked,
            _ => return None,
        })
    }
}

/// How far a device got through commissioning (the `devices.stage` column): it only moves
/// forward, except that re-provisioning an active device makes it `Provisioned` again until
/// its next CONNECT. Suspension and decommissioning are not stages: they are the device's
/// [`DeviceState`] (`Disabled`, `Revoked`), so every existing check of the state keeps
/// holding; [`Device::lifecycle`] combines the two into what people see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// It has an identity: enrolled over EST, created by an admin, or auto-registered.
    Enrolled,
    /// Field provisioning assigned it its hub and operational certificate.
    Provisioned,
    /// It has connected (first accepted MQTT CONNECT).
    Active,
}

impl Stage {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Enrolled => "enrolled",
            Stage::Provisioned => "provisioned",
            Stage::Active => "active",
        }
    }
    /// From column text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "enrolled" => Stage::Enrolled,
            "provisioned" => Stage::Provisioned,
            "active" => Stage::Active,
            _ => return None,
        })
    }
}

/// Where a device is in its life: allow-listed (no device yet, see [`AllowlistEntry`]) →
/// enrolled → provisioned → active → suspended → decommissioned. Derived, never stored: see
/// [`Device::lifecycle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// [`Stage::Enrolled`], state active.
    Enrolled,
    /// [`Stage::Provisioned`], state active.
    Provisioned,
    /// [`Stage::Active`], state active.
    Active,
    /// State disabled: connections refused, certificates kept (`suspend` and `disable` are
    /// the same thing; `resume`/`enable` returns it to its stage).
    Suspended,
    /// State revoked: every certificate revoked, its factory serial retired. Final.
    Decommissioned,
}

impl Lifecycle {
    /// Wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Enrolled => "enrolled",
            Lifecycle::Provisioned => "provisioned",
            Lifecycle::Active => "active",
            Lifecycle::Suspended => "suspended",
            Lifecycle::Decommissioned => "decommissioned",
        }
    }
}

/// A certificate the retirement sweep revoked (reason superseded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetiredCert {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The issuing CA.
    pub ca_name: String,
    /// The device it identified.
    pub device_id: Option<String>,
}

/// Which connection modes a device may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionPolicy {
    /// Mutual TLS only (the default).
    DenyInsecure,
    /// Also server-TLS + token and plain TCP + token.
    AllowInsecure,
}

impl ConnectionPolicy {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionPolicy::DenyInsecure => "deny_insecure",
            ConnectionPolicy::AllowInsecure => "allow_insecure",
        }
    }
    /// From column text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deny_insecure" => ConnectionPolicy::DenyInsecure,
            "allow_insecure" => ConnectionPolicy::AllowInsecure,
            _ => return None,
        })
    }
}

/// A device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The identity (certificate CN / SAN per its CA's rule); also the MQTT client id.
    pub id: String,
    /// Lifecycle state.
    pub state: DeviceState,
    /// Allowed connection modes.
    pub policy: ConnectionPolicy,
    /// SHA-256 (hex) of the device token, when the policy allows token authentication.
    pub token_hash: Option<String>,
    /// The CA whose certificates identify this device.
    pub ca_name: String,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last state change.
    pub updated_at: OffsetDateTime,
    /// Its factory identity, when it enrolled from the allow-list (EST).
    pub factory: Option<FactoryInfo>,
    /// How far it got through commissioning (see [`Device::lifecycle`]).
    pub stage: Stage,
    /// The organisation that owns it (`moat device claim`), None while unclaimed.
    pub owner: Option<String>,
    /// Why it is suspended or decommissioned (the admin's text); None otherwise.
    pub status_reason: Option<String>,
}

impl Device {
    /// Where the device is in its life: its state when that refuses it, else its stage.
    pub fn lifecycle(&self) -> Lifecycle {
        match (self.state, self.stage) {
            (DeviceState::Disabled, _) => Lifecycle::Suspended,
            (DeviceState::Revoked, _) => Lifecycle::Decommissioned,
            (DeviceState::Active, Stage::Enrolled) => Lifecycle::Enrolled,
            (DeviceState::Active, Stage::Provisioned) => Lifecycle::Provisioned,
            (DeviceState::Active, Stage::Active) => Lifecycle::Active,
        }
    }
}

/// What the manufacturer said about a device: its serial, and optionally its MAC and model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactoryInfo {
    /// The manufacturer's serial number (the allow-list key).
    pub serial: String,
    /// MAC address, lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// Model name.
    pub model: Option<String>,
}

/// A serial on the factory allow-list: the manufacturer will produce it, and it may enroll
/// over EST once (again only after an admin reset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowlistEntry {
    /// What the manufacturer uploaded for it.
    pub factory: FactoryInfo,
    /// Uploaded.
    pub added_at: OffsetDateTime,
    /// When it enrolled; None while it may enroll.
    pub enrolled_at: Option<OffsetDateTime>,
    /// The device it enrolled as.
    pub device_id: Option<String>,
    /// When its device was decommissioned: it never enrolls again (no reset).
    pub retired_at: Option<OffsetDateTime>,
}

/// A factory station: the credential that may enroll allow-listed serials over EST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Station {
    /// Its name (CN of its certificate, user name for HTTP Basic).
    pub name: String,
    /// Serial (hex) of the one certificate that authenticates it, if it has one.
    pub cert_serial: Option<String>,
    /// SHA-256 (hex) of its HTTP Basic token, if it has one.
    pub token_hash: Option<String>,
    /// Created.
    pub created_at: OffsetDateTime,
}

/// How a certificate came to the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSource {
    /// The hub generated the key and issued the certificate (key returned once).
    HubKey,
    /// The hub issued it on a CSR.
    Csr,
    /// Issued elsewhere (a registered CA) and bound to a device.
    Bound,
    /// A hub infrastructure certificate (CA or server).
    Hub,
    /// A factory station's EST client certificate (no device).
    Station,
}

impl CertSource {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::HubKey => "hub_key",
            CertSource::Csr => "csr",
            CertSource::Bound => "bound",
            CertSource::Hub => "hub",
            CertSource::Station => "station",
        }
    }
    /// From column text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hub_key" => CertSource::HubKey,
            "csr" => CertSource::Csr,
            "bound" => CertSource::Bound,
            "hub" => CertSource::Hub,
            "station" => CertSource::Station,
            _ => return None,
        })
    }
}

/// A certificate the hub issued or bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// Serial, lowercase hex. Unique per issuing CA (the hub's own serials are globally unique).
    pub serial: String,
    /// The issuing CA's registry name.
    pub ca_name: String,
    /// The device it identifies (None for hub infrastructure certificates).
    pub device_id: Option<String>,
    /// Subject (RFC 4514).
    pub subject: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER, lowercase hex (unique).
    pub fingerprint: String,
    /// SHA-256 of the SubjectPublicKeyInfo, lowercase hex (finds a key reused across certs).
    pub spki_sha256: String,
    /// How it came here.
    pub source: CertSource,
    /// The certificate.
    pub der: Vec<u8>,
    /// Recorded.
    pub created_at: OffsetDateTime,
    /// When revoked, if it is.
    pub revoked_at: Option<OffsetDateTime>,
    /// RFC 5280 reason name (snake_case), if revoked.
    pub revocation_reason: Option<String>,
    /// When a newer certificate superseded it: the end of its overlap, when the hub revokes
    /// it (reason superseded) and refuses it from then on. None while it is current.
    pub retire_at: Option<OffsetDateTime>,
}

/// One entry of a CA's revocation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedCert {
    /// Serial, lowercase hex.
    pub serial: String,
    /// When.
    pub revoked_at: OffsetDateTime,
    /// Reason name (snake_case).
    pub reason: String,
}

/// What a CA is to the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaKind {
    /// The hub's root.
    Root,
    /// The hub's device-issuing intermediate.
    DeviceIssuing,
    /// A third party's CA (e.g. a secure-element vendor), registered with proof of possession.
    Registered,
}

impl CaKind {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::Root => "root",
            CaKind::DeviceIssuing => "device_issuing",
            CaKind::Registered => "registered",
        }
    }
    /// From column text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "root" => CaKind::Root,
            "device_issuing" => CaKind::DeviceIssuing,
            "registered" => CaKind::Registered,
            _ => return None,
        })
    }
}

/// A certificate authority the hub runs or trusts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRecord {
    /// Registry name (`root`, `devices`, or the name given at registration).
    pub name: String,
    /// What it is.
    pub kind: CaKind,
    /// Its certificate, DER.
    pub cert_der: Vec<u8>,
    /// The vault reference of its signing key (hub CAs only).
    pub key_ref: Option<String>,
    /// Identity rule name (`cn`, `san-dns`, `san-uri`).
    pub identity_rule: String,
    /// Whether devices with a valid certificate from it are created on first sight.
    pub auto_register: bool,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint: String,
    /// Recorded.
    pub created_at: OffsetDateTime,
}

/// A published CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlRecord {
    /// The CA it belongs to.
    pub ca_name: String,
    /// CRL number.
    pub number: u64,
    /// DER.
    pub der: Vec<u8>,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
}

/// An audit entry to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// When.
    pub at: OffsetDateTime,
    /// Who (`admin`, an operator name, `system`).
    pub actor: String,
    /// What (`device.create`, `cert.revoke`, …).
    pub action: String,
    /// On what (a device id, a serial, a CA name), if anything.
    pub target: Option<String>,
    /// `ok` or `error`.
    pub outcome: String,
    /// Free-form detail (an error's public message, a reason).
    pub detail: Option<String>,
}

/// A stored audit entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Monotonic id.
    pub id: i64,
    /// When.
    pub at: OffsetDateTime,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// `ok` or `error`.
    pub outcome: String,
    /// Detail.
    pub detail: Option<String>,
}

/// A named topic policy: MQTT filters with `{device.id}` and `{device.group}` variables,
/// expanded per identity at CONNECT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclPolicy {
    /// Policy name.
    pub name: String,
    /// Filter templates of topics the identity may publish to.
    pub publish: Vec<String>,
    /// Filter templates the identity may subscribe to.
    pub subscribe: Vec<String>,
    /// Created.
    pub created_at: OffsetDateTime,
}

/// What an identity is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A device.
    Device,
    /// A backend application (wider topic access, e.g. all devices' telemetry).
    App,
    /// A gateway: relays signed messages of devices without IP under `gateways/{id}/#`.
    Gateway,
}

impl IdentityKind {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Device => "device",
            IdentityKind::App => "app",
            IdentityKind::Gateway => "gateway",
        }
    }
    /// From column text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "device" => IdentityKind::Device,
            "app" => IdentityKind::App,
            "gateway" => IdentityKind::Gateway,
            _ => return None,
        })
    }
}

/// How an identity's topic access is decided: its kind, group and policy. An identity with
/// no row is a device in no group under the default policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityAccess {
    /// The device (or application) id.
    pub device_id: String,
    /// Device, application or gateway.
    pub kind: IdentityKind,
    /// Its group, if any (`{device.group}`, and the group's policy).
    pub group: Option<String>,
    /// Its own policy, which wins over the group's.
    pub policy: Option<String>,
}
