//! Every statement the store runs, in one place and shared by both back ends.
//!
//! Portable between SQLite (≥ 3.35, bundled by sqlx) and PostgreSQL: `$N` placeholders,
//! `INSERT … ON CONFLICT … DO UPDATE`, `UPDATE … RETURNING`. All text is `'static` (no SQL
//! is built at run time), so sqlx prepares each statement once per connection and caches it.
//! The `SELECT` column lists are the ones the decoders in `codec` read.

/// Columns of `devices`.
macro_rules! device_cols {
    () => {
        "id, state, policy, token_hash, ca_name, created_at, updated_at, hw_serial, mac, model, \
         stage, owner, status_reason"
    };
}

/// Columns of `certificates`.
macro_rules! cert_cols {
    () => {
        "serial, ca_name, device_id, subject, not_before, not_after, fingerprint, spki_sha256, \
         source, der, created_at, revoked_at, revocation_reason, retire_at"
    };
}

/// Columns of `cas` (without the CRL counter).
macro_rules! ca_cols {
    () => {
        "name, kind, cert_der, key_ref, identity_rule, auto_register, fingerprint, created_at"
    };
}

/// Columns of `allowlist`.
macro_rules! allowlist_cols {
    () => {
        "serial, mac, model, added_at, enrolled_at, device_id, retired_at"
    };
}

/// Columns of `stations`.
macro_rules! station_cols {
    () => {
        "name, cert_serial, token_hash, created_at"
    };
}

/// Columns of `audit_log`.
macro_rules! audit_cols {
    () => {
        "id, at, actor, action, target, outcome, detail"
    };
}

// ── devices ──

pub(crate) const INSERT_DEVICE: &str = concat!(
    "INSERT INTO devices (",
    device_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
);
pub(crate) const DEVICE: &str = concat!("SELECT ", device_cols!(), " FROM devices WHERE id = $1");
pub(crate) const DEVICES_FIRST: &str = concat!(
    "SELECT ",
    device_cols!(),
    " FROM devices ORDER BY id LIMIT $1"
);
pub(crate) const DEVICES_AFTER: &str = concat!(
    "SELECT ",
    device_cols!(),
    " FROM devices WHERE id > $1 ORDER BY id LIMIT $2"
);
/// Devices of one owner (lifecycle.rs), over the partial index `devices_owner`.
pub(crate) const DEVICES_OF_OWNER_FIRST: &str = concat!(
    "SELECT ",
    device_cols!(),
    " FROM devices WHERE owner = $1 ORDER BY id LIMIT $2"
);
pub(crate) const DEVICES_OF_OWNER_AFTER: &str = concat!(
    "SELECT ",
    device_cols!(),
    " FROM devices WHERE owner = $1 AND id > $2 ORDER BY id LIMIT $3"
);
pub(crate) const SET_DEVICE_STATE: &str =
    "UPDATE devices SET state = $1, updated_at = $2 WHERE id = $3";
pub(crate) const DELETE_DEVICE: &str = "DELETE FROM devices WHERE id = $1";

// ── certificates ──

/// Inserts nothing on a taken serial or fingerprint (no rows affected): the statement does
/// not fail, so a PostgreSQL transaction stays usable for [`CERT_SERIAL_TAKEN`].
pub(crate) const INSERT_CERT: &str = concat!(
    "INSERT INTO certificates (",
    cert_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING"
);
pub(crate) const CERT_SERIAL_TAKEN: &str =
    "SELECT 1 FROM certificates WHERE serial = $1 AND ca_name = $2";
/// The newest certificate with a serial (serials of different CAs may collide).
pub(crate) const CERT_BY_SERIAL: &str = concat!(
    "SELECT ",
    cert_cols!(),
    " FROM certificates WHERE serial = $1 ORDER BY created_at DESC, ca_name LIMIT 1"
);
pub(crate) const CERT_BY_FINGERPRINT: &str = concat!(
    "SELECT ",
    cert_cols!(),
    " FROM certificates WHERE fingerprint = $1"
);
pub(crate) const CERTS_OF_DEVICE: &str = concat!(
    "SELECT ",
    cert_cols!(),
    " FROM certificates WHERE device_id = $1",
    " ORDER BY created_at DESC, serial DESC, ca_name LIMIT $2"
);
// Live device certificates whose validity ends within ($1, $2], soonest first. A superseded
// one (retire_at set) needs no renewal: its successor exists.
pub(crate) const CERTS_EXPIRING: &str = concat!(
    "SELECT ",
    cert_cols!(),
    " FROM certificates WHERE revoked_at IS NULL AND retire_at IS NULL AND device_id IS NOT NULL",
    " AND not_after > $1 AND not_after <= $2 ORDER BY not_after, serial LIMIT $3"
);
pub(crate) const CERTS: &str = concat!(
    "SELECT ",
    cert_cols!(),
    " FROM certificates ORDER BY created_at DESC, serial DESC, ca_name LIMIT $1"
);
/// Revokes the certificate [`CERT_BY_SERIAL`] finds, if it is not revoked yet.
pub(crate) const REVOKE_CERT: &str = "UPDATE certificates \
     SET revoked_at = $1, revocation_reason = $2 \
     WHERE serial = $3 AND revoked_at IS NULL AND ca_name = \
     (SELECT ca_name FROM certificates WHERE serial = $3 \
      ORDER BY created_at DESC, ca_name LIMIT 1)";
