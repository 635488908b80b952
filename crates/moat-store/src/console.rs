//! Reads and writes for the web console (migration `0010_console`): the device list with
//! what one row shows (certificate expiry, firmware version, last seen), device presence,
//! and the audit search. A supertrait of [`Store`](crate::Store), like
//! [`PostureStore`](crate::PostureStore).
//!
//! Cost, for a fleet of 10,000 devices: a device page is two statements, the page and its
//! count. The page is chosen first (the `devices` primary key in id order, or `devices_state`
//! when filtered by state) and only its rows are joined: inventory and presence by primary
//! key, the certificate expiry from `certificates_device_not_after`. A text search reads
//! every device row (a substring match cannot use a B-tree index), which at this size is a
//! few milliseconds. The audit search walks `audit_log_target` or `audit_log_actor` when it
//! is given a target or an actor, and the log itself newest first otherwise.

use crate::codec::RowExt;
use crate::{AuditEntry, Device, DeviceState, Error};
use async_trait::async_trait;
use time::OffsetDateTime;

/// Which devices a console page lists. The default lists them all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceQuery {
    /// Case-insensitive (ASCII) substring of the id, factory serial, owner or model. `%`,
    /// `_` and `\` are matched as themselves. None or empty: any device.
    pub text: Option<String>,
    /// Only devices in this state.
    pub state: Option<DeviceState>,
}

/// A device with what its row in the console shows beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRow {
    /// The device.
    pub device: Device,
    /// The latest `not_after` among its unrevoked certificates (expired ones included): when
    /// it stops being able to connect unless it renews. None: it has no live certificate.
    pub cert_expires: Option<OffsetDateTime>,
    /// The firmware version it last reported (`ota_inventory`), if any.
    pub firmware_version: Option<String>,
    /// Its last accepted MQTT CONNECT as recorded (at most every few minutes per hub node),
    /// None if it never connected since presence was recorded.
    pub last_seen: Option<OffsetDateTime>,
}

/// One page of the device list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevicePage {
    /// The devices of the page, by id.
    pub rows: Vec<DeviceRow>,
    /// How many devices match the query (on every page).
    pub total: u64,
}

/// Which audit entries a search returns. The default returns them all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exactly this actor (`admin`, `operator:NAME`, `device:ID`, `system`, …).
    pub actor: Option<String>,
    /// Actions starting with this, case-sensitive (`device.` matches `device.create`).
    pub action: Option<String>,
    /// Exactly this target (a device id, a serial, a CA name).
    pub target: Option<String>,
    /// Exactly this outcome: `ok`, `error` or `refused`.
    pub outcome: Option<String>,
}

/// Console reads and presence. A device page reads its rows and its count one after the
/// other, not in one snapshot: a device created in between may be counted and not listed.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// The devices matching `q`, ordered by id, skipping `offset`, at most `limit`, and how
    /// many match in all.
    async fn device_page(
        &self,
        q: &DeviceQuery,
        offset: u64,
        limit: u32,
    ) -> Result<DevicePage, Error>;
    /// Records that the device was seen at `at`; an earlier time than the one stored changes
    /// nothing (so hub nodes with skewed clocks or late writes never move it back). An
    /// unknown (or deleted) device is not an error: nothing is written.
    async fn touch_presence(&self, device_id: &str, at: OffsetDateTime) -> Result<(), Error>;
    /// Audit entries matching `f`, newest first, with id < `before` if given, at most `limit`.
    async fn audit_search(
        &self,
        f: &AuditFilter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, Error>;
}

/// The statements (portable; see [`crate::sql`]). Parameters keep one numbering within a
/// family, so one binding code serves each variant.
pub(crate) mod sql {
    use crate::sql::{audit_cols, device_cols};

    /// `$1`: a `LIKE` pattern of lowercase text ([`super::like_pattern`]) or NULL.
    macro_rules! text_match {
        () => {
            "($1 IS NULL OR LOWER(id) LIKE $1 ESCAPE '\\' OR LOWER(hw_serial) LIKE $1 ESCAPE '\\' \
             OR LOWER(owner) LIKE $1 ESCAPE '\\' OR LOWER(model) LIKE $1 ESCAPE '\\')"
        };
    }

