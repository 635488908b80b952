//! Certificates: listing, revocation, and CRL publication.

use crate::{Actor, Error, Event, Hub};
use moat_pki::{CrlInput, RevocationReason, RevokedEntry, Serial};
use moat_store::{CertRecord, CrlRecord};
use time::OffsetDateTime;

impl Hub {
    /// Whether `ca_name` is one of the hub's own CAs (which sign CRLs).
    pub fn is_hub_ca(&self, ca_name: &str) -> bool {
        ca_name == self.root.name || ca_name == self.device_ca.name
    }

    /// Certificates, newest first, optionally of one device.
    pub async fn list_certs(
        &self,
        device_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CertRecord>, Error> {
        Ok(self
            .store()
            .list_certs(device_id, limit.clamp(1, 1000))
            .await?)
    }

    /// Live device certificates that expire within `within` from now, soonest first.
    pub async fn expiring_certs(
        &self,
        within: time::Duration,
        limit: u32,
    ) -> Result<Vec<CertRecord>, Error> {
        let now = time::OffsetDateTime::now_utc();
        Ok(self
            .store()
            .expiring_certs(now, now + within, limit.clamp(1, 1000))
            .await?)
    }

    /// One certificate by serial (hex, any case, `:` separators allowed).
    pub async fn cert(&self, serial: &str) -> Result<CertRecord, Error> {
        let hex = normalise_serial(serial)?;
        self.store().cert(&hex).await?.ok_or(Error::NotFound {
            kind: "certificate",
            id: hex,
        })
    }

    /// Revokes one certificate, republishes its CA's CRL (hub CAs), and emits
    /// [`Event::CertificateRevoked`]. Revoking a revoked certificate is refused as a state
    /// error, so the audit log shows it was already revoked.
    pub async fn revoke_cert(
        &self,
        serial: &str,
        reason: RevocationReason,
        actor: &Actor,
    ) -> Result<CertRecord, Error> {
        let result = async {
            let mut rec = self.cert(serial).await?;
            let now = OffsetDateTime::now_utc();
            if !self
                .store()
                .revoke_cert(&rec.serial, reason.as_str(), now)
                .await?
            {
                return Err(Error::State(format!(
                    "certificate {} is already revoked",
                    rec.serial
                )));
            }
            rec.revoked_at = Some(now);
            rec.revocation_reason = Some(reason.as_str().to_string());
            self.emit(Event::CertificateRevoked {
                serial: rec.serial.clone(),
                ca_name: rec.ca_name.clone(),
                device_id: rec.device_id.clone(),
            });
            if self.is_hub_ca(&rec.ca_name) {
                self.publish_crl(&rec.ca_name, &Actor::system()).await?;
            }
            Ok(rec)
        }
        .await;
        self.audited(actor, "cert.revoke", Some(serial), result)
            .await
    }

    /// Builds, signs and stores a new CRL for a hub CA with the next CRL number.
    pub async fn publish_crl(&self, ca_name: &str, actor: &Actor) -> Result<CrlRecord, Error> {
        let result = self.publish_crl_inner(ca_name).await;
        if let Ok(crl) = &result {
            self.emit(Event::CrlPublished {
                ca_name: crl.ca_name.clone(),
                number: crl.number,
            });
        }
        self.audited(actor, "crl.publish", Some(ca_name), result)
            .await
    }

    async fn publish_crl_inner(&self, ca_name: &str) -> Result<CrlRecord, Error> {
        let ca = if ca_name == self.root.name {
            &self.root
        } else if ca_name == self.device_ca.name {
            &self.device_ca
        } else {
            return Err(Error::NotFound {
                kind: "hub CA",
                id: ca_name.to_string(),
            });
        };
        let _guard = self.crl_lock.lock().await;
        let number = self.store().next_crl_number(ca_name).await?;
        let revoked = self.store().revoked_certs(ca_name).await?;
        let mut entries = Vec::with_capacity(revoked.len());
        for r in revoked {
            let serial = Serial::from_hex(&r.serial).ok_or_else(|| {
                Error::Internal(format!("stored serial {:?} is not hex", r.serial))
            })?;
            entries.push(RevokedEntry {
                serial,
                revoked_at: r.revoked_at,
                reason: RevocationReason::parse(&r.reason).unwrap_or(RevocationReason::Unspecified),
            });
        }
        let this_update = OffsetDateTime::now_utc();
        let next_update = this_update + self.cfg.crl_validity;
        let url = self.crl_url(ca_name);
        let der = moat_pki::build_crl(
            &CrlInput {
                number,
                this_update,
                next_update,
                entries: &entries,
                url: url.as_deref(),
            },
            &ca.cert,
            &ca.key,
        )?;
        let rec = CrlRecord {
            ca_name: ca_name.to_string(),
            number,
            der,
            this_update,
            next_update,
        };
        self.store().save_crl(&rec).await?;
        tracing::info!(
            ca = ca_name,
            number,
            entries = entries.len(),
            "published CRL"
        );
        Ok(rec)
    }

    /// The latest CRL of a hub CA (DER and metadata).
    pub async fn crl(&self, ca_name: &str) -> Result<CrlRecord, Error> {
        self.store()
            .latest_crl(ca_name)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "CRL",
                id: ca_name.to_string(),
            })
    }

    /// Republishes the CRL of every hub CA whose CRL has less than half its validity left.
    /// Run periodically so relying parties never hold an expired CRL.
    pub async fn refresh_crls(&self) -> Result<(), Error> {
        let now = OffsetDateTime::now_utc();
        for ca in [self.root.name.clone(), self.device_ca.name.clone()] {
            let stale = match self.store().latest_crl(&ca).await? {
                None => true,
                Some(crl) => crl.next_update - now < self.cfg.crl_validity / 2,
            };
            if stale {
                self.publish_crl(&ca, &Actor::system()).await?;
            }
        }
        Ok(())
    }
}

fn normalise_serial(s: &str) -> Result<String, Error> {
    Serial::from_hex(s.trim())
        .map(|s| s.to_hex())
        .ok_or_else(|| Error::Invalid(format!("{s:?} is not a certificate serial (hex digits)")))
}
