//! Admission of a connecting device, in DESIGN.md's validation order: (1) chain and proof of
//! possession — done by the TLS handshake for [`Hub::admit_verified_certificate`], by
//! webpki for [`Hub::explain`]; (2) revocation; (3) identity by the CA's rule;
//! (4) registration (or auto-registration); (5) device state; (6) policy for the mode.
//! `explain` and the MQTT hub share [`Hub::check_leaf`], so what `moat cert explain` says is
//! what the hub does.

use crate::hub::cert_record;
use crate::{Actor, Error, Event, Hub, token_matches};
use moat_pki::IdentityRule;
use moat_store::{CaKind, CaRecord, CertRecord, CertSource, ConnectionPolicy, Device, DeviceState};
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use time::OffsetDateTime;

/// The CAs whose certificates may identify a client, device CA first, and each one's
/// subject (RFC 4514; None if unreadable) to find a chain's issuer without parsing them again.
#[derive(Debug)]
pub(crate) struct ClientCas {
    pub cas: Vec<CaRecord>,
    pub subjects: Vec<Option<String>>,
}

/// How a device connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectMode {
    /// TLS with a client certificate.
    MutualTls,
    /// TLS, authenticated by device token.
    ServerTls,
    /// Plain TCP, authenticated by device token.
    Plain,
}

impl ConnectMode {
    /// `mtls`, `tls`, `plain`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectMode::MutualTls => "mtls",
            ConnectMode::ServerTls => "tls",
            ConnectMode::Plain => "plain",
        }
    }
}

/// Why a connection is refused. The broker tells the client only "not authorized"; the
/// detail goes to the audit log.
#[derive(Debug, thiserror::Error)]
pub enum Denial {
    /// No trusted CA issued the certificate.
    #[error("certificate does not chain to a trusted CA")]
    UntrustedIssuer,
    /// The certificate is revoked.
    #[error("certificate {0} is revoked")]
    CertRevoked(String),
    /// A newer certificate superseded this one and its overlap has ended (the retirement
    /// sweep revokes it; this refuses it before the sweep runs).
    #[error("certificate {0} was superseded and its overlap has ended")]
    CertRetired(String),
    /// A certificate of the hub's that identifies no device (a factory station's EST
    /// credential, the hub's own server certificate).
    #[error("certificate {0} is not a device certificate")]
    NotADeviceCertificate(String),
    /// The certificate carries no identity under its CA's rule.
    #[error("certificate has no identity: {0}")]
    NoIdentity(String),
    /// No such device, and its CA does not auto-register.
    #[error("no device {0:?} is registered")]
    UnknownDevice(String),
    /// The device exists under another CA than the one that issued this certificate.
    #[error("device {0:?} is registered under another CA")]
    WrongCa(String),
    /// The device is disabled (suspended).
    #[error("device {0:?} is suspended (disabled)")]
    Disabled(String),
    /// The device is revoked (decommissioned).
    #[error("device {0:?} is decommissioned (revoked)")]
    DeviceRevoked(String),
    /// The device's policy is deny_insecure and the mode is not mutual TLS.
    #[error("device {0:?} allows mutual TLS only (policy deny_insecure)")]
    InsecureDenied(String),
    /// The token is wrong or the device has none.
    #[error("wrong device token for {0:?}")]
    BadToken(String),
    /// The registry failed; the device may be fine.
    #[error("registry unavailable")]
    Unavailable(#[source] Error),
}

impl Denial {
    /// The validation step that refused (as `explain` names them).
    pub fn step(&self) -> &'static str {
        match self {
            Denial::UntrustedIssuer => "chain",
            Denial::CertRevoked(_) | Denial::CertRetired(_) => "revocation",
            Denial::NoIdentity(_) | Denial::NotADeviceCertificate(_) => "identity",
            Denial::UnknownDevice(_) | Denial::WrongCa(_) => "registration",
            Denial::Disabled(_) | Denial::DeviceRevoked(_) => "device_state",
            Denial::InsecureDenied(_) | Denial::BadToken(_) => "policy",
            Denial::Unavailable(_) => "registry",
        }
    }
}

impl From<Error> for Denial {
    fn from(e: Error) -> Self {
        Denial::Unavailable(e)
    }
}

impl From<moat_store::Error> for Denial {
    fn from(e: moat_store::Error) -> Self {
        Denial::Unavailable(e.into())
    }
}

