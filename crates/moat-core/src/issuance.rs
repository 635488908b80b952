//! The one issuance pipeline. Every way a device gets a certificate — admin create (hub key,
//! CSR or bound certificate), EST enroll, server-side keygen and re-enroll, field
//! provisioning, rotation, auto-registration at CONNECT — authorises its request itself and
//! then hands a [`Grant`] to [`Hub::issue`], which
//!
//! 1. builds the device record (the only place a [`Device`] is made),
//! 2. signs the certificate with the device CA ([`Hub::issue_device`]) or records the bound
//!    one,
//! 3. writes device, certificates, supersession, provisioning, allow-list claim and audit
//!    entry in one registry transaction ([`moat_store::Store::issue`]), and
//! 4. emits [`Event::CertificateIssued`] (and [`Event::DeviceCreated`] /
//!    [`Event::AccessChanged`] when it created the device or changed its access).
//!
//! So no path can return a certificate the registry does not know, create a device without
//! its certificate and audit entry, or claim an allow-listed serial without a certificate.

use crate::hub::cert_record;
use crate::{Actor, Error, Event, Hub, Secret, hash_token, new_token};
use moat_store::{
    Assignment, CertRecord, CertSource, ConnectionPolicy, Device, DeviceState, FactoryInfo,
    Issuance, NewAuditEntry, ProvisioningWrite, Stage, Supersede,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// The key the certificate certifies.
pub(crate) enum Key<'a> {
    /// The hub generates a P-256 key and returns it once ([`CertSource::HubKey`]).
    Generate,
    /// The device's public key, from a checked CSR ([`CertSource::Csr`]).
    Public(&'a (dyn moat_pki::PublicKeyData + Sync)),
    /// No signing: a certificate a registered CA issued, already checked by the caller
    /// (chain, identity), recorded as the device's ([`CertSource::Bound`]).
    Bound {
        cert: CertificateDer<'static>,
        ca_name: String,
    },
}

/// A device the grant creates.
pub(crate) struct NewDevice {
    /// Policy `allow_insecure` with a device token (shown once); otherwise `deny_insecure`
    /// (mutual TLS only), no token.
    pub allow_insecure: bool,
    /// The CA whose certificates identify it.
    pub ca_name: String,
    /// Its factory data (EST enrollment).
    pub factory: Option<FactoryInfo>,
    /// Its lifecycle stage.
    pub stage: Stage,
}

impl NewDevice {
    /// A device that connects with mutual TLS only, identified by `ca_name`'s certificates.
    pub(crate) fn mutual_tls(ca_name: String, stage: Stage) -> NewDevice {
        NewDevice {
            allow_insecure: false,
            ca_name,
            factory: None,
            stage,
        }
    }
}

/// Whose certificate it is.
pub(crate) enum Holder {
    /// A device created with it (refused if the id exists).
    New(NewDevice),
    /// A registered device.
    Existing(Device),
}

/// What an enrollment method decided to issue, after authorising the request.
pub(crate) struct Grant<'a> {
    /// The device id: the certificate's identity.
    pub device_id: String,
    /// The key to certify.
    pub key: Key<'a>,
    /// The device.
    pub holder: Holder,
    /// A registered CA's certificate the device presented, recorded before the issued one
    /// (a provisioning that creates the device).
    pub presented: Option<CertRecord>,
    /// The allow-listed serial the issuance enrolls.
    pub claim_serial: Option<String>,
    /// Serials of the device CA the new certificate supersedes, and when they retire.
    pub supersede: Option<(Vec<String>, OffsetDateTime)>,
    /// A field provisioning's policy, access and assignment.
    pub provisioning: Option<ProvisioningWrite>,
    /// Who asked.
    pub actor: &'a Actor,
    /// The audit action (`device.create`, `est.enroll`, …).
    pub action: &'a str,
    /// The audit target (the device id, or the enrolling serial).
    pub target: String,
    /// Appended to the audit detail `certificate <serial>`.
    pub note: String,
    /// The time of the issuance.
    pub now: OffsetDateTime,
}

/// What [`Hub::issue`] returns. The key and token exist nowhere else.
pub(crate) struct Issued {
    /// The device as it is now (as created, or as it was found).
    pub device: Device,
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    /// Its registry record.
    pub record: CertRecord,
    /// The hub-generated key, for [`Key::Generate`].
    pub private_key: Option<moat_pki::KeyPair>,
    /// The device token, for a new device with `token`.
    pub token: Option<Secret>,
    /// A provisioning's assignment.
    pub assignment: Option<Assignment>,
}

