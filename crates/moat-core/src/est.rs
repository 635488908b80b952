//! EST enrollment decisions (RFC 7030): who may enroll (a factory station), what (an
//! allow-listed serial that has not enrolled yet), and renewal by the certificate being
//! renewed. `moat-api` speaks the protocol (paths, media types, base64, CMS); this module
//! decides, signs, stores and audits.
//!
//! ```text
//!   simpleenroll / serverkeygen:  station credential ─▶ CSR checked ─▶ serial from subject
//!     serialNumber (else CN) ─▶ on the allow-list, not enrolled ─▶ sign ─▶ one transaction:
//!     claim the serial + device (id = serial) + certificate + audit
//!   simplereenroll:  client certificate = a live device certificate of this hub ─▶ CSR
//!     subject/SAN identical to it ─▶ sign for the same device ─▶ certificate + audit
//! ```
//!
//! Every refusal is audited with its reason and stores nothing else.

use crate::issuance::{Grant, Holder, IssueError, Key, NewDevice};
use crate::{Actor, CertificateCheck, Denial, Error, Hub, token_matches};
use moat_pki::{CheckedCsr, Renewal};
use moat_store::{CertRecord, CertSource, DeviceState, Stage, Station};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Why an EST request is refused. The text is the public reason: sent to the client and
/// written to the audit log. `moat-api` maps each variant to its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum EstRefusal {
    /// No station credential at all.
    #[error(
        "station not authorised: no credentials; authenticate with the station's certificate (mutual TLS) or HTTP Basic name:token"
    )]
    NoCredentials,
    /// HTTP Basic with an unknown station or a wrong token.
    #[error("station not authorised: unknown station {0:?} or wrong token")]
    BadStationToken(String),
    /// The client certificate is not a live station certificate (e.g. a device's).
    #[error("station not authorised: {0}")]
    NotAStation(String),
    /// The CSR is not acceptable (malformed, bad signature, unsupported key, subject or SAN
    /// changed on re-enrollment).
    #[error("bad CSR: {0}")]
    BadCsr(#[source] moat_pki::Error),
    /// The CSR names no serial to enroll.
    #[error(
        "the CSR names no serial: put the allow-listed serial in the subject serialNumber or CN"
    )]
    NoSerial,
    /// The serial is not on the allow-list.
    #[error("serial {0:?} is not on the allow-list")]
    NotAllowListed(String),
    /// The serial has enrolled already.
    #[error(
        "serial {0:?} has already enrolled (an admin may allow one more enrollment: moat allowlist reset)"
    )]
    AlreadyEnrolled(String),
    /// A device with the serial's id exists and did not enroll from that serial.
    #[error("a device {0:?} exists that did not enroll from this serial")]
    DeviceExists(String),
    /// simplereenroll without a client certificate.
    #[error("re-enrollment needs the certificate being renewed, presented over mutual TLS")]
    NoClientCertificate,
    /// The certificate being renewed may not act as a device now ([`CertificateCheck`]'s
    /// refusal: expired, revoked, retired, its device suspended…).
    #[error("{0}")]
    Certificate(#[source] Denial),
    /// The client certificate is not a device certificate this hub issued.
    #[error("the client certificate is not a device certificate issued by this hub: {0}")]
    NotADeviceCertificate(String),
    /// The device an allow-listed serial enrolled as before is disabled, revoked or gone.
    #[error("device {0:?} is {1}")]
    DeviceNotActive(String, &'static str),
    /// The serial's device was decommissioned: it can never enroll again.
    #[error(
        "serial {0:?} was decommissioned and can never enroll again (an allow-list reset does not change that)"
    )]
    SerialRetired(String),
}

/// What a client presented to authenticate as a station.
#[derive(Clone, Copy, Debug)]
pub enum StationCredential<'a> {
    /// The leaf of a client certificate chain the TLS handshake verified.
    Certificate(&'a [u8]),
    /// HTTP Basic user name and password.
    Token {
        /// Station name.
        name: &'a str,
        /// Its token.
        token: &'a str,
    },
    /// Nothing.
    None,
}

