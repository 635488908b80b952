//! What both back ends share: timestamp and number conversion, row decoding (of the
//! column lists in [`crate::sql`]) and the classification of database errors into [`Error`]
//! variants.

use crate::Error;
use crate::model::{
    AclPolicy, AllowlistEntry, AuditEntry, CaKind, CaRecord, CertRecord, CertSource,
    ConnectionPolicy, CrlRecord, Device, DeviceState, FactoryInfo, IdentityAccess, IdentityKind,
    RevokedCert, Stage, Station,
};
use sqlx::{ColumnIndex, Decode, Row, Type};
use time::OffsetDateTime;

/// Unix microseconds, the stored form of every timestamp. Sub-microsecond precision is dropped.
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    // `OffsetDateTime` spans ±9999 years, about ±3.2e17 µs: always within i64.
    (t.unix_timestamp_nanos() / 1_000) as i64
}

/// The UTC instant of stored Unix microseconds.
pub(crate) fn from_micros(us: i64, column: &'static str) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|_range| Error::Corrupt(column))
}

/// A CRL number as stored (BIGINT). Numbers above `i64::MAX` cannot be stored.
pub(crate) fn crl_number_to_db(n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_overflow| Error::Corrupt("crls.number"))
}

/// A stored CRL number; negative values are corrupt.
pub(crate) fn crl_number_from_db(n: i64, column: &'static str) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_negative| Error::Corrupt(column))
}

/// An SQL `LIMIT` from the API's `u32`.
pub(crate) fn limit(n: u32) -> i64 {
    i64::from(n)
}

/// Whether `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Maps a unique violation to [`Error::Conflict`] naming `what`, a foreign-key violation to
/// [`Error::NotFound`] naming `parent`, and anything else to [`Error::Database`].
pub(crate) fn classify(e: sqlx::Error, what: impl FnOnce() -> String) -> Error {
    if is_unique_violation(&e) {
        Error::Conflict(what())
    } else {
        Error::Database(e)
    }
}

/// Like [`classify`], and a foreign-key violation becomes [`Error::NotFound`] of `parent`.
pub(crate) fn classify_fk(
    e: sqlx::Error,
    what: impl FnOnce() -> String,
    parent: impl FnOnce() -> String,
) -> Error {
    let fk = e
        .as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation());
    if fk {
        Error::NotFound(parent())
    } else {
        classify(e, what)
    }
}

