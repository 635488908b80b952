//! Registry persistence for Moat: devices, certificates, CAs, CRLs, registration codes,
//! settings, the audit log, the factory allow-list and EST stations, the MQTT broker's durable
//! state (retained messages and persistent sessions, as values the broker encodes), and
//! firmware updates (signing keys, images, campaigns, device inventory: [`FirmwareStore`]),
//! field provisioning (enrollment groups, hub assignments: [`ProvisioningStore`]), and the
//! web console's device list, device presence and audit search ([`ConsoleStore`]), and
//! gateways' allowances and the replay windows of relayed devices ([`GatewayStore`]).
//!
//! One [`Store`] trait, two back ends with concrete pools: SQLite (the zero-setup default,
//! WAL mode, foreign keys on) and PostgreSQL (for several hub nodes). Migrations are embedded
//! (`migrations/sqlite`, `migrations/postgres`) and run on [`open`]. SQL is kept portable;
//! timestamps are stored as integer Unix microseconds, booleans as the backend's own type.
//!
//! Not here: business rules (`moat-core` decides; the store enforces only uniqueness and
//! atomicity) and secrets (key columns hold `moat-vault` references, never plaintext keys).
//!
//! ## Cost and benchmarking
//!
//! - Every write is durable when its call returns: SQLite runs `synchronous=FULL`, so a
//!   commit waits for an fsync of the WAL (≈0.3–0.5 ms on this project's dev machine;
//!   PostgreSQL with its defaults ≈1 ms). That is the price of "a certificate the hub
//!   returned is in the registry after a power loss"; a benchmark of issuance measures it,
//!   and should not turn it off.
//! - SQLite group-commits: one writer task runs every write, and the writes queued at the
//!   same time share one transaction and one fsync (see `sqlite_writer`). Throughput grows
//!   with the number of concurrent callers; a lone caller still pays one fsync per write.
//!   PostgreSQL commits each write on its own (its server already groups WAL flushes).
//! - Statements are prepared once per connection and cached by sqlx; no SQL is built at run
//!   time. Pools: SQLite 4 reading connections plus the writer's own (WAL: readers run
//!   beside it; it waits up to 5 s for another process's write lock), PostgreSQL 8.
//! - Certificate inserts maintain the primary key (serial, CA), the fingerprint and SPKI
//!   indexes and the device index; the revoked-certificates index is partial, so it costs
//!   nothing until a certificate is revoked.
//! - Benchmark through the [`Store`] trait from [`open`], on a file database (not
//!   `sqlite::memory:`, which has one connection and no fsync), and open the store once
//!   outside the timed loop: [`open`] connects and runs the migrations.
//!   `cargo test -p moat-store --test suite insert_cert_throughput -- --ignored --nocapture`
//!   prints sequential `insert_cert` rates for both back ends;
//!   `… --test suite console_reads_at_10k_devices -- --ignored --nocapture` times the
//!   console's device pages and audit searches on 10,000 devices.

mod cluster;
mod codec;
mod console;
mod error;
mod firmware;
mod firmware_model;
mod gateways;
mod issuance;
mod lifecycle;
mod model;
mod mqtt_batch;
mod operators;
mod postgres;
mod posture;
mod provisioning;
mod sql;
mod sqlite;
mod sqlite_writer;
mod store_impl;
mod writes;

pub use cluster::{ClientClaim, ClusterStore, LoggedEvent, NodeStatus};
pub use console::{AuditFilter, ConsoleStore, DevicePage, DeviceQuery, DeviceRow};
pub use error::Error;
pub use firmware::FirmwareStore;
pub use firmware_model::*;
pub use gateways::{AllowanceKind, GatewayAllowance, GatewayStore, StoredWindow};
pub use issuance::{Issuance, ProvisioningWrite, Supersede};
pub use lifecycle::LifecycleStore;
pub use model::*;
pub use operators::{Operator, OperatorStore, Role};
pub use postgres::PgStore;
pub use posture::{PostureStore, SharedKey};
pub use provisioning::{Allocation, Assignment, EnrollmentGroup, ProvisioningStore};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::sync::Arc;
use time::OffsetDateTime;

/// Opens the store at `url`: `sqlite://PATH` (created if missing; `sqlite::memory:` for
/// tests) or `postgres://…`/`postgresql://…`, and runs the migrations.
///
/// [`Error::UnsupportedUrl`] for any other scheme. Use [`SqliteStore::open`] or
/// [`PgStore::open`] to keep the concrete type.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url).await?))
    } else {
        Err(Error::UnsupportedUrl)
    }
}

