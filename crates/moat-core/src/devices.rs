//! Devices: creation with one of three credentials, listing, state changes, deletion.

use crate::issuance::{Grant, Holder, IssueError, Key, NewDevice};
use crate::{Actor, Error, Event, Hub, Secret};
use moat_pki::{DeviceCertRequest, IdentityRule, RevocationReason, Serial, TrustedCa};
use moat_store::{CaKind, CertRecord, CertSource, Device, DeviceState};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// Longest device id we accept (MQTT client ids may be longer, but ids appear in topics,
/// file names and certificate CNs, which are limited to 64 characters by RFC 5280's ub-common-name).
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// How the device proves who it is.
#[derive(Clone, Debug)]
pub enum Credential {
    /// The hub generates a P-256 key, issues a certificate, returns both once, keeps only the
    /// certificate.
    GenerateKey,
    /// The hub issues a certificate on the public key of this PKCS#10 request (PEM or DER);
    /// the key never leaves the device.
    Csr(Vec<u8>),
    /// A certificate (PEM or DER, optionally followed by its chain) issued by a registered CA.
    Cert(Vec<u8>),
}

/// A device to create.
#[derive(Clone, Debug)]
pub struct CreateDevice {
    /// The device id (see [`validate_device_id`]).
    pub id: String,
    /// Its credential.
    pub credential: Credential,
    /// Policy `allow_insecure` and a device token (shown once) when true; `deny_insecure`
    /// (mutual TLS only) otherwise.
    pub allow_insecure: bool,
}

/// What creating a device returns. The key and token are not stored anywhere: this is the
/// only time anyone sees them.
#[derive(Debug)]
pub struct CreatedDevice {
    /// The device row.
    pub device: Device,
    /// Its certificate's registry row.
    pub certificate: CertRecord,
    /// The certificate, then its issuing CA (PEM).
    pub chain_pem: String,
    /// The private key (PKCS#8 PEM), for [`Credential::GenerateKey`] only.
    pub private_key_pem: Option<Secret>,
    /// The device token, when `allow_insecure`.
    pub token: Option<Secret>,
}

/// Checks a device id: 1 to 64 characters from `A-Z a-z 0-9 . _ : -`, not starting with
/// `.` or `-`. These survive MQTT topics (no `/ + #`), file names and certificate names.
pub fn validate_device_id(id: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > MAX_DEVICE_ID_LEN {
        return Err(Error::Invalid(format!(
            "device id must be 1 to {MAX_DEVICE_ID_LEN} characters long"
        )));
    }
    if !id.chars().all(ok_char) || id.starts_with(['.', '-']) {
        return Err(Error::Invalid(format!(
            "device id {id:?} may only contain letters, digits, '.', '_', ':' and '-', and must not start with '.' or '-'"
        )));
    }
    Ok(())
}

impl Hub {
    /// Creates a device with its first certificate. The certificate is recorded (with the
    /// device, in one transaction) before anything is returned.
    pub async fn create_device(
        &self,
        req: CreateDevice,
        actor: &Actor,
    ) -> Result<CreatedDevice, Error> {
        let id = req.id.clone();
        match self.create_device_inner(req, actor).await {
            // Audited, and announced, by the issuance that stored the device.
            Ok(created) => Ok(created),
            Err(e) => {
                self.audited(actor, "device.create", Some(&id), Err(e))
                    .await
            }
        }
    }