    /// The page of devices (the subquery, which alone reads `devices`) joined to what each
    /// row shows. `d.*` is `device_cols!()`.
    macro_rules! device_page {
        ($filter:expr, $paging:literal) => {
            concat!(
                "SELECT d.*, (SELECT MAX(c.not_after) FROM certificates c \
                 WHERE c.device_id = d.id AND c.revoked_at IS NULL) AS cert_expires, \
                 i.version AS firmware_version, p.last_seen_at AS last_seen FROM (SELECT ",
                device_cols!(),
                " FROM devices WHERE ",
                $filter,
                " ORDER BY id ",
                $paging,
                ") d LEFT JOIN ota_inventory i ON i.device_id = d.id \
                 LEFT JOIN device_presence p ON p.device_id = d.id ORDER BY d.id"
            )
        };
    }

    /// `$1` pattern, `$2` limit, `$3` offset.
    pub(crate) const DEVICE_PAGE: &str = device_page!(text_match!(), "LIMIT $2 OFFSET $3");
    /// `$1` pattern, `$2` state, `$3` limit, `$4` offset (over `devices_state`).
    pub(crate) const DEVICE_PAGE_OF_STATE: &str = device_page!(
        concat!("state = $2 AND ", text_match!()),
        "LIMIT $3 OFFSET $4"
    );
    pub(crate) const DEVICE_COUNT: &str =
        concat!("SELECT COUNT(*) AS n FROM devices WHERE ", text_match!());
    pub(crate) const DEVICE_COUNT_OF_STATE: &str = concat!(
        "SELECT COUNT(*) AS n FROM devices WHERE state = $2 AND ",
        text_match!()
    );

    /// Only for a device that exists (an unknown id inserts nothing; the `WHERE` also
    /// settles SQLite's parsing of `INSERT … SELECT … ON CONFLICT`); never moves back.
    pub(crate) const TOUCH_PRESENCE: &str = "INSERT INTO device_presence \
         (device_id, last_seen_at) SELECT id, $2 FROM devices WHERE id = $1 \
         ON CONFLICT (device_id) DO UPDATE SET last_seen_at = excluded.last_seen_at \
         WHERE excluded.last_seen_at > device_presence.last_seen_at";

    /// `$1` actor, `$2` action prefix, `$3` target, `$4` outcome (each NULL for any), `$5`
    /// the id bound (exclusive), `$6` limit. The prefix is compared with `SUBSTR`, not `LIKE`:
    /// case-sensitive on both back ends and no wildcards to escape.
    macro_rules! audit_search {
        ($driver:literal) => {
            concat!(
                "SELECT ",
                audit_cols!(),
                " FROM audit_log WHERE ",
                $driver,
                "($1 IS NULL OR actor = $1) \
                 AND ($2 IS NULL OR SUBSTR(action, 1, LENGTH($2)) = $2) \
                 AND ($3 IS NULL OR target = $3) AND ($4 IS NULL OR outcome = $4) \
                 AND id < $5 ORDER BY id DESC LIMIT $6"
            )
        };
    }

    /// Over `audit_log_target`.
    pub(crate) const AUDIT_OF_TARGET: &str = audit_search!("target = $3 AND ");
    /// Over `audit_log_actor`.
    pub(crate) const AUDIT_OF_ACTOR: &str = audit_search!("actor = $1 AND ");
    /// Over the log, newest first.
    pub(crate) const AUDIT_ANY: &str = audit_search!("");
}

/// The `LIKE` pattern matching `text` anywhere, ASCII-lowercased (the columns are compared
/// through `LOWER`), with `%`, `_` and `\` escaped by `\`. None for no text.
pub(crate) fn like_pattern(text: Option<&str>) -> Option<String> {
    let text = text.filter(|t| !t.is_empty())?;
    let mut pattern = String::with_capacity(text.len() + 4);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c.to_ascii_lowercase());
    }
    pattern.push('%');
    Some(pattern)
}

