//! Admission of a connecting device. [`CertificateCheck`] is the one decision whether a
//! client certificate may act as a device right now (DESIGN.md's steps 1–5); every entry point
//! that accepts a device certificate runs it at every use: MQTT CONNECT and firmware downloads
//! (through [`Hub::admit_certificate`]), EST re-enrollment, field provisioning and
//! `moat cert explain`. Token devices go through [`Hub::admit_token`], which shares the
//! device-state step. [`Denial`] is the one refusal enum; its [`Denial::step`] names the
//! failed step.

use crate::hub::cert_record;
use crate::issuance::{Grant, Holder, IssueError, Key, NewDevice};
use crate::{Actor, Error, Hub, token_matches};
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

/// Why a client is refused, whichever entry point it came through (MQTT CONNECT, firmware
/// download, EST re-enrollment, field provisioning, `moat cert explain`). MQTT clients only
/// learn "not authorized"; the HTTP entry points send the text as the public reason. Every
/// variant names its validation step ([`Denial::step`]).
#[derive(Debug, thiserror::Error)]
pub enum Denial {
    /// The certificate's validity period has not started.
    #[error("certificate {serial} is not valid before {not_before}")]
    NotYetValid {
        /// Its serial (hex).
        serial: String,
        /// Start of its validity.
        not_before: OffsetDateTime,
    },
    /// The certificate's validity period has ended (also after a TLS session established
    /// while it was valid is resumed).
    #[error("certificate {serial} expired at {not_after}")]
    Expired {
        /// Its serial (hex).
        serial: String,
        /// End of its validity.
        not_after: OffsetDateTime,
    },
    /// No CA the hub trusts now issued the certificate.
    #[error("certificate does not chain to a trusted CA")]
    UntrustedIssuer,
    /// The chain does not verify for client authentication (bad signature, wrong usage, an
    /// expired CA…).
    #[error("certificate chain refused: {0}")]
    Chain(#[source] moat_pki::ChainError),
    /// The certificate is revoked.
    #[error("certificate {0} is revoked")]
    CertRevoked(String),
    /// A newer certificate superseded this one and its overlap has ended (the retirement
    /// sweep revokes it; this refuses it before the sweep runs).
    #[error(
        "certificate {0} was superseded by a newer certificate and its overlap has ended; use the newer one"
    )]
    CertRetired(String),
    /// A certificate of the hub's that identifies no device (a factory station's EST
    /// credential, the hub's own server certificate).
    #[error("certificate {serial} is not a device certificate: {why}")]
    NotADeviceCertificate {
        /// Its serial (hex).
        serial: String,
        /// What it is instead.
        why: &'static str,
    },
    /// The certificate carries no identity under its CA's rule.
    #[error("certificate has no identity: {0}")]
    NoIdentity(String),
    /// The registry records the certificate for another device than the one its subject
    /// names under its CA's rule.
    #[error("certificate names device {identity:?} but was issued to device {recorded:?}")]
    IdentityMismatch {
        /// The identity by the CA's rule.
        identity: String,
        /// The device the registry recorded it for.
        recorded: String,
    },
    /// No such device, and its CA does not auto-register.
    #[error(
        "device {0:?} is not registered and its CA does not auto-register devices; create it first (moat device create {0} --cert …)"
    )]
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
    /// The registry failed; the device may be fine. (Boxed: `Error` can carry a `Denial`.)
    #[error("registry unavailable")]
    Unavailable(#[source] Box<Error>),
}

/// The validation steps, in the order they run (DESIGN.md): what `moat cert explain` lists
/// and [`Denial::step`] returns (or `registry`, when the registry could not be read).
pub const STEPS: [&str; 7] = [
    "validity",
    "chain",
    "revocation",
    "identity",
    "registration",
    "device_state",
    "policy",
];

impl Denial {
    /// The validation step that refused (one of [`STEPS`], or `registry`).
    pub fn step(&self) -> &'static str {
        match self {
            Denial::NotYetValid { .. } | Denial::Expired { .. } => "validity",
            Denial::UntrustedIssuer | Denial::Chain(_) => "chain",
            Denial::CertRevoked(_) | Denial::CertRetired(_) => "revocation",
            Denial::NoIdentity(_)
            | Denial::NotADeviceCertificate { .. }
            | Denial::IdentityMismatch { .. } => "identity",
            Denial::UnknownDevice(_) | Denial::WrongCa(_) => "registration",
            Denial::Disabled(_) | Denial::DeviceRevoked(_) => "device_state",
            Denial::InsecureDenied(_) | Denial::BadToken(_) => "policy",
            Denial::Unavailable(_) => "registry",
        }
    }
}

impl From<Error> for Denial {
    fn from(e: Error) -> Self {
        Denial::Unavailable(Box::new(e))
    }
}