/// A certificate issued over EST. The key exists only here (server key generation).
#[derive(Debug)]
pub struct EstIssued {
    /// The device.
    pub device_id: String,
    /// The certificate's registry row.
    pub record: CertRecord,
    /// The certificate.
    pub cert: CertificateDer<'static>,
    /// The hub-generated private key, PKCS#8 DER (server key generation only).
    pub private_key_der: Option<Zeroizing<Vec<u8>>>,
    /// For re-enrollment: renewal or re-key.
    pub renewal: Option<Renewal>,
}

impl Hub {
    /// Authenticates a factory station. A certificate must be the one recorded for a station
    /// that still exists, unrevoked and unexpired (the handshake verified the chain; this
    /// also covers resumed TLS sessions); a token must match the station's hash. Refusals are
    /// audited with `peer` (the client's address).
    pub async fn authenticate_station(
        &self,
        credential: StationCredential<'_>,
        peer: &str,
    ) -> Result<Station, Error> {
        let (target, result) = match credential {
            StationCredential::None => (None, Err(EstRefusal::NoCredentials.into())),
            StationCredential::Token { name, token } => (
                Some(name.to_string()),
                self.station_by_token(name, token).await,
            ),
            StationCredential::Certificate(leaf) => (None, self.station_by_cert(leaf).await),
        };
        match result {
            Ok(station) => Ok(station),
            Err(e) => {
                let actor = Actor(format!("unauthenticated@{peer}"));
                self.audited(&actor, "est.authenticate", target.as_deref(), Err(e))
                    .await
            }
        }
    }

    async fn station_by_token(&self, name: &str, token: &str) -> Result<Station, Error> {
        let station = self.store().station(name).await?;
        match station {
            Some(s)
                if s.token_hash
                    .as_deref()
                    .is_some_and(|h| token_matches(token, h)) =>
            {
                Ok(s)
            }
            _ => Err(EstRefusal::BadStationToken(name.to_string()).into()),
        }
    }

    async fn station_by_cert(&self, leaf: &[u8]) -> Result<Station, Error> {
        let not = |why: String| Error::from(EstRefusal::NotAStation(why));
        let info = moat_pki::cert_info(leaf).map_err(|e| not(e.to_string()))?;
        // One read for the certificate and its station: this runs on every enrollment.
        let (rec, station) = self
            .store()
            .station_cert(&info.fingerprint_sha256)
            .await?
            .ok_or_else(|| not("the client certificate is not one this hub issued".into()))?;
        if rec.source != CertSource::Station {
            return Err(not(format!(
                "certificate {} is not a station certificate{}",
                rec.serial,
                rec.device_id
                    .as_ref()
                    .map(|d| format!(" (it belongs to device {d:?})"))
                    .unwrap_or_default()
            )));
        }
        if rec.revoked_at.is_some() {
            return Err(not(format!("certificate {} is revoked", rec.serial)));
        }
        if rec.not_after <= OffsetDateTime::now_utc() {
            return Err(not(format!("certificate {} has expired", rec.serial)));
        }
        let name = info.common_name.unwrap_or_default();
        match station {
            Some(s) if s.name == name => Ok(s),
            _ => Err(not(format!(
                "station {name:?} no longer exists or has another certificate"
            ))),
        }
    }

    /// `simpleenroll` (or, with `generate_key`, `serverkeygen`) for `station`: the serial is
    /// the CSR's subject serialNumber, else its CN; it must be on the allow-list and not have
    /// enrolled. The device (id = serial, with the allow-list's MAC and model) and its
    /// certificate are stored with the audit entry in one transaction before anything is
    /// returned; a refusal stores nothing but its audit entry.
    pub async fn est_enroll(
        &self,
        station: &Station,
        csr: &[u8],
        generate_key: bool,
    ) -> Result<EstIssued, Error> {
        let actor = Actor(format!("station:{}", station.name));
        let action = if generate_key {
            "est.serverkeygen"
        } else {
            "est.enroll"
        };
        let mut target = None;
        let result = self
            .est_enroll_inner(&actor, action, csr, generate_key, &mut target)
            .await;
        match result {
            Ok(issued) => Ok(issued),
            Err(e) => {
                self.audited(&actor, action, target.as_deref(), Err(e))
                    .await
            }
        }
    }

