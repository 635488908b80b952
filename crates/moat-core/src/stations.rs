//! Factory stations: the credentials that may enroll allow-listed serials over EST. A station
//! holds a hub-issued certificate (mutual TLS; generated key returned once) or an HTTP Basic
//! token (returned once, stored hashed). Station certificates are recorded with source
//! `station` and no device, so the MQTT hub never admits one as a device, and EST refuses
//! device certificates as station credentials.

use crate::hub::cert_record;
use crate::{Actor, Error, Hub, RevocationReason, Secret, hash_token, new_token};
use moat_pki::{DeviceCertRequest, Serial};
use moat_store::{CertRecord, CertSource, NewAuditEntry, Station};
use time::OffsetDateTime;

/// A station to create.
#[derive(Clone, Debug)]
pub struct CreateStation {
    /// Its name: the certificate CN, or the HTTP Basic user name.
    pub name: String,
    /// An HTTP Basic token instead of a certificate.
    pub token: bool,
}

/// A created station. The key and token exist only here: the hub keeps neither.
#[derive(Debug)]
pub struct CreatedStation {
    /// The registry row.
    pub station: Station,
    /// Its certificate's registry row (certificate stations).
    pub certificate: Option<CertRecord>,
    /// The certificate, then the device CA (PEM).
    pub chain_pem: Option<String>,
    /// The hub-generated key (PKCS#8 PEM).
    pub private_key_pem: Option<Secret>,
    /// The HTTP Basic token.
    pub token: Option<Secret>,
}

impl Hub {
    /// Creates a station with a hub-issued certificate (key generated here, returned once)
    /// or, with `token`, an HTTP Basic token (returned once, stored hashed).
    pub async fn create_station(
        &self,
        req: CreateStation,
        actor: &Actor,
    ) -> Result<CreatedStation, Error> {
        let name = req.name.clone();
        match self.create_station_inner(req, actor).await {
            // Audited in the transaction that stored it.
            Ok(created) => Ok(created),
            Err(e) => {
                self.audited(actor, "station.create", Some(&name), Err(e))
                    .await
            }
        }
    }

    async fn create_station_inner(
        &self,
        req: CreateStation,
        actor: &Actor,
    ) -> Result<CreatedStation, Error> {
        crate::validate_device_id(&req.name).map_err(|_| {
            Error::Invalid(format!(
                "station name {:?} must be 1 to 64 of A-Z a-z 0-9 . _ : -, not starting with . or -",
                req.name
            ))
        })?;
        if self.store().station(&req.name).await?.is_some() {
            return Err(Error::Conflict {
                kind: "station",
                id: req.name,
            });
        }
        let now = OffsetDateTime::now_utc();
        let (certificate, chain_pem, private_key_pem, token) = if req.token {
            (None, None, None, Some(new_token("moat_stn_")))
        } else {
            let key = moat_pki::KeyPair::generate()
                .map_err(|e| Error::Pki(moat_pki::Error::Generate(e)))?;
            let serial = Serial::random();
            let crl_url = self.crl_url(&self.device_ca.name);
            let cert = moat_pki::issue_station_cert(
                &DeviceCertRequest {
                    device_id: &req.name,
                    public_key: &key,
                    serial: &serial,
                    validity: self.cfg.device_cert_validity,
                    crl_url: crl_url.as_deref(),
                    organization: Some(&self.cfg.organization),
                    now,
                },
                &self.device_ca.cert,
                &self.device_ca.key,
            )?;
            let rec = cert_record(&cert, &self.device_ca.name, None, CertSource::Station, now)?;
            let mut chain = moat_pki::pem_of_cert(&cert);
            chain.push_str(&moat_pki::pem_of_cert(&self.device_ca.cert));
            (
                Some(rec),
                Some(chain),
                Some(Secret::new(key.serialize_pem())),
                None,
            )
        };
        let station = Station {
            name: req.name.clone(),
            cert_serial: certificate.as_ref().map(|c| c.serial.clone()),
            token_hash: token.as_ref().map(|t| hash_token(t.expose())),
            created_at: now,
        };
        let audit = NewAuditEntry {
            at: now,
            actor: actor.0.clone(),
            action: "station.create".into(),
            target: Some(req.name.clone()),
            outcome: "ok".into(),
            detail: Some(if req.token { "token" } else { "certificate" }.into()),
        };
        self.store()
            .create_station(&station, certificate.as_ref(), &audit)
            .await
            .map_err(|e| match e {
                moat_store::Error::Conflict(_) => Error::Conflict {
                    kind: "station",
                    id: req.name.clone(),
                },
                other => other.into(),
            })?;
        Ok(CreatedStation {
            station,
            certificate,
            chain_pem,
            private_key_pem,
            token,
        })
    }

    /// Every station.
    pub async fn list_stations(&self) -> Result<Vec<Station>, Error> {
        Ok(self.store().list_stations().await?)
    }

    /// Deletes a station: it can no longer enroll, and its certificate is revoked (so the TLS
    /// handshake refuses it too).
    pub async fn delete_station(&self, name: &str, actor: &Actor) -> Result<(), Error> {
        let result = async {
            let station = self
                .store()
                .station(name)
                .await?
                .ok_or_else(|| Error::NotFound {
                    kind: "station",
                    id: name.to_string(),
                })?;
            self.store().delete_station(name).await?;
            Ok(station)
        }
        .await;
        let station = self
            .audited(actor, "station.delete", Some(name), result)
            .await?;
        if let Some(serial) = station.cert_serial {
            match self
                .revoke_cert(&serial, RevocationReason::CessationOfOperation, actor)
                .await
            {
                Ok(_) | Err(Error::State(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