/// The registry. Every method is one transaction: it happens entirely or not at all.
/// Firmware keys, images, campaigns and inventory are in the supertrait [`FirmwareStore`];
/// enrollment groups and hub assignments in [`ProvisioningStore`]; the posture audit's
/// reads in [`PostureStore`]; device lifecycle, ownership and certificate rotation in
/// [`LifecycleStore`]; operator accounts in [`OperatorStore`]; the web console's reads and
/// device presence in [`ConsoleStore`]; the cluster's event log and node status in
/// [`ClusterStore`]; gateway allowances and relay windows in [`GatewayStore`].
#[async_trait]
pub trait Store:
    FirmwareStore
    + ClusterStore
    + GatewayStore
    + ProvisioningStore
    + PostureStore
    + LifecycleStore
    + OperatorStore
    + ConsoleStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    // ── devices ──
    /// Inserts a device and, if given, its first certificate, atomically.
    /// [`Error::Conflict`] if the id (or the certificate serial) exists.
    async fn create_device(&self, device: &Device, cert: Option<&CertRecord>) -> Result<(), Error>;
    /// The device with this id.
    async fn device(&self, id: &str) -> Result<Option<Device>, Error>;
    /// Devices ordered by id, after `after` (keyset paging), at most `limit`.
    async fn list_devices(&self, after: Option<&str>, limit: u32) -> Result<Vec<Device>, Error>;
    /// Sets state and `updated_at`; [`Error::NotFound`] if absent.
    async fn set_device_state(
        &self,
        id: &str,
        state: DeviceState,
        at: OffsetDateTime,
    ) -> Result<(), Error>;
    /// Deletes the device row (its certificate rows stay, for serial uniqueness and audit);
    /// [`Error::NotFound`] if absent.
    async fn delete_device(&self, id: &str) -> Result<(), Error>;

    // ── certificates ──
    /// Records an issued or bound certificate. [`Error::Conflict`] if the serial+issuer exists.
    async fn insert_cert(&self, cert: &CertRecord) -> Result<(), Error>;
    /// The certificate with this serial (lowercase hex), from any CA.
    async fn cert(&self, serial: &str) -> Result<Option<CertRecord>, Error>;
    /// The certificate with this SHA-256 fingerprint (lowercase hex).
    async fn cert_by_fingerprint(&self, fingerprint: &str) -> Result<Option<CertRecord>, Error>;
    /// Certificates, newest first, optionally of one device, at most `limit`.
    async fn list_certs(
        &self,
        device_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CertRecord>, Error>;
    /// Unrevoked, unsuperseded device certificates still valid at `now` whose validity ends
    /// by `until`, soonest first, at most `limit`: what needs renewing.
    async fn expiring_certs(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<CertRecord>, Error>;
    /// Marks one certificate revoked. Returns false if it was already revoked;
    /// [`Error::NotFound`] if absent.
    async fn revoke_cert(
        &self,
        serial: &str,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<bool, Error>;
    /// Marks every unrevoked certificate of a device revoked; returns those revoked now as
    /// (issuing CA name, serial), ordered: a device may hold certificates of several CAs (a
    /// vendor's and the hub's operational ones).
    async fn revoke_device_certs(
        &self,
        device_id: &str,
        reason: &str,
        at: OffsetDateTime,
    ) -> Result<Vec<(String, String)>, Error>;
    /// All revoked certificates issued by `ca_name` (serial, revoked_at, reason), by serial.
    async fn revoked_certs(&self, ca_name: &str) -> Result<Vec<RevokedCert>, Error>;
    /// Revoked certificates of every CA as (issuing CA name, serial), ordered by both, after
    /// `after` (exclusive; `None` from the start), at most `limit`: the MQTT listener builds
    /// its in-memory revoked set from these pages without holding them all at once.
    async fn revoked_serials_page(
        &self,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<(String, String)>, Error>;

    // ── certificate authorities ──
    /// Inserts a CA. [`Error::Conflict`] if the name exists.
    async fn insert_ca(&self, ca: &CaRecord) -> Result<(), Error>;
    /// The CA with this name.
    async fn ca(&self, name: &str) -> Result<Option<CaRecord>, Error>;
    /// All CAs, by name.
    async fn list_cas(&self) -> Result<Vec<CaRecord>, Error>;
    /// Deletes a CA row; [`Error::NotFound`] if absent.
    async fn delete_ca(&self, name: &str) -> Result<(), Error>;

    // ── CRLs ──
    /// Atomically increments and returns the CA's CRL number (first call returns 1).
    async fn next_crl_number(&self, ca_name: &str) -> Result<u64, Error>;
    /// Stores a published CRL, replacing the CA's previous one only if `crl.number` is higher.
    async fn save_crl(&self, crl: &CrlRecord) -> Result<(), Error>;
    /// The latest CRL of a CA.
    async fn latest_crl(&self, ca_name: &str) -> Result<Option<CrlRecord>, Error>;

    // ── CA registration codes (one-time) ──
    /// Stores a new code (by its hash) with its expiry.
    async fn insert_registration_code(
        &self,
        code_hash: &str,
        created_at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), Error>;
    /// Burns a code: true only for the first call on an existing, unexpired code.
    async fn consume_registration_code(
        &self,
        code_hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Error>;
    /// Whether a code exists, is unused and unexpired (without burning it).
    async fn registration_code_usable(
        &self,
        code_hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Error>;

    // ── settings (hub-wide values: admin token hash, …) ──
    /// A setting.
    async fn setting(&self, key: &str) -> Result<Option<String>, Error>;
    /// Sets a setting (insert or replace).
    async fn put_setting(&self, key: &str, value: &str) -> Result<(), Error>;

    // ── topic access ──
    /// Creates or replaces a named ACL policy.
    async fn put_acl_policy(&self, policy: &AclPolicy) -> Result<(), Error>;
    /// All ACL policies, by name.
    async fn acl_policies(&self) -> Result<Vec<AclPolicy>, Error>;
    /// Deletes an ACL policy; [`Error::NotFound`] if absent.
    async fn delete_acl_policy(&self, name: &str) -> Result<(), Error>;
    /// Sets (Some) or clears (None) the policy of a group.
    async fn set_group_policy(&self, group: &str, policy: Option<&str>) -> Result<(), Error>;
    /// The policy of a group.
    async fn group_policy(&self, group: &str) -> Result<Option<String>, Error>;
    /// Creates or replaces an identity's kind, group and policy.
    async fn put_identity_access(&self, access: &IdentityAccess) -> Result<(), Error>;
    /// An identity's kind, group and policy (None: a device with the defaults).
    async fn identity_access(&self, device_id: &str) -> Result<Option<IdentityAccess>, Error>;

    // ── audit ──
    /// Appends an audit entry; returns its id.
    async fn append_audit(&self, entry: &NewAuditEntry) -> Result<i64, Error>;
    /// Audit entries, newest first, at most `limit`, with id < `before` if given.
    async fn list_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, Error>;

    // ── factory enrollment (EST) ──
    /// Adds serials to the allow-list, all or none: [`Error::Conflict`] naming the first one
    /// already listed.
    async fn add_allowlist(&self, entries: &[AllowlistEntry]) -> Result<(), Error>;
    /// Which of `serials` are on the allow-list already (in the order given).
    async fn allowlisted(&self, serials: &[String]) -> Result<Vec<String>, Error>;
    /// The allow-list entry of a serial.
    async fn allowlist_entry(&self, serial: &str) -> Result<Option<AllowlistEntry>, Error>;
    /// Allow-list entries by serial, after `after` (keyset paging), at most `limit`.
    async fn list_allowlist(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AllowlistEntry>, Error>;
    /// Lets an enrolled serial enroll once more (its `device_id` stays: the device it enrolled
    /// as). False if it had not enrolled; [`Error::NotFound`] if it is not on the allow-list.
    async fn reset_allowlist(&self, serial: &str) -> Result<bool, Error>;
    /// Writes one certificate issuance, all or nothing (see [`Issuance`] for what it writes
    /// and refuses); returns the assignment of a provisioning.
    async fn issue(&self, issuance: &Issuance) -> Result<Option<Assignment>, Error>;
    /// Creates a station, with its certificate if it has one, and the audit entry, atomically.
    /// [`Error::Conflict`] if the name (or the certificate) exists.
    async fn create_station(
        &self,
        station: &Station,
        cert: Option<&CertRecord>,
        audit: &NewAuditEntry,
    ) -> Result<(), Error>;
    /// The station with this name.
    async fn station(&self, name: &str) -> Result<Option<Station>, Error>;
    /// The certificate with this fingerprint and the station whose certificate it is, if
    /// any, in one read (EST station authentication runs on every enrollment).
    async fn station_cert(
        &self,
        fingerprint: &str,
    ) -> Result<Option<(CertRecord, Option<Station>)>, Error>;
    /// Every station, by name.
    async fn list_stations(&self) -> Result<Vec<Station>, Error>;
    /// Deletes a station (its certificate row stays, for serial uniqueness and audit);
    /// [`Error::NotFound`] if absent.
    async fn delete_station(&self, name: &str) -> Result<(), Error>;

    // ── MQTT broker state (values the broker encodes; opaque here) ──
    /// Stores (or replaces) the retained message of `topic`.
    async fn put_mqtt_retained(&self, topic: &str, value: &[u8]) -> Result<(), Error>;
    /// Forgets the retained message of `topic`; nothing to forget is not an error.
    async fn delete_mqtt_retained(&self, topic: &str) -> Result<(), Error>;
    /// Every retained message as (topic, value), by topic.
    async fn mqtt_retained(&self) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Stores (or replaces) a persistent session. `expires_at`: when it ends if its client
    /// does not come back; `None` if that is not known (connected when saved) or never.
    async fn put_mqtt_session(
        &self,
        client_id: &str,
        value: &[u8],
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(), Error>;
    /// Forgets a session; nothing to forget is not an error.
    async fn delete_mqtt_session(&self, client_id: &str) -> Result<(), Error>;
    /// Every stored session as (client id, value), by client id.
    async fn mqtt_sessions(&self) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Deletes the sessions whose `expires_at` is at or before `now` (with their queued
    /// messages); returns how many.
    async fn delete_expired_mqtt_sessions(&self, now: OffsetDateTime) -> Result<u64, Error>;
    /// Applies `writes` in order, in one transaction: all of them are durable when this
    /// returns, or none is.
    async fn write_mqtt(&self, writes: Vec<MqttWrite>) -> Result<(), Error>;
    /// Every queued message row, by client id then queueing order.
    async fn mqtt_queue(&self) -> Result<Vec<MqttQueued>, Error>;
}

/// One change of the broker's durable state, for [`Store::write_mqtt`]. Values are the
/// broker's encoding, opaque here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MqttWrite {
    /// Stores (or replaces) the retained message of a topic.
    PutRetained {
        /// The topic.
        topic: String,
        /// The message.
        value: Vec<u8>,
    },
    /// Forgets the retained message of a topic.
    DeleteRetained {
        /// The topic.
        topic: String,
    },
    /// Stores (or replaces) a session row (see [`Store::put_mqtt_session`]); its queued
    /// messages stay.
    PutSession {
        /// Client id.
        client_id: String,
        /// The session.
        value: Vec<u8>,
        /// When it ends if its client does not come back.
        expires_at: Option<OffsetDateTime>,
    },
    /// Forgets a session and its queued messages.
    DeleteSession {
        /// Client id.
        client_id: String,
    },
    /// Queues a message for a session (whose row must exist).
    Enqueue {
        /// Client id.
        client_id: String,
        /// Its order in the session; unique per session.
        seq: u64,
        /// The delivery.
        value: Vec<u8>,
    },
    /// A queued message was sent under `packet_id`.
    Sent {
        /// Client id.
        client_id: String,
        /// Which message.
        seq: u64,
        /// Its packet id.
        packet_id: u16,
    },
    /// The in-flight QoS 2 message `packet_id` was received (PUBREC): PUBREL is owed.
    Released {
        /// Client id.
        client_id: String,
        /// Its packet id.
        packet_id: u16,
    },
    /// The in-flight message `packet_id` is done (PUBCOMP, or a refusing PUBREC).
    Acknowledged {
        /// Client id.
        client_id: String,
        /// Its packet id.
        packet_id: u16,
    },
    /// A message is done with (acknowledged by `seq`, or dropped unsent).
    Finished {
        /// Client id.
        client_id: String,
        /// Which message.
        seq: u64,
    },
}

/// A queued message row ([`Store::mqtt_queue`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttQueued {
    /// Client id.
    pub client_id: String,
    /// Its order in the session.
    pub seq: u64,
    /// The packet id it is in flight under, once sent.
    pub packet_id: Option<u16>,
    /// QoS 2, PUBREC received: PUBREL owed.
    pub released: bool,
    /// The delivery.
    pub value: Vec<u8>,
}