/// Typed column access for the rows of both back ends.
pub(crate) trait RowExt {
    /// A non-null text column.
    fn text(&self, col: &'static str) -> Result<String, Error>;
    /// A nullable text column.
    fn opt_text(&self, col: &'static str) -> Result<Option<String>, Error>;
    /// A non-null BIGINT column.
    fn int(&self, col: &'static str) -> Result<i64, Error>;
    /// A nullable BIGINT column.
    fn opt_int(&self, col: &'static str) -> Result<Option<i64>, Error>;
    /// A non-null BLOB/BYTEA column.
    fn bytes(&self, col: &'static str) -> Result<Vec<u8>, Error>;
    /// A non-null BOOLEAN column.
    fn boolean(&self, col: &'static str) -> Result<bool, Error>;

    /// A non-null timestamp column.
    fn ts(&self, col: &'static str) -> Result<OffsetDateTime, Error> {
        from_micros(self.int(col)?, col)
    }
    /// A nullable timestamp column.
    fn opt_ts(&self, col: &'static str) -> Result<Option<OffsetDateTime>, Error> {
        self.opt_int(col)?
            .map(|us| from_micros(us, col))
            .transpose()
    }
}

impl<R> RowExt for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database>,
    for<'r> i64: Decode<'r, R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database>,
    for<'r> bool: Decode<'r, R::Database>,
    String: Type<R::Database>,
    i64: Type<R::Database>,
    Vec<u8>: Type<R::Database>,
    bool: Type<R::Database>,
{
    fn text(&self, col: &'static str) -> Result<String, Error> {
        self.try_get(col).map_err(Error::Database)
    }
    fn opt_text(&self, col: &'static str) -> Result<Option<String>, Error> {
        self.try_get(col).map_err(Error::Database)
    }
    fn int(&self, col: &'static str) -> Result<i64, Error> {
        self.try_get(col).map_err(Error::Database)
    }
    fn opt_int(&self, col: &'static str) -> Result<Option<i64>, Error> {
        self.try_get(col).map_err(Error::Database)
    }
    fn bytes(&self, col: &'static str) -> Result<Vec<u8>, Error> {
        self.try_get(col).map_err(Error::Database)
    }
    fn boolean(&self, col: &'static str) -> Result<bool, Error> {
        self.try_get(col).map_err(Error::Database)
    }
}

/// A `devices` row.
pub(crate) fn device(row: &impl RowExt) -> Result<Device, Error> {
    Ok(Device {
        id: row.text("id")?,
        state: DeviceState::parse(&row.text("state")?).ok_or(Error::Corrupt("devices.state"))?,
        policy: ConnectionPolicy::parse(&row.text("policy")?)
            .ok_or(Error::Corrupt("devices.policy"))?,
        token_hash: row.opt_text("token_hash")?,
        ca_name: row.text("ca_name")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
        factory: match row.opt_text("hw_serial")? {
            Some(serial) => Some(FactoryInfo {
                serial,
                mac: row.opt_text("mac")?,
                model: row.opt_text("model")?,
            }),
            None => None,
        },
        stage: Stage::parse(&row.text("stage")?).ok_or(Error::Corrupt("devices.stage"))?,
        owner: row.opt_text("owner")?,
        status_reason: row.opt_text("status_reason")?,
    })
}

/// An `allowlist` row.
pub(crate) fn allowlist_entry(row: &impl RowExt) -> Result<AllowlistEntry, Error> {
    Ok(AllowlistEntry {
        factory: FactoryInfo {
            serial: row.text("serial")?,
            mac: row.opt_text("mac")?,
            model: row.opt_text("model")?,
        },
        added_at: row.ts("added_at")?,
        enrolled_at: row.opt_ts("enrolled_at")?,
        device_id: row.opt_text("device_id")?,
        retired_at: row.opt_ts("retired_at")?,
    })
}

/// The `station_*` columns of [`crate::sql::STATION_CERT`]: None without a station.
pub(crate) fn joined_station(row: &impl RowExt) -> Result<Option<Station>, Error> {
    let Some(name) = row.opt_text("station_name")? else {
        return Ok(None);
    };
    Ok(Some(Station {
        name,
        cert_serial: row.opt_text("station_cert_serial")?,
        token_hash: row.opt_text("station_token_hash")?,
        created_at: row.ts("station_created_at")?,
    }))
}

/// A `stations` row.
pub(crate) fn station(row: &impl RowExt) -> Result<Station, Error> {
    Ok(Station {
        name: row.text("name")?,
        cert_serial: row.opt_text("cert_serial")?,
        token_hash: row.opt_text("token_hash")?,
        created_at: row.ts("created_at")?,
    })
}

/// A `certificates` row.
pub(crate) fn cert(row: &impl RowExt) -> Result<CertRecord, Error> {
    Ok(CertRecord {
        serial: row.text("serial")?,
        ca_name: row.text("ca_name")?,
        device_id: row.opt_text("device_id")?,
        subject: row.text("subject")?,
        not_before: row.ts("not_before")?,
        not_after: row.ts("not_after")?,
        fingerprint: row.text("fingerprint")?,
        spki_sha256: row.text("spki_sha256")?,
        source: CertSource::parse(&row.text("source")?)
            .ok_or(Error::Corrupt("certificates.source"))?,
        der: row.bytes("der")?,
        created_at: row.ts("created_at")?,
        revoked_at: row.opt_ts("revoked_at")?,
        revocation_reason: row.opt_text("revocation_reason")?,
        retire_at: row.opt_ts("retire_at")?,
    })
}

/// A revoked `certificates` row: `serial, revoked_at, revocation_reason`.
pub(crate) fn revoked(row: &impl RowExt) -> Result<RevokedCert, Error> {
    Ok(RevokedCert {
        serial: row.text("serial")?,
        revoked_at: row.ts("revoked_at")?,
        reason: row
            .opt_text("revocation_reason")?
            .ok_or(Error::Corrupt("certificates.revocation_reason"))?,
    })
}

/// A `cas` row.
pub(crate) fn ca(row: &impl RowExt) -> Result<CaRecord, Error> {
    Ok(CaRecord {
        name: row.text("name")?,
        kind: CaKind::parse(&row.text("kind")?).ok_or(Error::Corrupt("cas.kind"))?,
        cert_der: row.bytes("cert_der")?,
        key_ref: row.opt_text("key_ref")?,
        identity_rule: row.text("identity_rule")?,
        auto_register: row.boolean("auto_register")?,
        fingerprint: row.text("fingerprint")?,
        created_at: row.ts("created_at")?,
    })
}

/// A `crls` row.
pub(crate) fn crl(row: &impl RowExt) -> Result<CrlRecord, Error> {
    Ok(CrlRecord {
        ca_name: row.text("ca_name")?,
        number: crl_number_from_db(row.int("number")?, "crls.number")?,
        der: row.bytes("der")?,
        this_update: row.ts("this_update")?,
        next_update: row.ts("next_update")?,
    })
}

/// An `audit_log` row.
pub(crate) fn audit(row: &impl RowExt) -> Result<AuditEntry, Error> {
    Ok(AuditEntry {
        id: row.int("id")?,
        at: row.ts("at")?,
        actor: row.text("actor")?,
        action: row.text("action")?,
        target: row.opt_text("target")?,
        outcome: row.text("outcome")?,
        detail: row.opt_text("detail")?,
    })
}

/// Filter lists are stored one filter per line (MQTT filters cannot contain a newline).
pub(crate) fn join_filters(f: &[String]) -> String {
    f.join("\n")
}

fn split_filters(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// An `acl_policies` row.
pub(crate) fn acl_policy(row: &impl RowExt) -> Result<AclPolicy, Error> {
    Ok(AclPolicy {
        name: row.text("name")?,
        publish: split_filters(&row.text("publish")?),
        subscribe: split_filters(&row.text("subscribe")?),
        created_at: row.ts("created_at")?,
    })
}

/// An `identity_access` row.
pub(crate) fn identity_access(row: &impl RowExt) -> Result<IdentityAccess, Error> {
    Ok(IdentityAccess {
        device_id: row.text("device_id")?,
        kind: IdentityKind::parse(&row.text("kind")?)
            .ok_or(Error::Corrupt("identity_access.kind"))?,
        group: row.opt_text("group_name")?,
        policy: row.opt_text("policy")?,
    })
}

/// An `mqtt_queue` row.
pub(crate) fn mqtt_queued(r: &impl RowExt) -> Result<crate::MqttQueued, Error> {
    Ok(crate::MqttQueued {
        client_id: r.text("client_id")?,
        seq: u64::try_from(r.int("seq")?)
            .map_err(|_| Error::Corrupt("mqtt_queue.seq out of range"))?,
        packet_id: r
            .opt_int("packet_id")?
            .map(|p| {
                u16::try_from(p).map_err(|_| Error::Corrupt("mqtt_queue.packet_id out of range"))
            })
            .transpose()?,
        released: r.boolean("released")?,
        value: r.bytes("value")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn micros_round_trip() {
        for t in [
            datetime!(1970-01-01 0:00 UTC),
            datetime!(2025-06-30 12:34:56.789012 UTC),
            datetime!(1900-02-03 4:05:06.000007 UTC),
            datetime!(9999-12-31 23:59:59.999999 UTC),
        ] {
            assert_eq!(from_micros(micros(t), "t").ok(), Some(t));
        }
    }

    #[test]
    fn micros_of_other_offsets_is_the_same_instant() {
        let utc = datetime!(2025-01-01 10:00 UTC);
        let plus2 = datetime!(2025-01-01 12:00 +2);
        assert_eq!(micros(utc), micros(plus2));
    }

    #[test]
    fn out_of_range_is_corrupt() {
        assert!(matches!(
            from_micros(i64::MAX, "x"),
            Err(Error::Corrupt("x"))
        ));
        assert!(matches!(
            crl_number_from_db(-1, "n"),
            Err(Error::Corrupt("n"))
        ));
        assert!(matches!(crl_number_to_db(u64::MAX), Err(Error::Corrupt(_))));
    }
}