pub(crate) const CERT_EXISTS: &str = "SELECT 1 FROM certificates WHERE serial = $1";
pub(crate) const REVOKE_DEVICE_CERTS: &str = "UPDATE certificates \
     SET revoked_at = $1, revocation_reason = $2 \
     WHERE device_id = $3 AND revoked_at IS NULL RETURNING ca_name, serial";
pub(crate) const REVOKED_OF_CA: &str = "SELECT serial, revoked_at, revocation_reason \
     FROM certificates WHERE ca_name = $1 AND revoked_at IS NOT NULL ORDER BY serial";
// Keyset paging over the partial index certificates_revoked (ca_name, serial).
pub(crate) const REVOKED_SERIALS_PAGE: &str = "SELECT ca_name, serial FROM certificates \
     WHERE revoked_at IS NOT NULL AND (ca_name, serial) > ($1, $2) \
     ORDER BY ca_name, serial LIMIT $3";

// ── certificate authorities and CRLs ──

pub(crate) const INSERT_CA: &str = concat!(
    "INSERT INTO cas (",
    ca_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
);
pub(crate) const CA: &str = concat!("SELECT ", ca_cols!(), " FROM cas WHERE name = $1");
pub(crate) const CAS: &str = concat!("SELECT ", ca_cols!(), " FROM cas ORDER BY name");
pub(crate) const DELETE_CA: &str = "DELETE FROM cas WHERE name = $1";
/// One statement, so concurrent callers each get their own number.
pub(crate) const NEXT_CRL_NUMBER: &str =
    "UPDATE cas SET crl_number = crl_number + 1 WHERE name = $1 RETURNING crl_number";
/// Replaces the stored CRL only with a higher-numbered one.
pub(crate) const SAVE_CRL: &str = "INSERT INTO crls \
     (ca_name, number, der, this_update, next_update) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (ca_name) DO UPDATE SET number = excluded.number, der = excluded.der, \
     this_update = excluded.this_update, next_update = excluded.next_update \
     WHERE excluded.number > crls.number";
pub(crate) const LATEST_CRL: &str =
    "SELECT ca_name, number, der, this_update, next_update FROM crls WHERE ca_name = $1";

// ── registration codes, settings, audit ──

pub(crate) const INSERT_CODE: &str =
    "INSERT INTO registration_codes (code_hash, created_at, expires_at) VALUES ($1, $2, $3)";
/// Burns a code in one statement: at most one caller sees a row affected.
pub(crate) const CONSUME_CODE: &str = "UPDATE registration_codes SET used_at = $1 \
     WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1";
pub(crate) const CODE_USABLE: &str = "SELECT 1 FROM registration_codes \
     WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2";
pub(crate) const SETTING: &str = "SELECT value FROM settings WHERE key = $1";
pub(crate) const PUT_SETTING: &str = "INSERT INTO settings (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
pub(crate) const APPEND_AUDIT: &str = "INSERT INTO audit_log \
     (at, actor, action, target, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
pub(crate) const AUDIT_FIRST: &str = concat!(
    "SELECT ",
    audit_cols!(),
    " FROM audit_log ORDER BY id DESC LIMIT $1"
);
pub(crate) const AUDIT_BEFORE: &str = concat!(
    "SELECT ",
    audit_cols!(),
    " FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
);

// ── topic access ──

pub(crate) const PUT_ACL_POLICY: &str = "INSERT INTO acl_policies (name, publish, subscribe, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET publish = excluded.publish, \
     subscribe = excluded.subscribe";
pub(crate) const ACL_POLICIES: &str =
    "SELECT name, publish, subscribe, created_at FROM acl_policies ORDER BY name";
pub(crate) const DELETE_ACL_POLICY: &str = "DELETE FROM acl_policies WHERE name = $1";
pub(crate) const PUT_GROUP_POLICY: &str = "INSERT INTO group_policies (group_name, policy) VALUES ($1, $2) \
     ON CONFLICT (group_name) DO UPDATE SET policy = excluded.policy";
pub(crate) const DELETE_GROUP_POLICY: &str = "DELETE FROM group_policies WHERE group_name = $1";
pub(crate) const GROUP_POLICY: &str = "SELECT policy FROM group_policies WHERE group_name = $1";
pub(crate) const PUT_IDENTITY_ACCESS: &str = "INSERT INTO identity_access (device_id, kind, group_name, policy) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, \
     group_name = excluded.group_name, policy = excluded.policy";