    async fn create_device_inner(
        &self,
        req: CreateDevice,
        actor: &Actor,
    ) -> Result<CreatedDevice, Error> {
        validate_device_id(&req.id)?;
        if self.store().device(&req.id).await?.is_some() {
            return Err(Error::Conflict {
                kind: "device",
                id: req.id,
            });
        }
        let now = OffsetDateTime::now_utc();
        let checked_csr;
        let key = match &req.credential {
            Credential::GenerateKey => Key::Generate,
            Credential::Csr(csr) => {
                checked_csr = moat_pki::check_csr(csr)?;
                Key::Public(&checked_csr.public_key)
            }
            Credential::Cert(input) => {
                let (cert, ca_name) = self.check_bound_cert(&req.id, input, now).await?;
                Key::Bound { cert, ca_name }
            }
        };
        let ca_name = match &key {
            Key::Bound { ca_name, .. } => ca_name.clone(),
            _ => self.device_ca.name.clone(),
        };
        let grant = Grant {
            device_id: req.id.clone(),
            key,
            holder: Holder::New(NewDevice {
                allow_insecure: req.allow_insecure,
                ca_name,
                factory: None,
                stage: moat_store::Stage::Enrolled,
            }),
            presented: None,
            claim_serial: None,
            supersede: None,
            provisioning: None,
            actor,
            action: "device.create",
            target: req.id.clone(),
            note: String::new(),
            now,
        };
        let issued = self.issue(grant).await.map_err(|e| match e {
            IssueError::Registry(moat_store::Error::Conflict(_)) => Error::Conflict {
                kind: "device",
                id: req.id.clone(),
            },
            other => other.into(),
        })?;
        let chain_pem = match issued.record.source {
            CertSource::Bound => moat_pki::pem_of_cert(&issued.cert),
            _ => self.device_chain_pem(&issued.cert),
        };
        Ok(CreatedDevice {
            device: issued.device,
            certificate: issued.record,
            chain_pem,
            private_key_pem: issued.private_key.map(|k| Secret::new(k.serialize_pem())),
            token: issued.token,
        })
    }

