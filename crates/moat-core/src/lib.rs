//! Moat's domain services: the hub's CAs, devices and their certificates, registered
//! third-party CAs, revocation and CRL publication, the audit log, and the event bus that
//! tells the rest of the hub (the MQTT broker, OTA) what changed; factory enrollment (the
//! allow-list, EST stations, EST enrollment and re-enrollment decisions).
//!
//! ```text
//!   moat-api / CLI ──▶ Hub (this crate) ──▶ moat-pki  (build and check X.509, no I/O)
//!                                       ├──▶ moat-vault (keys: sealed or in PKCS#11)
//!                                       ├──▶ moat-store (registry: SQLite / PostgreSQL)
//!                                       └──▶ events (tokio broadcast) ──▶ broker, OTA, …
//! ```
//!
//! Rules kept here, not in the callers: a certificate is recorded in the registry before it
//! is returned; hub-generated device keys are returned once and never stored; every admin
//! action is audited with its outcome; every revocation republishes the CA's CRL and emits an
//! event.

mod access;
mod admission;
mod allowlist;
mod audit;
mod cache;
mod cas;
mod certs;
mod config;
mod console;
mod devices;
mod error;
mod est;
mod events;
mod explain;
mod gateways;
mod hub;
mod issuance;
mod lifecycle;
mod limiter;
mod operators;
mod posture;
mod provisioning;
mod relay;
mod secret;
mod services;
mod stations;
mod view;

pub use access::{CreateApp, DEFAULT_FILTER, DEFAULT_POLICY, TopicAcl, expand, validate_filter};
pub use admission::{Admission, CertificateCheck, CheckedCertificate, ConnectMode, Denial, STEPS};
pub use allowlist::{AllowlistLine, MAX_ALLOWLIST_ENTRIES, MAX_MODEL_LEN, parse_allowlist_csv};
pub use audit::Actor;
pub use cas::RegisterCa;
pub use config::{CaNames, CoreConfig};
pub use console::{MAX_SEARCH_LEN, PRESENCE_INTERVAL};
pub use devices::{CreateDevice, CreatedDevice, Credential, validate_device_id};
pub use error::Error;
pub use est::{EstIssued, EstRefusal, StationCredential};
pub use events::{
    BusError, Envelope, Event, EventBus, HISTORY, LocalBus, Position, Relay, RevokedCertificate,
    Start, Subscription,
};
pub use explain::{Explanation, Step, StepOutcome};
pub use gateways::{Gateway, gateway_acl, gateway_root};
pub use hub::{Hub, ServerIdentity};
pub use lifecycle::{MAX_OWNER_LEN, MAX_REASON_LEN, RotatedDevice};
pub use limiter::FailureLimiter;
pub use operators::Principal;
pub use posture::{
    CHECKS as POSTURE_CHECKS, Finding, InsecureUse, Observations, PostureOptions, RevokedAttempt,
    Severity,
};
pub use provisioning::{
    CreateEnrollmentGroup, HubEndpoint, ProvisionRefusal, Provisioned, allocate, matching_group,
};
pub use relay::{
    DOWNLINK_FILTER, Downlink, RELAY_REASONS, RelayRefusal, Relayed, UPLINK_FILTER, Uplink,
};
pub use secret::{Secret, hash_token, new_token, token_matches};
pub use stations::{CreateStation, CreatedStation};
pub use view::DEFAULT_CAPACITY as ADMISSION_VIEW_CAPACITY;

pub use moat_pki::{IdentityRule, Renewal, RevocationReason};
pub use moat_store::{
    AclPolicy, Allocation, AllowanceKind, AllowlistEntry, Assignment, AuditEntry, AuditFilter,
    CaKind, CaRecord, CertRecord, CertSource, ConnectionPolicy, Device, DevicePage, DeviceQuery,
    DeviceRow, DeviceState, EnrollmentGroup, FactoryInfo, GatewayAllowance, IdentityAccess,
    IdentityKind, Lifecycle, LoggedEvent, NodeStatus, Operator, RetiredCert, Role, Stage, Station,
};
