//! The [`Store`](crate::Store) implementation, written once for both back ends.
//!
//! The statements are in [`crate::sql`]. A macro rather than generics over `sqlx::Database`: with concrete pools each back end keeps its own statement cache and
//! types, and the body needs none of the higher-ranked bounds generic sqlx code drags along.
//!
//! The store type given to the macro provides `pool` (its pool) and `begin_write` (a
//! transaction that will write; SQLite takes the write lock up front).

/// Implements [`Store`](crate::Store) for `$store`, whose pool is of database `$db`.
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal) => {
        impl $store {
            /// Inserts a certificate row through `exec` (the pool or a transaction).
            async fn insert_cert_with<'c, E>(exec: E, c: &CertRecord) -> Result<(), sqlx::Error>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                sqlx::query(sql::INSERT_CERT)
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
                    .execute(exec)
                    .await
                    .map(drop)
            }

            /// The [`Error`] for a failed certificate insert: on a unique violation, says
            /// whether the serial (for its CA) or the fingerprint was taken.
            async fn cert_insert_error(&self, e: sqlx::Error, c: &CertRecord) -> Error {
                if !is_unique_violation(&e) {
                    return Error::Database(e);
                }
                let serial_taken = sqlx::query(sql::CERT_SERIAL_TAKEN)
                    .bind(&c.serial)
                    .bind(&c.ca_name)
                    .fetch_optional(&self.pool)
                    .await;
                match serial_taken {
                    Ok(Some(_)) => Error::Conflict(format!(
                        "certificate serial {} of CA {}",
                        c.serial, c.ca_name
                    )),
                    Ok(None) => {
                        Error::Conflict(format!("certificate fingerprint {}", c.fingerprint))
                    }
                    Err(e) => Error::Database(e),
                }
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            // ── devices ──

            async fn create_device(
                &self,
                d: &Device,
                cert: Option<&CertRecord>,
            ) -> Result<(), Error> {
                let mut tx = self.begin_write().await.map_err(Error::Database)?;
                sqlx::query(sql::INSERT_DEVICE)
                    .bind(&d.id)
                    .bind(d.state.as_str())
                    .bind(d.policy.as_str())
                    .bind(&d.token_hash)
                    .bind(&d.ca_name)
                    .bind(micros(d.created_at))
                    .bind(micros(d.updated_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify(e, || format!("device {}", d.id)))?;
                if let Some(c) = cert {
                    if let Err(e) = Self::insert_cert_with(&mut *tx, c).await {
                        // Roll back first: PostgreSQL refuses queries in a failed transaction.
                        tx.rollback().await.map_err(Error::Database)?;
                        return Err(self.cert_insert_error(e, c).await);
                    }
                }
                tx.commit().await.map_err(Error::Database)
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
                let done = sqlx::query(sql::SET_DEVICE_STATE)
                    .bind(state.as_str())
                    .bind(micros(at))
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("device {id}")));
                }
                Ok(())
            }

            async fn delete_device(&self, id: &str) -> Result<(), Error> {
                let done = sqlx::query(sql::DELETE_DEVICE)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("device {id}")));
                }
                Ok(())
            }

            // ── certificates ──

            async fn insert_cert(&self, c: &CertRecord) -> Result<(), Error> {
                match Self::insert_cert_with(&self.pool, c).await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(self.cert_insert_error(e, c).await),
                }
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

            async fn revoke_cert(
                &self,
                serial: &str,
                reason: &str,
                at: OffsetDateTime,
            ) -> Result<bool, Error> {
                // The certificate `cert(serial)` returns: the newest with this serial.
                let done = sqlx::query(sql::REVOKE_CERT)
                    .bind(micros(at))
                    .bind(reason)
                    .bind(serial)
                    .execute(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() > 0 {
                    return Ok(true);
                }
                let exists = sqlx::query(sql::CERT_EXISTS)
                    .bind(serial)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                match exists {
                    Some(_) => Ok(false),
                    None => Err(Error::NotFound(format!("certificate serial {serial}"))),
                }
            }

            async fn revoke_device_certs(
                &self,
                device_id: &str,
                reason: &str,
                at: OffsetDateTime,
            ) -> Result<Vec<String>, Error> {
                let rows = sqlx::query(sql::REVOKE_DEVICE_CERTS)
                    .bind(micros(at))
                    .bind(reason)
                    .bind(device_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                let mut serials = rows
                    .iter()
                    .map(|r| r.text("serial"))
                    .collect::<Result<Vec<_>, _>>()?;
                serials.sort();
                Ok(serials)
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

            async fn all_revoked_serials(&self) -> Result<Vec<String>, Error> {
                sqlx::query(sql::ALL_REVOKED_SERIALS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| r.text("serial"))
                    .collect()
            }

            // ── certificate authorities ──

            async fn insert_ca(&self, ca: &CaRecord) -> Result<(), Error> {
                sqlx::query(sql::INSERT_CA)
                    .bind(&ca.name)
                    .bind(ca.kind.as_str())
                    .bind(&ca.cert_der)
                    .bind(&ca.key_ref)
                    .bind(&ca.identity_rule)
                    .bind(ca.auto_register)
                    .bind(&ca.fingerprint)
                    .bind(micros(ca.created_at))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        classify(e, || {
                            format!("CA {} (or its fingerprint {})", ca.name, ca.fingerprint)
                        })
                    })
                    .map(drop)
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
                let done = sqlx::query(sql::DELETE_CA)
                    .bind(name)
                    .execute(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                if done.rows_affected() == 0 {
                    return Err(Error::NotFound(format!("CA {name}")));
                }
                Ok(())
            }

            // ── CRLs ──

            async fn next_crl_number(&self, ca_name: &str) -> Result<u64, Error> {
                let row = sqlx::query(sql::NEXT_CRL_NUMBER)
                    .bind(ca_name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .ok_or_else(|| Error::NotFound(format!("CA {ca_name}")))?;
                crl_number_from_db(row.int("crl_number")?, "cas.crl_number")
            }

            async fn save_crl(&self, crl: &CrlRecord) -> Result<(), Error> {
                sqlx::query(sql::SAVE_CRL)
                    .bind(&crl.ca_name)
                    .bind(crl_number_to_db(crl.number)?)
                    .bind(&crl.der)
                    .bind(micros(crl.this_update))
                    .bind(micros(crl.next_update))
                    .execute(&self.pool)
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
                sqlx::query(sql::INSERT_CODE)
                    .bind(code_hash)
                    .bind(micros(created_at))
                    .bind(micros(expires_at))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| classify(e, || "registration code".to_owned()))
                    .map(drop)
            }

            async fn consume_registration_code(
                &self,
                code_hash: &str,
                now: OffsetDateTime,
            ) -> Result<bool, Error> {
                let done = sqlx::query(sql::CONSUME_CODE)
                    .bind(micros(now))
                    .bind(code_hash)
                    .execute(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                Ok(done.rows_affected() == 1)
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
                sqlx::query(sql::PUT_SETTING)
                    .bind(key)
                    .bind(value)
                    .execute(&self.pool)
                    .await
                    .map_err(Error::Database)
                    .map(drop)
            }

            // ── audit ──

            async fn append_audit(&self, e: &NewAuditEntry) -> Result<i64, Error> {
                let row = sqlx::query(sql::APPEND_AUDIT)
                    .bind(micros(e.at))
                    .bind(&e.actor)
                    .bind(&e.action)
                    .bind(&e.target)
                    .bind(&e.outcome)
                    .bind(&e.detail)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                row.int("id")
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
        }
    };
}

pub(crate) use impl_store;