impl From<moat_store::Error> for Denial {
    fn from(e: moat_store::Error) -> Self {
        Denial::Unavailable(Box::new(e.into()))
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

/// A client certificate chain as it reached the hub, for [`CertificateCheck`].
#[derive(Clone, Copy, Debug)]
enum Presented {
    /// Verified by a full TLS handshake of the connection it arrived on (chain to a client
    /// CA, validity then, clientAuth usage, proof of possession, the revoked set): the
    /// signature chain is not verified again, the CA is found by name.
    FullHandshake,
    /// Restored by TLS session resumption, or read from a file: the chain is verified again
    /// against the CAs trusted now.
    Unverified,
}

/// **The** decision whether a presented client certificate may act as a device right now:
/// DESIGN.md's validation steps 1–5 in order — validity period at the time of use, chain to
/// a CA trusted now, revocation and retire time, identity (station or server certificates are
/// not devices; the CA's identity rule; the registry's record of whom it was issued to),
/// registration, device state. MQTT CONNECT, firmware downloads, EST re-enrollment, field
/// provisioning and `moat cert explain` all run it at every use, so they cannot disagree.
///
/// ```text
///   let checked = CertificateCheck::tls(&chain, resumed).run(&hub).await?;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct CertificateCheck<'a> {
    chain: &'a [CertificateDer<'a>],
    presented: Presented,
}

/// A certificate that passed [`CertificateCheck`].
#[derive(Clone, Debug)]
pub struct CheckedCertificate {
    /// The device identity, by the issuing CA's rule.
    pub identity: String,
    /// The registered device; None when its CA auto-registers and it is new.
    pub device: Option<Device>,
    /// The client CA that issued it.
    pub ca: CaRecord,
    /// The registry's row for this certificate, if it has one.
    pub record: Option<CertRecord>,
    /// What the certificate says.
    pub info: moat_pki::CertInfo,
}

impl<'a> CertificateCheck<'a> {
    /// A chain from a TLS connection (leaf first). `resumed`: the handshake resumed an
    /// earlier session, so the verifier did not run on this connection.
    pub fn tls(chain: &'a [CertificateDer<'a>], resumed: bool) -> Self {
        CertificateCheck {
            chain,
            presented: if resumed {
                Presented::Unverified
            } else {
                Presented::FullHandshake
            },
        }
    }

    /// A chain nobody has verified (leaf first), e.g. a file given to `moat cert explain`.
    /// The possession of its key is not proven.
    pub fn unverified(chain: &'a [CertificateDer<'a>]) -> Self {
        CertificateCheck {
            chain,
            presented: Presented::Unverified,
        }
    }

    /// The chain, leaf first (empty when the client presented none).
    pub fn chain(&self) -> &'a [CertificateDer<'a>] {
        self.chain
    }

    /// Runs the steps; the first that fails refuses.
    pub async fn run(self, hub: &Hub) -> Result<CheckedCertificate, Denial> {
        let now = OffsetDateTime::now_utc();
        let leaf = self.chain.first().ok_or(Denial::UntrustedIssuer)?;
        // 1. Validity at the time of use: a resumed TLS session, a kept-alive HTTP
        //    connection or a file may carry a certificate that has expired since.
        let info = moat_pki::cert_info(leaf).map_err(|e| Denial::NoIdentity(e.to_string()))?;
        if now < info.not_before {
            return Err(Denial::NotYetValid {
                serial: info.serial,
                not_before: info.not_before,
            });
        }
        if now >= info.not_after {
            return Err(Denial::Expired {
                serial: info.serial,
                not_after: info.not_after,
            });
        }
        // 2. Chain to a CA trusted now.
        let cas = hub.cached_client_cas().await?;
        let ca = match self.presented {
            Presented::FullHandshake => {
                // The leaf was read above; only the intermediates are parsed here.
                let issuers: Vec<String> = std::iter::once(info.issuer.clone())
                    .chain(
                        self.chain
                            .iter()
                            .skip(1)
                            .filter_map(|c| moat_pki::cert_info(c).ok().map(|i| i.issuer)),
                    )
                    .collect();
                cas.subjects
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| issuers.contains(s)))
                    .and_then(|i| cas.cas.get(i).cloned())
                    .ok_or(Denial::UntrustedIssuer)?
            }
            Presented::Unverified => {
                let rest = self.chain.get(1..).unwrap_or_default();
                match moat_pki::verify_client_chain(leaf, rest, &trust_anchors(&cas.cas), now) {
                    Ok(i) => cas.cas.get(i).cloned().ok_or(Denial::UntrustedIssuer)?,
                    Err(moat_pki::ChainError::UnknownIssuer) => {
                        return Err(Denial::UntrustedIssuer);
                    }
                    Err(e) => return Err(Denial::Chain(e)),
                }
            }
        };
        // 3. Revocation and retire time, from the registry (the handshake's revoked set may
        //    not have run: resumption).
        let record = hub.cert_row(&info.fingerprint_sha256).await?;
        if let Some(r) = &record {
            if r.revoked_at.is_some() {
                return Err(Denial::CertRevoked(r.serial.clone()));
            }
            if r.retire_at.is_some_and(|at| at <= now) {
                return Err(Denial::CertRetired(r.serial.clone()));
            }
        }
        // 4. Identity. The registry says what a certificate it knows is: a station's EST
        //    credential carries a name the hub might also know as a device id.
        let recorded_for = match &record {
            Some(r) => match (&r.device_id, r.source) {
                (Some(d), _) => Some(d.as_str()),
                (None, CertSource::Station) => {
                    return Err(Denial::NotADeviceCertificate {
                        serial: r.serial.clone(),
                        why: "it is a station certificate",
                    });
                }
                (None, _) => {
                    return Err(Denial::NotADeviceCertificate {
                        serial: r.serial.clone(),
                        why: "it identifies no device",
                    });
                }
            },
            // Every certificate the hub issues is recorded before it is returned: one the
            // registry does not know was not issued by this hub's registry.
            None if ca.kind == CaKind::DeviceIssuing => return Err(Denial::UntrustedIssuer),
            None => None,
        };
        let rule = IdentityRule::parse(&ca.identity_rule).unwrap_or(IdentityRule::Cn);
        let identity = moat_pki::identity_of_info(&info, leaf, rule)
            .map_err(|e| Denial::NoIdentity(e.to_string()))?;
        if let Some(recorded) = recorded_for.filter(|r| *r != identity) {
            return Err(Denial::IdentityMismatch {
                identity,
                recorded: recorded.to_string(),
            });
        }
        // 5. Registration and device state.
        let device = hub.device_row(&identity).await?;
        match &device {
            // A device registered through a vendor CA may also hold hub-issued operational
            // certificates (field provisioning): the registry records each one for it.
            Some(d)
                if d.ca_name != ca.name
                    && !(ca.kind == CaKind::DeviceIssuing
                        && recorded_for == Some(d.id.as_str())) =>
            {
                return Err(Denial::WrongCa(identity));
            }
            Some(d) => check_state(d)?,
            None if ca.auto_register && ca.kind == CaKind::Registered => {}
            None => return Err(Denial::UnknownDevice(identity)),
        }
        Ok(CheckedCertificate {
            identity,
            device,
            ca,
            record,
            info,
        })
    }
}