    pub(crate) fn issue_device(
        &self,
        id: &str,
        public_key: &dyn moat_pki::PublicKeyData,
        now: OffsetDateTime,
    ) -> Result<CertificateDer<'static>, Error> {
        let serial = Serial::random();
        let crl_url = self.crl_url(&self.device_ca.name);
        self.signed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(moat_pki::issue_device_cert(
            &DeviceCertRequest {
                device_id: id,
                public_key,
                serial: &serial,
                validity: self.cfg.device_cert_validity,
                crl_url: crl_url.as_deref(),
                organization: Some(&self.cfg.organization),
                now,
            },
            &self.device_ca.cert,
            &self.device_ca.key,
        )?)
    }

    /// The certificate, then the device CA's (PEM).
    pub(crate) fn device_chain_pem(&self, leaf: &[u8]) -> String {
        let mut pem = moat_pki::pem_of_cert(leaf);
        pem.push_str(&moat_pki::pem_of_cert(&self.device_ca.cert));
        pem
    }

    /// The registered CAs as trust anchors, with their records.
    pub(crate) async fn registered_cas(
        &self,
    ) -> Result<(Vec<TrustedCa>, Vec<moat_store::CaRecord>), Error> {
        let recs: Vec<_> = self
            .store()
            .list_cas()
            .await?
            .into_iter()
            .filter(|c| c.kind == CaKind::Registered)
            .collect();
        Ok((crate::admission::trust_anchors(&recs), recs))
    }

    /// Bring-your-own-certificate: it must chain to a registered CA, and its identity by that
    /// CA's rule must be `id`.
    async fn check_bound_cert(
        &self,
        id: &str,
        input: &[u8],
        now: OffsetDateTime,
    ) -> Result<(CertificateDer<'static>, String), Error> {
        let mut chain = moat_pki::parse_cert_chain_pem(input)?;
        let leaf = chain.remove(0);
        let (trusted, recs) = self.registered_cas().await?;
        if trusted.is_empty() {
            return Err(Error::Chain(moat_pki::ChainError::UnknownIssuer));
        }
        let idx =
            moat_pki::verify_client_chain(&leaf, &chain, &trusted, now).map_err(Error::Chain)?;
        let ca = &recs[idx];
        let rule = IdentityRule::parse(&ca.identity_rule)
            .ok_or_else(|| Error::Internal(format!("CA {} has a bad identity rule", ca.name)))?;
        let found = moat_pki::identity_of(&leaf, rule)?;
        if found != id {
            return Err(Error::IdentityMismatch {
                expected: id.to_string(),
                found,
                rule: rule.as_str(),
                ca: ca.name.clone(),
            });
        }
        Ok((leaf, ca.name.clone()))
    }

    /// One device.
    pub async fn device(&self, id: &str) -> Result<Device, Error> {
        self.store()
            .device(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "device",
                id: id.to_string(),
            })
    }

    /// Devices by id, after `after`, at most `limit` (1..=1000).
    pub async fn list_devices(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Device>, Error> {
        Ok(self
            .store()
            .list_devices(after, limit.clamp(1, 1000))
            .await?)
    }

    /// Disables a device: its connections are refused (and dropped) until it is enabled.
    pub async fn disable_device(&self, id: &str, actor: &Actor) -> Result<Device, Error> {
        let result = self.set_state(id, DeviceState::Disabled).await;
        if result.is_ok() {
            self.emit(Event::DeviceDisabled {
                device_id: id.to_string(),
            });
        }
        self.audited(actor, "device.disable", Some(id), result)
            .await
    }

    /// Enables a disabled device. A revoked device stays revoked.
    pub async fn enable_device(&self, id: &str, actor: &Actor) -> Result<Device, Error> {
        let result = self.set_state(id, DeviceState::Active).await;
        if result.is_ok() {
            self.emit(Event::DeviceEnabled {
                device_id: id.to_string(),
            });
        }
        self.audited(actor, "device.enable", Some(id), result).await
    }

    /// `disable` and `enable`: a suspension without a reason and its end (see
    /// `lifecycle.rs`), lenient (disabling a disabled device is not an error).
    async fn set_state(&self, id: &str, state: DeviceState) -> Result<Device, Error> {
        let device = self.device(id).await?;
        if device.state == DeviceState::Revoked {
            return Err(Error::State(format!(
                "device {id:?} is revoked; a revoked device cannot change state (create a new device)"
            )));
        }
        let reason = match (device.state, state) {
            (DeviceState::Disabled, DeviceState::Disabled) => device.status_reason.clone(),
            _ => None,
        };
        self.change_status(device, state, reason).await
    }

    /// Revokes a device and every certificate it holds, republishes the affected CRLs, and
    /// emits [`Event::DeviceRevoked`]. This ends the device's life like `decommission`
    /// (its factory serial is retired too), with the revocation reason given.
    pub async fn revoke_device(
        &self,
        id: &str,
        reason: RevocationReason,
        actor: &Actor,
    ) -> Result<Vec<String>, Error> {
        let result = async {
            let device = self.device(id).await?;
            let device = self
                .change_status(device, DeviceState::Revoked, None)
                .await?;
            self.revoke_device_certs(&device, reason).await
        }
        .await;
        self.audited(actor, "device.revoke", Some(id), result).await
    }

    /// Deletes a device. Its certificates are revoked first (reason cessationOfOperation) so
    /// that nothing issued to it stays usable; their registry rows stay.
    pub async fn delete_device(&self, id: &str, actor: &Actor) -> Result<(), Error> {
        let result = async {
            // NotFound for an unknown id, before anything is written.
            self.device(id).await?;
            let now = OffsetDateTime::now_utc();
            let reason = RevocationReason::CessationOfOperation;
            let revoked = self
                .store()
                .revoke_device_certs(id, reason.as_str(), now)
                .await?;
            self.store().delete_device(id).await?;
            // A new device of this id starts its relayed counters afresh.
            self.store().delete_relay_window(id).await?;
            if !revoked.is_empty() {
                let certificates = crate::lifecycle::revoked_certificates(revoked);
                self.emit(Event::DeviceRevoked {
                    device_id: id.to_string(),
                    certificates: certificates.clone(),
                });
                self.publish_crls_of(&certificates).await?;
            }
            self.emit(Event::DeviceDeleted {
                device_id: id.to_string(),
            });
            Ok(())
        }
        .await;
        self.audited(actor, "device.delete", Some(id), result).await
    }
}
