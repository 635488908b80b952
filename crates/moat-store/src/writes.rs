//! The writing operations, written once for both back ends, each on a connection.
//!
//! Each `*_on` function runs one [`Store`](crate::Store) write on a connection the caller
//! chose and leaves the transaction to it: PostgreSQL runs single statements on a pooled
//! connection and [`Store::create_device`](crate::Store::create_device) in a transaction;
//! SQLite runs every write in a savepoint of a group-commit batch
//! ([`crate::sqlite_writer`]). A failed `*_on` may have written part of its work: the caller
//! rolls back (to the savepoint) on error.
//!
//! No statement here is left failing inside a transaction that is then used again: a
//! PostgreSQL transaction refuses every query after a failed one.

use std::future::Future;
use std::pin::Pin;

/// The future of a write running on a borrowed connection.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether a write must run in a transaction of its own where writes are not batched
/// (PostgreSQL): only when it runs more than one writing statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tx {
    /// Several writing statements: all or none.
    Needed,
    /// One writing statement (perhaps followed by reads): atomic by itself.
    NotNeeded,
}

/// Runs `$call` (an `async` call on `$conn`, whose arguments the closure owns) through the
/// store's `write`: `write_op!(self, Tx::NotNeeded, |conn| Self::delete_ca_on(conn, &name))`.
macro_rules! write_op {
    ($self:ident, $tx:expr, |$conn:ident| $call:expr) => {
        $self
            .write($tx, move |$conn| Box::pin(async move { $call.await }))
            .await
    };
}

/// Implements the `*_on` write functions for `$store`, whose connections are `$conn`.
/// What differs between the back ends in the write paths.
pub(crate) trait Backend {
    /// Run first in the transaction of a batch of MQTT writes. Every statement of such a
    /// batch is a lookup by key, but `mqtt_queue` churns faster than PostgreSQL's statistics
    /// follow (rows queued and deleted within seconds, autovacuum a minute behind): planned
    /// on stale estimates, the multi-row deletes became hash joins over a sequential scan of
    /// the table and its dead rows, 15 ms each. Key lookups must use the keys.
    const MQTT_BATCH_PRELUDE: Option<&'static str>;
}

impl Backend for sqlx::PgConnection {
    const MQTT_BATCH_PRELUDE: Option<&'static str> = Some("SET LOCAL enable_seqscan = off");
}

impl Backend for sqlx::SqliteConnection {
    const MQTT_BATCH_PRELUDE: Option<&'static str> = None;
}