impl Hub {
    /// Whether `identity`, connected now, may stay connected: still registered and active,
    /// read from the registry (no cache). Run over a node's live sessions when it may have
    /// missed changes made elsewhere (its cluster link was down): the registration and
    /// device-state steps of the check. The session does not keep its certificate, so a
    /// revocation of that one certificate is not seen here; the event that carries it, and
    /// every later CONNECT, refuse it.
    pub async fn recheck_identity(&self, identity: &str) -> Result<(), Denial> {
        let device = self
            .store()
            .device(identity)
            .await?
            .ok_or_else(|| Denial::UnknownDevice(identity.to_string()))?;
        check_state(&device)
    }
}

/// The device-state step, for certificates and tokens alike.
fn check_state(device: &Device) -> Result<(), Denial> {
    match device.state {
        DeviceState::Active => Ok(()),
        DeviceState::Disabled => Err(Denial::Disabled(device.id.clone())),
        DeviceState::Revoked => Err(Denial::DeviceRevoked(device.id.clone())),
    }
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

    /// Admits a device by a client certificate over MQTT or the firmware download listener:
    /// [`CertificateCheck`], then auto-registration of a new device of an auto-registering
    /// CA, and a newer vendor certificate of a known device recorded so that it can be
    /// revoked by serial.
    pub async fn admit_certificate(
        &self,
        check: CertificateCheck<'_>,
    ) -> Result<Admission, Denial> {
        let leaf = check.chain.first().ok_or(Denial::UntrustedIssuer)?;
        let checked = check.run(self).await?;
        let ca = checked.ca;
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
                return Err(Denial::Unavailable(Box::new(e.into())));
            }
        }
        Ok(Admission {
            device,
            ca_name: Some(ca.name),
            auto_registered,
        })
    }

    /// Creates the device a new certificate of an auto-registering CA identifies, bound to
    /// that certificate, through the one issuance pipeline.
    async fn auto_register(&self, leaf: &[u8], ca: &CaRecord, id: &str) -> Result<Device, Denial> {
        crate::validate_device_id(id).map_err(|e| Denial::NoIdentity(e.to_string()))?;
        let actor = Actor::system();
        let grant = Grant {
            device_id: id.to_string(),
            key: Key::Bound {
                cert: CertificateDer::from(leaf.to_vec()),
                ca_name: ca.name.clone(),
            },
            holder: Holder::New(NewDevice::mutual_tls(
                ca.name.clone(),
                moat_store::Stage::Enrolled,
            )),
            presented: None,
            claim_serial: None,
            supersede: None,
            provisioning: None,
            actor: &actor,
            action: "device.auto_register",
            target: id.to_string(),
            note: format!(" of auto-registering CA {}", ca.name),
            now: OffsetDateTime::now_utc(),
        };
        match self.issue(grant).await {
            Ok(issued) => Ok(issued.device),
            // Two first connections at once: the other one created it.
            Err(IssueError::Registry(moat_store::Error::Conflict(_))) => self
                .store()
                .device(id)
                .await?
                .ok_or_else(|| Denial::UnknownDevice(id.to_string())),
            Err(e) => Err(Error::from(e).into()),
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
        check_state(&device)?;
        Ok(Admission {
            device,
            ca_name: None,
            auto_registered: false,
        })
    }
}