/// An admitted device.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The device.
    pub device: Device,
    /// The CA whose certificate admitted it (mutual TLS).
    pub ca_name: Option<String>,
    /// Created on this connection by an auto-registering CA.
    pub auto_registered: bool,
}

/// What [`Hub::check_leaf`] found before the policy step.
pub(crate) struct LeafCheck {
    pub(crate) identity: String,
    pub(crate) device: Option<Device>,
    pub(crate) record: Option<CertRecord>,
    pub(crate) serial: String,
}

/// The trust anchors of `cas`, in the same order (so a chain's CA index maps back).
pub(crate) fn trust_anchors(cas: &[CaRecord]) -> Vec<moat_pki::TrustedCa> {
    cas.iter()
        .map(|c| moat_pki::TrustedCa {
            name: c.name.clone(),
            cert: CertificateDer::from(c.cert_der.clone()),
            intermediates: Vec::new(),
        })
        .collect()
}

impl Hub {
    /// The CAs whose client certificates the hub trusts: the device CA, then registered CAs.
    pub async fn client_cas(&self) -> Result<Vec<CaRecord>, Error> {
        Ok(self.cached_client_cas().await?.cas.clone())
    }

    /// [`Self::client_cas`] with their subjects, from the short-lived cache (see `cache.rs`).
    pub(crate) async fn cached_client_cas(&self) -> Result<Arc<ClientCas>, Error> {
        self.client_ca_cache
            .get_or_load(|| async {
                let mut cas = Vec::new();
                for c in self.store().list_cas().await? {
                    match c.kind {
                        CaKind::DeviceIssuing => cas.insert(0, c),
                        CaKind::Registered => cas.push(c),
                        CaKind::Root => {}
                    }
                }
                let subjects = cas
                    .iter()
                    .map(|ca| moat_pki::cert_info(&ca.cert_der).ok().map(|i| i.subject))
                    .collect();
                Ok(ClientCas { cas, subjects })
            })
            .await
    }