macro_rules! impl_writes {
    ($store:ty, $conn:ty) => {
        impl $store {
            pub(crate) async fn create_device_on(
                conn: &mut $conn,
                d: &Device,
                cert: Option<&CertRecord>,
            ) -> Result<(), Error> {
                sqlx::query(sql::INSERT_DEVICE)
                    .bind(&d.id)
                    .bind(d.state.as_str())
                    .bind(d.policy.as_str())
                    .bind(&d.token_hash)
                    .bind(&d.ca_name)
                    .bind(micros(d.created_at))
                    .bind(micros(d.updated_at))
                    .bind(d.factory.as_ref().map(|f| f.serial.as_str()))
                    .bind(d.factory.as_ref().and_then(|f| f.mac.as_deref()))
                    .bind(d.factory.as_ref().and_then(|f| f.model.as_deref()))
                    .bind(d.stage.as_str())
                    .bind(&d.owner)
                    .bind(&d.status_reason)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| classify(e, || format!("device {}", d.id)))?;
                match cert {
                    Some(c) => Self::insert_cert_on(conn, c).await,
                    None => Ok(()),
                }
            }

            /// Inserts a certificate row; on a taken serial or fingerprint, says which.
            pub(crate) async fn insert_cert_on(
                conn: &mut $conn,
                c: &CertRecord,
            ) -> Result<(), Error> {
                let done = sqlx::query(sql::INSERT_CERT)
                    .bind(&c.serial)
                    .bind(&c.ca_name)
                    .bind(&c.device_id)
                    .bind(&c.subject)
                    .bind(micros(c.not_before))
                    .bind(micros(c.not_after))
                    .bind(&c.fingerprint)
                    .bind(&c.spki_sha256)
                    .bind(c.source.as_str())
                    .bind(&c.der)
                    .bind(micros(c.created_at))
                    .bind(c.revoked_at.map(micros))
                    .bind(&c.revocation_reason)
                    .bind(c.retire_at.map(micros))
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() > 0 {
                    return Ok(());
                }
                let serial_taken = sqlx::query(sql::CERT_SERIAL_TAKEN)
                    .bind(&c.serial)
                    .bind(&c.ca_name)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                Err(Error::Conflict(match serial_taken {
                    Some(_) => format!("certificate serial {} of CA {}", c.serial, c.ca_name),
                    None => format!("certificate fingerprint {}", c.fingerprint),
                }))
            }

            pub(crate) async fn set_device_state_on(
                conn: &mut $conn,
                id: &str,
                state: DeviceState,
                at: OffsetDateTime,
            ) -> Result<(), Error> {
                let done = sqlx::query(sql::SET_DEVICE_STATE)
                    .bind(state.as_str())
                    .bind(micros(at))
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("device {id}")));
                }
                Ok(())
            }

            pub(crate) async fn delete_device_on(conn: &mut $conn, id: &str) -> Result<(), Error> {
                let done = sqlx::query(sql::DELETE_DEVICE)
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("device {id}")));
                }
                Ok(())
            }

            pub(crate) async fn revoke_cert_on(
                conn: &mut $conn,
                serial: &str,
                reason: &str,
                at: OffsetDateTime,
            ) -> Result<bool, Error> {
                // The certificate `cert(serial)` returns: the newest with this serial.
                let done = sqlx::query(sql::REVOKE_CERT)
                    .bind(micros(at))
                    .bind(reason)
                    .bind(serial)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() > 0 {
                    return Ok(true);
                }
                let exists = sqlx::query(sql::CERT_EXISTS)
                    .bind(serial)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                match exists {
                    Some(_) => Ok(false),
                    None => Err(Error::NotFound(format!("certificate serial {serial}"))),
                }
            }

            pub(crate) async fn revoke_device_certs_on(
                conn: &mut $conn,
                device_id: &str,
                reason: &str,
                at: OffsetDateTime,
            ) -> Result<Vec<(String, String)>, Error> {
                let rows = sqlx::query(sql::REVOKE_DEVICE_CERTS)
                    .bind(micros(at))
                    .bind(reason)
                    .bind(device_id)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                let mut revoked = rows
                    .iter()
                    .map(|r| Ok((r.text("ca_name")?, r.text("serial")?)))
                    .collect::<Result<Vec<_>, Error>>()?;
                revoked.sort();
                Ok(revoked)
            }

            pub(crate) async fn insert_ca_on(conn: &mut $conn, ca: &CaRecord) -> Result<(), Error> {
                sqlx::query(sql::INSERT_CA)
                    .bind(&ca.name)
                    .bind(ca.kind.as_str())
                    .bind(&ca.cert_der)
                    .bind(&ca.key_ref)
                    .bind(&ca.identity_rule)
                    .bind(ca.auto_register)
                    .bind(&ca.fingerprint)
                    .bind(micros(ca.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        classify(e, || {
                            format!("CA {} (or its fingerprint {})", ca.name, ca.fingerprint)
                        })
                    })
                    .map(drop)
            }

            pub(crate) async fn delete_ca_on(conn: &mut $conn, name: &str) -> Result<(), Error> {
                let done = sqlx::query(sql::DELETE_CA)
                    .bind(name)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("CA {name}")));
                }
                Ok(())
            }

            pub(crate) async fn next_crl_number_on(
                conn: &mut $conn,
                ca_name: &str,
            ) -> Result<u64, Error> {
                let row = sqlx::query(sql::NEXT_CRL_NUMBER)
                    .bind(ca_name)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Error::Database)?
                    .ok_or_else(|| Error::NotFound(format!("CA {ca_name}")))?;
                crl_number_from_db(row.int("crl_number")?, "cas.crl_number")
            }

            pub(crate) async fn save_crl_on(
                conn: &mut $conn,
                crl: &CrlRecord,
            ) -> Result<(), Error> {
                sqlx::query(sql::SAVE_CRL)
                    .bind(&crl.ca_name)
                    .bind(crl_number_to_db(crl.number)?)
                    .bind(&crl.der)
                    .bind(micros(crl.this_update))
                    .bind(micros(crl.next_update))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        classify_fk(
                            e,
                            || format!("CRL of CA {}", crl.ca_name),
                            || format!("CA {}", crl.ca_name),
                        )
                    })
                    .map(drop)
            }

            pub(crate) async fn insert_registration_code_on(
                conn: &mut $conn,
                code_hash: &str,
                created_at: OffsetDateTime,
                expires_at: OffsetDateTime,
            ) -> Result<(), Error> {
                sqlx::query(sql::INSERT_CODE)
                    .bind(code_hash)
                    .bind(micros(created_at))
                    .bind(micros(expires_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| classify(e, || "registration code".to_owned()))
                    .map(drop)
            }

            pub(crate) async fn consume_registration_code_on(
                conn: &mut $conn,
                code_hash: &str,
                now: OffsetDateTime,
            ) -> Result<bool, Error> {
                let done = sqlx::query(sql::CONSUME_CODE)
                    .bind(micros(now))
                    .bind(code_hash)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                Ok(done.rows_affected() == 1)
            }

            pub(crate) async fn put_setting_on(
                conn: &mut $conn,
                key: &str,
                value: &str,
            ) -> Result<(), Error> {
                sqlx::query(sql::PUT_SETTING)
                    .bind(key)
                    .bind(value)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)
                    .map(drop)
            }

            pub(crate) async fn put_acl_policy_on(
                conn: &mut $conn,
                p: &AclPolicy,
            ) -> Result<(), Error> {
                sqlx::query(sql::PUT_ACL_POLICY)
                    .bind(&p.name)
                    .bind(codec::join_filters(&p.publish))
                    .bind(codec::join_filters(&p.subscribe))
                    .bind(micros(p.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)
                    .map(drop)
            }

            pub(crate) async fn delete_acl_policy_on(
                conn: &mut $conn,
                name: &str,
            ) -> Result<(), Error> {
                let done = sqlx::query(sql::DELETE_ACL_POLICY)
                    .bind(name)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("ACL policy {name}")));
                }
                Ok(())
            }

            pub(crate) async fn set_group_policy_on(
                conn: &mut $conn,
                group: &str,
                policy: Option<&str>,
            ) -> Result<(), Error> {
                let q = match policy {
                    Some(p) => sqlx::query(sql::PUT_GROUP_POLICY).bind(group).bind(p),
                    None => sqlx::query(sql::DELETE_GROUP_POLICY).bind(group),
                };
                q.execute(&mut *conn)
                    .await
                    .map_err(Error::Database)
                    .map(drop)
            }

            pub(crate) async fn put_identity_access_on(
                conn: &mut $conn,
                a: &IdentityAccess,
            ) -> Result<(), Error> {
                sqlx::query(sql::PUT_IDENTITY_ACCESS)
                    .bind(&a.device_id)
                    .bind(a.kind.as_str())
                    .bind(&a.group)
                    .bind(&a.policy)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)
                    .map(drop)
            }

            pub(crate) async fn append_audit_on(
                conn: &mut $conn,
                e: &NewAuditEntry,
            ) -> Result<i64, Error> {
                let row = sqlx::query(sql::APPEND_AUDIT)
                    .bind(micros(e.at))
                    .bind(&e.actor)
                    .bind(&e.action)
                    .bind(&e.target)
                    .bind(&e.outcome)
                    .bind(&e.detail)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                row.int("id")
            }

            pub(crate) async fn put_mqtt_retained_on(
                conn: &mut $conn,
                topic: &str,
                value: &[u8],
            ) -> Result<(), Error> {
                sqlx::query(sql::PUT_MQTT_RETAINED)
                    .bind(topic)
                    .bind(value)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)
                    .map(drop)
            }

            pub(crate) async fn delete_mqtt_retained_on(
                conn: &mut $conn,
                topic: &str,
            ) -> Result<(), Error> {
                sqlx::query(sql::DELETE_MQTT_RETAINED)
                    .bind(topic)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)
                    .map(drop)
            }

            pub(crate) async fn put_mqtt_session_on(
                conn: &mut $conn,
                client_id: &str,
                value: &[u8],
                expires_at: Option<OffsetDateTime>,
            ) -> Result<(), Error> {
                sqlx::query(sql::PUT_MQTT_SESSION)
                    .bind(client_id)
                    .bind(value)
                    .bind(expires_at.map(micros))
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)
                    .map(drop)
            }

            pub(crate) async fn delete_mqtt_session_on(
                conn: &mut $conn,
                client_id: &str,
            ) -> Result<(), Error> {
                sqlx::query(sql::DELETE_MQTT_SESSION)
                    .bind(client_id)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)
                    .map(drop)
            }

            /// Inserts every entry; the first serial already listed fails the whole write.
            pub(crate) async fn add_allowlist_on(
                conn: &mut $conn,
                entries: &[AllowlistEntry],
            ) -> Result<(), Error> {
                for e in entries {
                    sqlx::query(sql::INSERT_ALLOWLIST)
                        .bind(&e.factory.serial)
                        .bind(&e.factory.mac)
                        .bind(&e.factory.model)
                        .bind(micros(e.added_at))
                        .bind(e.enrolled_at.map(micros))
                        .bind(&e.device_id)
                        .bind(e.retired_at.map(micros))
                        .execute(&mut *conn)
                        .await
                        .map_err(|err| {
                            classify(err, || format!("allow-list serial {}", e.factory.serial))
                        })?;
                }
                Ok(())
            }

            pub(crate) async fn reset_allowlist_on(
                conn: &mut $conn,
                serial: &str,
            ) -> Result<bool, Error> {
                let done = sqlx::query(sql::RESET_ALLOWLIST)
                    .bind(serial)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() > 0 {
                    return Ok(true);
                }
                Self::allowlisted_on(conn, serial).await?;
                Ok(false)
            }

            /// [`Error::NotFound`] unless `serial` is on the allow-list.
            async fn allowlisted_on(conn: &mut $conn, serial: &str) -> Result<(), Error> {
                let exists = sqlx::query(sql::ALLOWLIST_EXISTS)
                    .bind(serial)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                match exists {
                    Some(_) => Ok(()),
                    None => Err(Error::NotFound(format!("allow-list serial {serial}"))),
                }
            }

            /// Writes one [`Issuance`](crate::Issuance): claims the allow-listed serial (if
            /// any), creates or updates the device, records the certificates, sets the retire
            /// date of those superseded, applies a provisioning and appends the audit entry.
            /// Returns the assignment of a provisioning. The caller rolls back on error.
            pub(crate) async fn issue_on(
                conn: &mut $conn,
                i: &$crate::Issuance,
            ) -> Result<Option<$crate::Assignment>, Error> {
                let at = i.audit.at;
                if let Some(serial) = &i.claim_serial {
                    let claimed = sqlx::query(sql::CLAIM_ALLOWLIST)
                        .bind(micros(at))
                        .bind(&i.device.id)
                        .bind(serial)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if claimed.rows_affected() == 0 {
                        Self::allowlisted_on(conn, serial).await?;
                        return Err(Error::Conflict(format!(
                            "enrollment of serial {serial} (already enrolled)"
                        )));
                    }
                }
                if i.create_device {
                    Self::create_device_on(conn, &i.device, None).await?;
                }
                if let Some(p) = &i.provisioning {
                    let updated = sqlx::query($crate::provisioning::sql::SET_POLICY)
                        .bind(&i.device.id)
                        .bind(p.policy.as_str())
                        .bind(micros(at))
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if updated.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("device {}", i.device.id)));
                    }
                }
                for cert in &i.certs {
                    Self::insert_cert_on(conn, cert).await?;
                }
                if let (Some(s), Some(cert)) = (&i.supersede, i.certs.last()) {
                    for serial in &s.serials {
                        sqlx::query($crate::lifecycle::sql::SET_RETIRE_AT)
                            .bind(micros(s.retire_at))
                            .bind(serial)
                            .bind(&cert.ca_name)
                            .execute(&mut *conn)
                            .await
                            .map_err(Error::Database)?;
                    }
                }
                let mut assignment = None;
                if let Some(p) = &i.provisioning {
                    if let Some(a) = &p.access {
                        Self::put_identity_access_on(conn, a).await?;
                    }
                    let a = &p.assignment;
                    sqlx::query($crate::provisioning::sql::UPSERT_ASSIGNMENT)
                        .bind(&a.device_id)
                        .bind(&a.hub)
                        .bind(&a.enrollment_group)
                        .bind(micros(a.provisioned_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    let row = sqlx::query($crate::provisioning::sql::ASSIGNMENT)
                        .bind(&a.device_id)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    assignment = Some($crate::provisioning::assignment(&row)?);
                }
                Self::append_audit_on(conn, &i.audit).await?;
                Ok(assignment)
            }

            pub(crate) async fn create_station_on(
                conn: &mut $conn,
                st: &Station,
                cert: Option<&CertRecord>,
            ) -> Result<(), Error> {
                sqlx::query(sql::INSERT_STATION)
                    .bind(&st.name)
                    .bind(&st.cert_serial)
                    .bind(&st.token_hash)
                    .bind(micros(st.created_at))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| classify(e, || format!("station {}", st.name)))?;
                match cert {
                    Some(c) => Self::insert_cert_on(conn, c).await,
                    None => Ok(()),
                }
            }

            pub(crate) async fn delete_station_on(
                conn: &mut $conn,
                name: &str,
            ) -> Result<(), Error> {
                let done = sqlx::query(sql::DELETE_STATION)
                    .bind(name)
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("station {name}")));
                }
                Ok(())
            }

            /// Applies the writes as if in order (the caller's transaction makes them one),
            /// with few statements ([`crate::mqtt_batch`]).
            pub(crate) async fn write_mqtt_on(
                conn: &mut $conn,
                writes: &[MqttWrite],
            ) -> Result<(), Error> {
                use crate::mqtt_batch::{CHUNK, rounds, sql as q};
                if let Some(prelude) = <$conn as crate::writes::Backend>::MQTT_BATCH_PRELUDE {
                    sqlx::query(prelude)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                }
                // Runs `stmt(rows)` over `rows` in chunks, binding each row with `bind`.
                macro_rules! each_chunk {
                    ($rows:expr, $stmt:path, |$query:ident, $row:ident| $bind:expr) => {
                        for chunk in $rows.chunks(CHUNK) {
                            // Built from numbered placeholders only; the values are bound.
                            let text = sqlx::AssertSqlSafe($stmt(chunk.len()));
                            let mut $query = sqlx::query(text).persistent(false);
                            for $row in chunk {
                                $query = $bind;
                            }
                            $query.execute(&mut *conn).await.map_err(Error::Database)?;
                        }
                    };
                }
                for r in rounds(writes) {
                    each_chunk!(r.removed, q::delete_queues, |qy, c| qy.bind(*c));
                    each_chunk!(r.removed, q::delete_sessions, |qy, c| qy.bind(*c));
                    each_chunk!(r.sessions, q::put_sessions, |qy, s| qy
                        .bind(s.0)
                        .bind(s.1)
                        .bind(s.2));
                    each_chunk!(r.queued, q::enqueue, |qy, m| qy
                        .bind(m.0)
                        .bind(m.1)
                        .bind(m.2));
                    each_chunk!(r.sent, q::sent, |qy, m| qy.bind(m.0).bind(m.1).bind(m.2));
                    each_chunk!(r.released, q::released, |qy, m| qy.bind(m.0).bind(m.1));
                    each_chunk!(r.acknowledged, q::acknowledged, |qy, m| qy
                        .bind(m.0)
                        .bind(m.1));
                    each_chunk!(r.dropped, q::dropped, |qy, m| qy.bind(m.0).bind(m.1));
                    let puts: Vec<(&str, &[u8])> = r
                        .retained
                        .iter()
                        .filter_map(|(t, v)| v.map(|v| (*t, v)))
                        .collect();
                    let dels: Vec<&str> = r
                        .retained
                        .iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(t, _)| *t)
                        .collect();
                    each_chunk!(puts, q::put_retained, |qy, t| qy.bind(t.0).bind(t.1));
                    each_chunk!(dels, q::delete_retained, |qy, t| qy.bind(*t));
                }
                Ok(())
            }

            pub(crate) async fn delete_expired_mqtt_sessions_on(
                conn: &mut $conn,
                now: OffsetDateTime,
            ) -> Result<u64, Error> {
                sqlx::query(sql::DELETE_EXPIRED_MQTT_QUEUES)
                    .bind(micros(now))
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                let done = sqlx::query(sql::DELETE_EXPIRED_MQTT_SESSIONS)
                    .bind(micros(now))
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::Database)?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use {impl_writes, write_op};