/// An SQL `OFFSET` from the API's `u64` (beyond `i64::MAX` nothing is left anyway).
pub(crate) fn offset(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A row of [`sql::DEVICE_PAGE`].
pub(crate) fn device_row(row: &impl RowExt) -> Result<DeviceRow, Error> {
    Ok(DeviceRow {
        device: crate::codec::device(row)?,
        cert_expires: row.opt_ts("cert_expires")?,
        firmware_version: row.opt_text("firmware_version")?,
        last_seen: row.opt_ts("last_seen")?,
    })
}

/// The `n` of a `COUNT(*) AS n`.
pub(crate) fn count(row: &impl RowExt) -> Result<u64, Error> {
    u64::try_from(row.int("n")?).map_err(|_negative| Error::Corrupt("count"))
}

/// Implements [`ConsoleStore`] for `$store` (which has `pool` and `write`; see [`crate::writes`]).
macro_rules! impl_console_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::console::ConsoleStore for $store {
            async fn device_page(
                &self,
                q: &$crate::console::DeviceQuery,
                offset: u64,
                limit: u32,
            ) -> Result<$crate::console::DevicePage, Error> {
                use $crate::console::{self as console, sql as c};
                let pattern = console::like_pattern(q.text.as_deref());
                let (limit, offset) = (codec::limit(limit), console::offset(offset));
                let mut conn = self.pool.acquire().await.map_err(Error::Database)?;
                let (rows, total) = match q.state {
                    None => (
                        sqlx::query(c::DEVICE_PAGE)
                            .bind(&pattern)
                            .bind(limit)
                            .bind(offset)
                            .fetch_all(&mut *conn)
                            .await,
                        sqlx::query(c::DEVICE_COUNT)
                            .bind(&pattern)
                            .fetch_one(&mut *conn)
                            .await,
                    ),
                    Some(state) => (
                        sqlx::query(c::DEVICE_PAGE_OF_STATE)
                            .bind(&pattern)
                            .bind(state.as_str())
                            .bind(limit)
                            .bind(offset)
                            .fetch_all(&mut *conn)
                            .await,
                        sqlx::query(c::DEVICE_COUNT_OF_STATE)
                            .bind(&pattern)
                            .bind(state.as_str())
                            .fetch_one(&mut *conn)
                            .await,
                    ),
                };
                Ok($crate::console::DevicePage {
                    rows: rows
                        .map_err(Error::Database)?
                        .iter()
                        .map(console::device_row)
                        .collect::<Result<_, _>>()?,
                    total: console::count(&total.map_err(Error::Database)?)?,
                })
            }

            async fn touch_presence(
                &self,
                device_id: &str,
                at: OffsetDateTime,
            ) -> Result<(), Error> {
                let device_id = device_id.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query($crate::console::sql::TOUCH_PRESENCE)
                        .bind(&device_id)
                        .bind(micros(at))
                        .execute(&mut *conn)
                        .await;
                    match done {
                        Ok(_) => Ok(()),
                        // The device was deleted between the statement's read and its insert
                        // (PostgreSQL, another connection): as if it were unknown.
                        Err(e)
                            if e.as_database_error()
                                .is_some_and(|d| d.is_foreign_key_violation()) =>
                        {
                            Ok(())
                        }
                        Err(e) => Err(Error::Database(e)),
                    }
                })
            }

            async fn audit_search(
                &self,
                f: &$crate::console::AuditFilter,
                before: Option<i64>,
                limit: u32,
            ) -> Result<Vec<AuditEntry>, Error> {
                use $crate::console::sql as c;
                let statement = if f.target.is_some() {
                    c::AUDIT_OF_TARGET
                } else if f.actor.is_some() {
                    c::AUDIT_OF_ACTOR
                } else {
                    c::AUDIT_ANY
                };
                sqlx::query(statement)
                    .bind(&f.actor)
                    .bind(&f.action)
                    .bind(&f.target)
                    .bind(&f.outcome)
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(codec::limit(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(codec::audit)
                    .collect()
            }
        }
    };
}

pub(crate) use impl_console_store;

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_patterns_escape_wildcards_and_lowercase_ascii() {
        assert_eq!(like_pattern(None), None);
        assert_eq!(like_pattern(Some("")), None);
        assert_eq!(like_pattern(Some("AbC-1")).as_deref(), Some("%abc-1%"));
        assert_eq!(
            like_pattern(Some("50%_a\\b")).as_deref(),
            Some("%50\\%\\_a\\\\b%")
        );
        // Non-ASCII letters are kept as they are (LOWER of SQLite is ASCII only).
        assert_eq!(like_pattern(Some("ÉX")).as_deref(), Some("%Éx%"));
    }
}