    /// The client CA that issued `chain` (verified by a TLS handshake): the first of
    /// [`Self::client_cas`] whose subject is an issuer in the chain.
    pub(crate) async fn issuing_client_ca(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<Option<CaRecord>, Error> {
        let cas = self.cached_client_cas().await?;
        let issuers: Vec<String> = chain
            .iter()
            .filter_map(|c| moat_pki::cert_info(c).ok().map(|i| i.issuer))
            .collect();
        Ok(cas
            .subjects
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| issuers.contains(s)))
            .and_then(|i| cas.cas.get(i).cloned()))
    }

    /// Admits a device by a certificate chain **that the TLS handshake already verified**
    /// (signature chain, validity, clientAuth usage, proof of possession). Finds the issuing
    /// CA by name and runs steps 2–6.
    pub async fn admit_verified_certificate(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<Admission, Denial> {
        let leaf = chain.first().ok_or(Denial::UntrustedIssuer)?;
        let ca = self
            .issuing_client_ca(chain)
            .await?
            .ok_or(Denial::UntrustedIssuer)?;
        let checked = self.check_leaf(leaf, &ca).await?;
        let (device, auto_registered) = match checked.device {
            Some(d) => (d, false),
            None => (
                self.auto_register(leaf, &ca, &checked.identity).await?,
                true,
            ),
        };
        if checked.record.is_none() && !auto_registered {
            // A newer certificate from a registered CA for a known device (the vendor rotated
            // it): record it so it can be revoked by serial.
            let rec = cert_record(
                leaf,
                &ca.name,
                Some(&device.id),
                CertSource::Bound,
                OffsetDateTime::now_utc(),
            )?;
            if let Err(e) = self.store().insert_cert(&rec).await
                && !matches!(e, moat_store::Error::Conflict(_))
            {
                return Err(Denial::Unavailable(e.into()));
            }
        }
        Ok(Admission {
            device,
            ca_name: Some(ca.name),
            auto_registered,
        })
    }

    /// Steps 2–5 for a leaf issued by `ca`: revocation, identity, registration, state.
    pub(crate) async fn check_leaf(&self, leaf: &[u8], ca: &CaRecord) -> Result<LeafCheck, Denial> {
        let info = moat_pki::cert_info(leaf).map_err(|e| Denial::NoIdentity(e.to_string()))?;
        let record = self
            .store()
            .cert_by_fingerprint(&info.fingerprint_sha256)
            .await?;
        if let Some(r) = record.as_ref().filter(|r| r.revoked_at.is_some()) {
            return Err(Denial::CertRevoked(r.serial.clone()));
        }
        if let Some(r) = record.as_ref().filter(|r| {
            r.retire_at
                .is_some_and(|at| at <= OffsetDateTime::now_utc())
        }) {
            return Err(Denial::CertRetired(r.serial.clone()));
        }
        if let Some(r) = record.as_ref().filter(|r| r.device_id.is_none()) {
            // A station certificate carries a name the hub might also know as a device id;
            // the registry says what it is.
            return Err(Denial::NotADeviceCertificate(r.serial.clone()));
        }
        if record.is_none() && ca.kind == CaKind::DeviceIssuing {
            // Every certificate the hub issues is recorded before it is returned: one the
            // registry does not know was not issued by this hub's registry.
            return Err(Denial::UntrustedIssuer);
        }
        let rule = IdentityRule::parse(&ca.identity_rule).unwrap_or(IdentityRule::Cn);
        let identity =
            moat_pki::identity_of(leaf, rule).map_err(|e| Denial::NoIdentity(e.to_string()))?;
        let device = self.store().device(&identity).await?;
        match &device {
            // A device registered through a vendor CA may also hold hub-issued operational
            // certificates (field provisioning): the registry records each one for it.
            Some(d)
                if d.ca_name != ca.name
                    && !(ca.kind == CaKind::DeviceIssuing
                        && record
                            .as_ref()
                            .is_some_and(|r| r.device_id.as_deref() == Some(d.id.as_str()))) =>
            {
                return Err(Denial::WrongCa(identity));
            }
            Some(d) if d.state == DeviceState::Disabled => return Err(Denial::Disabled(identity)),
            Some(d) if d.state == DeviceState::Revoked => {
                return Err(Denial::DeviceRevoked(identity));
            }
            Some(_) => {}
            None if ca.auto_register => {}
            None => return Err(Denial::UnknownDevice(identity)),
        }
        Ok(LeafCheck {
            identity,
            device,
            record,
            serial: info.serial,
        })
    }

    async fn auto_register(&self, leaf: &[u8], ca: &CaRecord, id: &str) -> Result<Device, Denial> {
        crate::validate_device_id(id).map_err(|e| Denial::NoIdentity(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let device = Device {
            id: id.to_string(),
            state: DeviceState::Active,
            policy: ConnectionPolicy::DenyInsecure,
            token_hash: None,
            ca_name: ca.name.clone(),
            created_at: now,
            updated_at: now,
            factory: None,
            stage: moat_store::Stage::Enrolled,
            owner: None,
            status_reason: None,
        };
        let rec = cert_record(leaf, &ca.name, Some(id), CertSource::Bound, now)?;
        match self.store().create_device(&device, Some(&rec)).await {
            Ok(()) => {
                self.emit(Event::DeviceCreated {
                    device_id: id.to_string(),
                });
                let _ = self
                    .audited(
                        &Actor::system(),
                        "device.auto_register",
                        Some(id),
                        Ok::<(), Error>(()),
                    )
                    .await;
                Ok(device)
            }
            // Two first connections at once: the other one created it.
            Err(moat_store::Error::Conflict(_)) => self
                .store()
                .device(id)
                .await?
                .ok_or_else(|| Denial::UnknownDevice(id.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Admits a device by its token (server TLS or plain TCP): only devices whose policy is
    /// `allow_insecure`, active, with the right token.
    pub async fn admit_token(
        &self,
        device_id: &str,
        token: &[u8],
        mode: ConnectMode,
    ) -> Result<Admission, Denial> {
        let device = self
            .store()
            .device(device_id)
            .await?
            .ok_or_else(|| Denial::UnknownDevice(device_id.to_string()))?;
        // The client only ever learns "not authorized"; the order below makes the audit log
        // say the most useful thing (a deny_insecure device trying a token is a policy event).
        if mode != ConnectMode::MutualTls && device.policy != ConnectionPolicy::AllowInsecure {
            return Err(Denial::InsecureDenied(device.id));
        }
        let token_ok = match (&device.token_hash, std::str::from_utf8(token)) {
            (Some(hash), Ok(t)) => token_matches(t, hash),
            _ => false,
        };
        if !token_ok {
            return Err(Denial::BadToken(device_id.to_string()));
        }
        match device.state {
            DeviceState::Disabled => return Err(Denial::Disabled(device.id)),
            DeviceState::Revoked => return Err(Denial::DeviceRevoked(device.id)),
            DeviceState::Active => {}
        }
        Ok(Admission {
            device,
            ca_name: None,
            auto_registered: false,
        })
    }
}