/// Why [`Hub::issue`] failed. Nothing was written either way.
#[derive(Debug)]
pub(crate) enum IssueError {
    /// The registry refused or failed the write: [`moat_store::Error::Conflict`] (device id,
    /// certificate or serial claim taken), [`moat_store::Error::NotFound`] (serial not
    /// listed, device gone), or a database error. Callers classify the first two.
    Registry(moat_store::Error),
    /// Signing or key generation failed.
    Other(Error),
}

impl From<IssueError> for Error {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Registry(e) => e.into(),
            IssueError::Other(e) => e,
        }
    }
}

impl From<Error> for IssueError {
    fn from(e: Error) -> Self {
        IssueError::Other(e)
    }
}

impl Hub {
    /// Issues what `grant` says, writes it whole, and emits the events. See the module
    /// documentation.
    pub(crate) async fn issue(&self, grant: Grant<'_>) -> Result<Issued, IssueError> {
        let Grant {
            device_id,
            key,
            holder,
            presented,
            claim_serial,
            supersede,
            provisioning,
            actor,
            action,
            target,
            note,
            now,
        } = grant;
        // The registry keeps microseconds: what is returned is what is stored.
        let now = crate::lifecycle::to_micros(now);
        let (cert, ca_name, source, private_key) = match key {
            Key::Generate => {
                let key = moat_pki::KeyPair::generate()
                    .map_err(|e| Error::Pki(moat_pki::Error::Generate(e)))?;
                let cert = self.issue_device(&device_id, &key, now)?;
                (
                    cert,
                    self.device_ca.name.clone(),
                    CertSource::HubKey,
                    Some(key),
                )
            }
            Key::Public(public_key) => {
                let cert = self.issue_device(&device_id, public_key, now)?;
                (cert, self.device_ca.name.clone(), CertSource::Csr, None)
            }
            Key::Bound { cert, ca_name } => (cert, ca_name, CertSource::Bound, None),
        };
        let record = cert_record(&cert, &ca_name, Some(&device_id), source, now)?;
        let (device, token, created) = match holder {
            Holder::Existing(device) => (device, None, false),
            Holder::New(new) => {
                let token = new.allow_insecure.then(|| new_token("moat_dev_"));
                let device = Device {
                    id: device_id.clone(),
                    state: DeviceState::Active,
                    policy: if new.allow_insecure {
                        ConnectionPolicy::AllowInsecure
                    } else {
                        ConnectionPolicy::DenyInsecure
                    },
                    token_hash: token.as_ref().map(|t| hash_token(t.expose())),
                    ca_name: new.ca_name,
                    created_at: now,
                    updated_at: now,
                    factory: new.factory,
                    stage: new.stage,
                    owner: None,
                    status_reason: None,
                };
                (device, token, true)
            }
        };
        let access_changed = provisioning
            .as_ref()
            .is_some_and(|p| p.access.is_some() || p.policy != device.policy);
        let issuance = Issuance {
            device,
            create_device: created,
            claim_serial,
            certs: presented.into_iter().chain([record.clone()]).collect(),
            supersede: supersede.map(|(serials, retire_at)| Supersede { serials, retire_at }),
            provisioning,
            audit: NewAuditEntry {
                at: now,
                actor: actor.0.clone(),
                action: action.into(),
                target: Some(target),
                outcome: "ok".into(),
                detail: Some(format!("certificate {}{note}", record.serial)),
            },
        };
        let assignment = self
            .store()
            .issue(&issuance)
            .await
            .map_err(IssueError::Registry)?;
        let mut device = issuance.device;
        if let Some(p) = &issuance.provisioning {
            device.policy = p.policy;
            device.stage = Stage::Provisioned;
            device.updated_at = now;
        }
        if created {
            self.emit(Event::DeviceCreated {
                device_id: device_id.clone(),
            });
        }
        self.emit(Event::CertificateIssued {
            serial: record.serial.clone(),
            ca_name: record.ca_name.clone(),
            device_id: device_id.clone(),
        });
        if access_changed {
            self.emit(Event::AccessChanged { device_id });
        }
        Ok(Issued {
            device,
            cert,
            record,
            private_key,
            token,
            assignment,
        })
    }
}