    async fn est_enroll_inner(
        &self,
        actor: &Actor,
        action: &str,
        csr: &[u8],
        generate_key: bool,
        target: &mut Option<String>,
    ) -> Result<EstIssued, Error> {
        let checked = moat_pki::check_csr(csr).map_err(EstRefusal::BadCsr)?;
        let serial = csr_serial(&checked).ok_or(EstRefusal::NoSerial)?;
        *target = Some(serial.clone());
        let entry = self
            .store()
            .allowlist_entry(&serial)
            .await?
            .ok_or_else(|| EstRefusal::NotAllowListed(serial.clone()))?;
        if entry.retired_at.is_some() {
            return Err(EstRefusal::SerialRetired(serial).into());
        }
        if entry.enrolled_at.is_some() {
            return Err(EstRefusal::AlreadyEnrolled(serial).into());
        }
        let now = OffsetDateTime::now_utc();
        // Device id = serial (checked as a device id at upload); identity by the device CA's
        // rule (CN), like every hub-issued certificate. A serial that enrolled before (and was
        // reset) goes onto the device it became; a first enrollment creates it, and the
        // registry refuses it if a device of that id exists already (classified below).
        let (holder, device_exists) = match &entry.device_id {
            Some(id) => {
                let d = self
                    .store()
                    .device(id)
                    .await?
                    .ok_or_else(|| EstRefusal::DeviceNotActive(id.clone(), "deleted"))?;
                if d.state != DeviceState::Active {
                    return Err(EstRefusal::DeviceNotActive(d.id, d.state.as_str()).into());
                }
                (Holder::Existing(d), true)
            }
            None => (
                Holder::New(NewDevice {
                    factory: Some(entry.factory.clone()),
                    ..NewDevice::mutual_tls(self.device_ca.name.clone(), Stage::Enrolled)
                }),
                false,
            ),
        };
        let device_id = entry.device_id.clone().unwrap_or_else(|| serial.clone());
        let grant = Grant {
            device_id: device_id.clone(),
            key: if generate_key {
                Key::Generate
            } else {
                Key::Public(&checked.public_key)
            },
            holder,
            presented: None,
            claim_serial: Some(serial.clone()),
            supersede: None,
            provisioning: None,
            actor,
            action,
            target: serial.clone(),
            note: String::new(),
            now,
        };
        let issued = match self.issue(grant).await {
            Ok(issued) => issued,
            Err(IssueError::Registry(moat_store::Error::NotFound(_))) => {
                return Err(EstRefusal::NotAllowListed(serial).into());
            }
            // Another station enrolled it first, or a device of that id exists that did not
            // enroll from this serial (created by an admin, or from another CA), or it was
            // decommissioned meanwhile (the claim skips retired serials).
            Err(IssueError::Registry(moat_store::Error::Conflict(_))) => {
                if let Some(e) = self.store().allowlist_entry(&serial).await?
                    && e.retired_at.is_some()
                {
                    return Err(EstRefusal::SerialRetired(serial).into());
                }
                let foreign_device = !device_exists
                    && self.store().device(&device_id).await?.is_some()
                    && self.enrolled(&serial).await? == Some(false);
                return Err(if foreign_device {
                    EstRefusal::DeviceExists(serial)
                } else {
                    EstRefusal::AlreadyEnrolled(serial)
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(EstIssued {
            device_id,
            record: issued.record,
            cert: issued.cert,
            private_key_der: issued
                .private_key
                .map(|k| Zeroizing::new(k.serialize_der())),
            renewal: None,
        })
    }

    /// Whether an allow-listed serial has enrolled (None: not on the allow-list).
    async fn enrolled(&self, serial: &str) -> Result<Option<bool>, Error> {
        Ok(self
            .store()
            .allowlist_entry(serial)
            .await?
            .map(|e| e.enrolled_at.is_some()))
    }

    /// `simplereenroll`: `client` is the client's certificate chain from mutual TLS (verified
    /// by the handshake, or restored by session resumption). The certificate
    /// must pass [`CertificateCheck`] (valid now, trusted, not revoked or retired, its device
    /// registered and active) and be one the hub's device CA issued; the CSR must keep its subject and SAN (RFC 7030
    /// §4.2.2). Same key: renewal; new key: re-key. The new certificate binds to the same
    /// device; the old one stays valid until it expires or the rotation overlap
    /// (`CoreConfig::rotation_overlap`) ends, when it is revoked with reason superseded.
    pub async fn est_reenroll(
        &self,
        client: CertificateCheck<'_>,
        csr: &[u8],
        peer: &str,
    ) -> Result<EstIssued, Error> {
        let mut actor = Actor(format!("unauthenticated@{peer}"));
        let result = self.est_reenroll_inner(client, csr, &mut actor).await;
        match result {
            Ok(issued) => Ok(issued),
            Err(e) => {
                let target = actor.0.strip_prefix("device:").map(str::to_owned);
                self.audited(&actor, "est.reenroll", target.as_deref(), Err(e))
                    .await
            }
        }
    }

    async fn est_reenroll_inner(
        &self,
        client: CertificateCheck<'_>,
        csr: &[u8],
        actor: &mut Actor,
    ) -> Result<EstIssued, Error> {
        let leaf = client
            .chain()
            .first()
            .ok_or(EstRefusal::NoClientCertificate)?;
        let checked = client.run(self).await.map_err(|d| match d {
            Denial::Unavailable(e) => *e,
            d => EstRefusal::Certificate(d).into(),
        })?;
        *actor = Actor(format!("device:{}", checked.identity));
        // Renewal is for certificates this hub's device CA issued (recorded with the device):
        // a vendor's certificate is renewed by its vendor.
        let current = match checked.record {
            Some(r)
                if matches!(r.source, CertSource::HubKey | CertSource::Csr)
                    && r.ca_name == self.device_ca.name =>
            {
                r
            }
            Some(_) => {
                return Err(EstRefusal::NotADeviceCertificate(
                    "it was issued by a registered CA; renew it with that CA".into(),
                )
                .into());
            }
            None => {
                return Err(EstRefusal::NotADeviceCertificate(
                    "this hub has no record of it".into(),
                )
                .into());
            }
        };
        let device_id = checked.identity;
        let device = checked.device.ok_or_else(|| {
            EstRefusal::NotADeviceCertificate("its device is not registered".into())
        })?;
        let now = OffsetDateTime::now_utc();
        let checked = moat_pki::check_csr(csr).map_err(EstRefusal::BadCsr)?;
        let renewal = moat_pki::check_renewal(&checked, leaf).map_err(EstRefusal::BadCsr)?;
        // The renewed certificate stays valid for the overlap, then retires (revoked,
        // reason superseded), unless it expires first.
        let retire_at = self.retire_time(&current, now);
        let note = format!(
            " replaces {} ({}){}",
            current.serial,
            renewal.as_str(),
            crate::lifecycle::retire_note(retire_at),
        );
        let target = device_id.clone();
        let issued = self
            .issue(Grant {
                device_id: device_id.clone(),
                key: Key::Public(&checked.public_key),
                holder: Holder::Existing(device),
                presented: None,
                claim_serial: None,
                supersede: retire_at.map(|at| (vec![current.serial.clone()], at)),
                provisioning: None,
                actor: &*actor,
                action: "est.reenroll",
                target,
                note,
                now,
            })
            .await?;
        Ok(EstIssued {
            device_id,
            record: issued.record,
            cert: issued.cert,
            private_key_der: None,
            renewal: Some(renewal),
        })
    }
}

/// The serial a factory CSR enrolls: its subject serialNumber, else its CN.
fn csr_serial(csr: &CheckedCsr) -> Option<String> {
    csr.serial_number
        .as_deref()
        .or(csr.common_name.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}
