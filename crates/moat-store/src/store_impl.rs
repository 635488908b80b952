//! The [`Store`](crate::Store) implementation, written once for both back ends.
//!
//! The statements are in [`crate::sql`]. A macro rather than generics over `sqlx::Database`: with concrete pools each back end keeps its own statement cache and
//! types, and the body needs none of the higher-ranked bounds generic sqlx code drags along.
//!
//! The store type given to the macro provides `pool` (its pool, for reads), `BACKEND` and
//! `write(tx, f)`, which runs the write `f` on one of its connections (PostgreSQL: in a
//! transaction if `tx` says so; SQLite: in a savepoint of a group-commit batch). The writes
//! themselves are in [`crate::writes`].

/// Implements [`Store`](crate::Store) for `$store`.
macro_rules! impl_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            // ── devices ──

            async fn create_device(
                &self,
                d: &Device,
                cert: Option<&CertRecord>,
            ) -> Result<(), Error> {
                let (d, cert) = (d.clone(), cert.cloned());
                // Two inserts with a certificate, one without.
                let tx = if cert.is_some() {
                    Tx::Needed
                } else {
                    Tx::NotNeeded
                };
                write_op!(self, tx, |conn| Self::create_device_on(
                    conn,
                    &d,
                    cert.as_ref()
                ))
            }

            async fn device(&self, id: &str) -> Result<Option<Device>, Error> {
                sqlx::query(sql::DEVICE)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| codec::device(&r))
                    .transpose()
            }

            async fn list_devices(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<Device>, Error> {
                let rows = match after {
                    Some(after) => {
                        sqlx::query(sql::DEVICES_AFTER)
                            .bind(after)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                    None => {
                        sqlx::query(sql::DEVICES_FIRST)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                }
                .map_err(Error::Database)?;
                rows.iter().map(codec::device).collect()
            }

            async fn set_device_state(
                &self,
                id: &str,
                state: DeviceState,
                at: OffsetDateTime,
            ) -> Result<(), Error> {
                let id = id.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| Self::set_device_state_on(
                    conn, &id, state, at
                ))
            }

            async fn delete_device(&self, id: &str) -> Result<(), Error> {
                let id = id.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| Self::delete_device_on(
                    conn, &id
                ))
            }

            // ── certificates ──

            async fn insert_cert(&self, c: &CertRecord) -> Result<(), Error> {
                let c = c.clone();
                write_op!(self, Tx::NotNeeded, |conn| Self::insert_cert_on(conn, &c))
            }

            async fn cert(&self, serial: &str) -> Result<Option<CertRecord>, Error> {
                sqlx::query(sql::CERT_BY_SERIAL)
                    .bind(serial)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| codec::cert(&r))
                    .transpose()
            }

            async fn cert_by_fingerprint(
                &self,
                fingerprint: &str,
            ) -> Result<Option<CertRecord>, Error> {
                sqlx::query(sql::CERT_BY_FINGERPRINT)
                    .bind(fingerprint)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| codec::cert(&r))
                    .transpose()
            }

            async fn list_certs(
                &self,
                device_id: Option<&str>,
                limit: u32,
            ) -> Result<Vec<CertRecord>, Error> {
                let rows = match device_id {
                    Some(device_id) => {
                        sqlx::query(sql::CERTS_OF_DEVICE)
                            .bind(device_id)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                    None => {
                        sqlx::query(sql::CERTS)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                }
                .map_err(Error::Database)?;
                rows.iter().map(codec::cert).collect()
            }

            async fn expiring_certs(
                &self,
                now: OffsetDateTime,
                until: OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<CertRecord>, Error> {
                sqlx::query(sql::CERTS_EXPIRING)
                    .bind(codec::micros(now))
                    .bind(codec::micros(until))
                    .bind(codec::limit(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(codec::cert)
                    .collect()
            }

            async fn revoke_cert(
                &self,
                serial: &str,
                reason: &str,
                at: OffsetDateTime,
            ) -> Result<bool, Error> {
                let (serial, reason) = (serial.to_owned(), reason.to_owned());
                write_op!(self, Tx::NotNeeded, |conn| Self::revoke_cert_on(
                    conn, &serial, &reason, at
                ))
            }

            async fn revoke_device_certs(
                &self,
                device_id: &str,
                reason: &str,
                at: OffsetDateTime,
            ) -> Result<Vec<(String, String)>, Error> {
                let (device_id, reason) = (device_id.to_owned(), reason.to_owned());
                write_op!(self, Tx::NotNeeded, |conn| Self::revoke_device_certs_on(
                    conn, &device_id, &reason, at
                ))
            }

            async fn revoked_certs(&self, ca_name: &str) -> Result<Vec<RevokedCert>, Error> {
                sqlx::query(sql::REVOKED_OF_CA)
                    .bind(ca_name)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(codec::revoked)
                    .collect()
            }

            async fn revoked_serials_page(
                &self,
                after: Option<(&str, &str)>,
                limit: u32,
            ) -> Result<Vec<(String, String)>, Error> {
                let (ca, serial) = after.unwrap_or(("", ""));
                sqlx::query(sql::REVOKED_SERIALS_PAGE)
                    .bind(ca)
                    .bind(serial)
                    .bind(codec::limit(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| Ok((r.text("ca_name")?, r.text("serial")?)))
                    .collect()
            }

            // ── certificate authorities ──

            async fn insert_ca(&self, ca: &CaRecord) -> Result<(), Error> {
                let ca = ca.clone();
                write_op!(self, Tx::NotNeeded, |conn| Self::insert_ca_on(conn, &ca))
            }

            async fn ca(&self, name: &str) -> Result<Option<CaRecord>, Error> {
                sqlx::query(sql::CA)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| codec::ca(&r))
                    .transpose()
            }

            async fn list_cas(&self) -> Result<Vec<CaRecord>, Error> {
                sqlx::query(sql::CAS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(codec::ca)
                    .collect()
            }

            async fn delete_ca(&self, name: &str) -> Result<(), Error> {
                let name = name.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| Self::delete_ca_on(conn, &name))
            }

            // ── CRLs ──

            async fn next_crl_number(&self, ca_name: &str) -> Result<u64, Error> {
                let ca_name = ca_name.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| Self::next_crl_number_on(
                    conn, &ca_name
                ))
            }

            async fn save_crl(&self, crl: &CrlRecord) -> Result<(), Error> {
                let crl = crl.clone();
                write_op!(self, Tx::NotNeeded, |conn| Self::save_crl_on(conn, &crl))
            }

            async fn latest_crl(&self, ca_name: &str) -> Result<Option<CrlRecord>, Error> {
                sqlx::query(sql::LATEST_CRL)
                    .bind(ca_name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| codec::crl(&r))
                    .transpose()
            }

            // ── CA registration codes ──

            async fn insert_registration_code(
                &self,
                code_hash: &str,
                created_at: OffsetDateTime,
                expires_at: OffsetDateTime,
            ) -> Result<(), Error> {
                let code_hash = code_hash.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| {
                    Self::insert_registration_code_on(conn, &code_hash, created_at, expires_at)
                })
            }

            async fn consume_registration_code(
                &self,
                code_hash: &str,
                now: OffsetDateTime,
            ) -> Result<bool, Error> {
                let code_hash = code_hash.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| {
                    Self::consume_registration_code_on(conn, &code_hash, now)
                })
            }

            async fn registration_code_usable(
                &self,
                code_hash: &str,
                now: OffsetDateTime,
            ) -> Result<bool, Error> {
                let row = sqlx::query(sql::CODE_USABLE)
                    .bind(code_hash)
                    .bind(micros(now))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                Ok(row.is_some())
            }

            // ── settings ──

            async fn setting(&self, key: &str) -> Result<Option<String>, Error> {
                sqlx::query(sql::SETTING)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| r.text("value"))
                    .transpose()
            }

            async fn put_setting(&self, key: &str, value: &str) -> Result<(), Error> {
                let (key, value) = (key.to_owned(), value.to_owned());
                write_op!(self, Tx::NotNeeded, |conn| Self::put_setting_on(
                    conn, &key, &value
                ))
            }

            // ── topic access ──

            async fn put_acl_policy(&self, p: &AclPolicy) -> Result<(), Error> {
                let p = p.clone();
                write_op!(self, Tx::NotNeeded, |conn| Self::put_acl_policy_on(
                    conn, &p
                ))
            }

            async fn acl_policies(&self) -> Result<Vec<AclPolicy>, Error> {
                let rows = sqlx::query(sql::ACL_POLICIES)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                rows.iter().map(codec::acl_policy).collect()
            }

            async fn delete_acl_policy(&self, name: &str) -> Result<(), Error> {
                let name = name.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| Self::delete_acl_policy_on(
                    conn, &name
                ))
            }

            async fn set_group_policy(
                &self,
                group: &str,
                policy: Option<&str>,
            ) -> Result<(), Error> {
                let (group, policy) = (group.to_owned(), policy.map(str::to_owned));
                write_op!(self, Tx::NotNeeded, |conn| Self::set_group_policy_on(
                    conn,
                    &group,
                    policy.as_deref()
                ))
            }

            async fn group_policy(&self, group: &str) -> Result<Option<String>, Error> {
                sqlx::query(sql::GROUP_POLICY)
                    .bind(group)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| r.text("policy"))
                    .transpose()
            }

            async fn put_identity_access(&self, a: &IdentityAccess) -> Result<(), Error> {
                let a = a.clone();
                write_op!(self, Tx::NotNeeded, |conn| Self::put_identity_access_on(
                    conn, &a
                ))
            }

            async fn identity_access(&self, id: &str) -> Result<Option<IdentityAccess>, Error> {
                sqlx::query(sql::IDENTITY_ACCESS)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| codec::identity_access(&r))
                    .transpose()
            }

            // ── audit ──

            async fn append_audit(&self, e: &NewAuditEntry) -> Result<i64, Error> {
                let e = e.clone();
                write_op!(self, Tx::NotNeeded, |conn| Self::append_audit_on(conn, &e))
            }

            async fn list_audit(
                &self,
                before: Option<i64>,
                limit: u32,
            ) -> Result<Vec<AuditEntry>, Error> {
                let rows = match before {
                    Some(before) => {
                        sqlx::query(sql::AUDIT_BEFORE)
                            .bind(before)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                    None => {
                        sqlx::query(sql::AUDIT_FIRST)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                }
                .map_err(Error::Database)?;
                rows.iter().map(codec::audit).collect()
            }

            // ── factory enrollment ──

            async fn add_allowlist(&self, entries: &[AllowlistEntry]) -> Result<(), Error> {
                let entries = entries.to_vec();
                write_op!(self, Tx::Needed, |conn| Self::add_allowlist_on(
                    conn, &entries
                ))
            }

            async fn allowlisted(&self, serials: &[String]) -> Result<Vec<String>, Error> {
                let mut conn = self.pool.acquire().await.map_err(Error::Database)?;
                let mut found = Vec::new();
                for serial in serials {
                    let row = sqlx::query(sql::ALLOWLIST_EXISTS)
                        .bind(serial)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if row.is_some() {
                        found.push(serial.clone());
                    }
                }
                Ok(found)
            }

            async fn allowlist_entry(&self, serial: &str) -> Result<Option<AllowlistEntry>, Error> {
                sqlx::query(sql::ALLOWLIST_ENTRY)
                    .bind(serial)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| codec::allowlist_entry(&r))
                    .transpose()
            }

            async fn list_allowlist(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<AllowlistEntry>, Error> {
                let rows = match after {
                    Some(after) => {
                        sqlx::query(sql::ALLOWLIST_AFTER)
                            .bind(after)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                    None => {
                        sqlx::query(sql::ALLOWLIST_FIRST)
                            .bind(codec::limit(limit))
                            .fetch_all(&self.pool)
                            .await
                    }
                }
                .map_err(Error::Database)?;
                rows.iter().map(codec::allowlist_entry).collect()
            }

            async fn reset_allowlist(&self, serial: &str) -> Result<bool, Error> {
                let serial = serial.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| Self::reset_allowlist_on(
                    conn, &serial
                ))
            }

            async fn issue(&self, i: &$crate::Issuance) -> Result<Option<Assignment>, Error> {
                let i = i.clone();
                write_op!(self, Tx::Needed, |conn| Self::issue_on(conn, &i))
            }

            async fn create_station(
                &self,
                st: &Station,
                cert: Option<&CertRecord>,
                audit: &NewAuditEntry,
            ) -> Result<(), Error> {
                let (st, cert, audit) = (st.clone(), cert.cloned(), audit.clone());
                write_op!(self, Tx::Needed, |conn| async {
                    Self::create_station_on(conn, &st, cert.as_ref()).await?;
                    Self::append_audit_on(conn, &audit).await.map(drop)
                })
            }

            async fn station(&self, name: &str) -> Result<Option<Station>, Error> {
                sqlx::query(sql::STATION)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| codec::station(&r))
                    .transpose()
            }

            async fn station_cert(
                &self,
                fingerprint: &str,
            ) -> Result<Option<(CertRecord, Option<Station>)>, Error> {
                let Some(row) = sqlx::query(sql::STATION_CERT)
                    .bind(fingerprint)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                else {
                    return Ok(None);
                };
                Ok(Some((codec::cert(&row)?, codec::joined_station(&row)?)))
            }

            async fn list_stations(&self) -> Result<Vec<Station>, Error> {
                sqlx::query(sql::STATIONS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(codec::station)
                    .collect()
            }

            async fn delete_station(&self, name: &str) -> Result<(), Error> {
                let name = name.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| Self::delete_station_on(
                    conn, &name
                ))
            }

            // ── MQTT broker state ──

            async fn put_mqtt_retained(&self, topic: &str, value: &[u8]) -> Result<(), Error> {
                let (topic, value) = (topic.to_owned(), value.to_vec());
                write_op!(self, Tx::NotNeeded, |conn| Self::put_mqtt_retained_on(
                    conn, &topic, &value
                ))
            }

            async fn delete_mqtt_retained(&self, topic: &str) -> Result<(), Error> {
                let topic = topic.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| Self::delete_mqtt_retained_on(
                    conn, &topic
                ))
            }

            async fn mqtt_retained(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
                sqlx::query(sql::MQTT_RETAINED)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| Ok((r.text("topic")?, r.bytes("value")?)))
                    .collect()
            }

            async fn put_mqtt_session(
                &self,
                client_id: &str,
                value: &[u8],
                expires_at: Option<OffsetDateTime>,
            ) -> Result<(), Error> {
                let (client_id, value) = (client_id.to_owned(), value.to_vec());
                write_op!(self, Tx::NotNeeded, |conn| Self::put_mqtt_session_on(
                    conn, &client_id, &value, expires_at
                ))
            }

            async fn delete_mqtt_session(&self, client_id: &str) -> Result<(), Error> {
                let client_id = client_id.to_owned();
                write_op!(self, Tx::NotNeeded, |conn| Self::delete_mqtt_session_on(
                    conn, &client_id
                ))
            }

            async fn mqtt_sessions(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
                sqlx::query(sql::MQTT_SESSIONS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| Ok((r.text("client_id")?, r.bytes("value")?)))
                    .collect()
            }

            async fn delete_expired_mqtt_sessions(
                &self,
                now: OffsetDateTime,
            ) -> Result<u64, Error> {
                write_op!(self, Tx::Needed, |conn| {
                    Self::delete_expired_mqtt_sessions_on(conn, now)
                })
            }

            async fn write_mqtt(&self, writes: Vec<MqttWrite>) -> Result<(), Error> {
                if writes.is_empty() {
                    return Ok(());
                }
                write_op!(self, Tx::Needed, |conn| Self::write_mqtt_on(conn, &writes))
            }

            async fn mqtt_queue(&self) -> Result<Vec<MqttQueued>, Error> {
                sqlx::query(sql::MQTT_QUEUE)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| codec::mqtt_queued(r))
                    .collect()
            }
        }
    };
}

pub(crate) use impl_store;