pub(crate) const IDENTITY_ACCESS: &str =
    "SELECT device_id, kind, group_name, policy FROM identity_access WHERE device_id = $1";

// ── MQTT broker state (opaque values) ──

pub(crate) const PUT_MQTT_RETAINED: &str = "INSERT INTO mqtt_retained (topic, value) \
     VALUES ($1, $2) ON CONFLICT (topic) DO UPDATE SET value = excluded.value";
pub(crate) const DELETE_MQTT_RETAINED: &str = "DELETE FROM mqtt_retained WHERE topic = $1";
pub(crate) const MQTT_RETAINED: &str = "SELECT topic, value FROM mqtt_retained ORDER BY topic";
pub(crate) const PUT_MQTT_SESSION: &str = "INSERT INTO mqtt_sessions \
     (client_id, value, expires_at) VALUES ($1, $2, $3) ON CONFLICT (client_id) \
     DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at";
pub(crate) const DELETE_MQTT_SESSION: &str = "DELETE FROM mqtt_sessions WHERE client_id = $1";
pub(crate) const MQTT_SESSIONS: &str =
    "SELECT client_id, value FROM mqtt_sessions ORDER BY client_id";
pub(crate) const DELETE_EXPIRED_MQTT_SESSIONS: &str =
    "DELETE FROM mqtt_sessions WHERE expires_at <= $1";
pub(crate) const DELETE_EXPIRED_MQTT_QUEUES: &str = "DELETE FROM mqtt_queue WHERE client_id IN \
     (SELECT client_id FROM mqtt_sessions WHERE expires_at <= $1)";
pub(crate) const MQTT_QUEUE: &str = "SELECT client_id, seq, packet_id, released, value \
     FROM mqtt_queue ORDER BY client_id, seq";

// ── factory enrollment ──

pub(crate) const INSERT_ALLOWLIST: &str = concat!(
    "INSERT INTO allowlist (",
    allowlist_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
);
pub(crate) const ALLOWLIST_ENTRY: &str = concat!(
    "SELECT ",
    allowlist_cols!(),
    " FROM allowlist WHERE serial = $1"
);
pub(crate) const ALLOWLIST_FIRST: &str = concat!(
    "SELECT ",
    allowlist_cols!(),
    " FROM allowlist ORDER BY serial LIMIT $1"
);
pub(crate) const ALLOWLIST_AFTER: &str = concat!(
    "SELECT ",
    allowlist_cols!(),
    " FROM allowlist WHERE serial > $1 ORDER BY serial LIMIT $2"
);
/// Claims a serial's one enrollment: at most one caller sees a row affected. A retired
/// (decommissioned) serial is never claimed.
pub(crate) const CLAIM_ALLOWLIST: &str = "UPDATE allowlist SET enrolled_at = $1, device_id = $2 \
     WHERE serial = $3 AND enrolled_at IS NULL AND retired_at IS NULL";
/// Keeps `device_id`: the device it enrolled as stays known (the next enrollment of the
/// serial goes onto it).
pub(crate) const RESET_ALLOWLIST: &str = "UPDATE allowlist SET enrolled_at = NULL \
     WHERE serial = $1 AND enrolled_at IS NOT NULL AND retired_at IS NULL";
pub(crate) const ALLOWLIST_EXISTS: &str = "SELECT 1 FROM allowlist WHERE serial = $1";

pub(crate) const INSERT_STATION: &str = concat!(
    "INSERT INTO stations (",
    station_cols!(),
    ") VALUES ($1, $2, $3, $4)"
);
pub(crate) const STATION: &str =
    concat!("SELECT ", station_cols!(), " FROM stations WHERE name = $1");
/// A certificate by fingerprint and the station (if any) it authenticates, in one read (the
/// EST hot path). Station columns are aliased `station_*`.
pub(crate) const STATION_CERT: &str = "SELECT c.serial, c.ca_name, c.device_id, c.subject, c.not_before, c.not_after, \
     c.fingerprint, c.spki_sha256, c.source, c.der, c.created_at, c.revoked_at, \
     c.revocation_reason, c.retire_at, s.name AS station_name, s.cert_serial AS station_cert_serial, \
     s.token_hash AS station_token_hash, s.created_at AS station_created_at \
     FROM certificates c LEFT JOIN stations s ON s.cert_serial = c.serial \
     WHERE c.fingerprint = $1";
pub(crate) const STATIONS: &str =
    concat!("SELECT ", station_cols!(), " FROM stations ORDER BY name");
pub(crate) const DELETE_STATION: &str = "DELETE FROM stations WHERE name = $1";

/// For the other modules that build queries from the same column lists.
pub(crate) use {audit_cols, device_cols};
