//! Messages of devices without IP, relayed by a gateway: the hub's checks at ingest.
//!
//! A gateway publishes a device's COSE_Sign1 object (moat-cose's format: ES256, `x5t`,
//! `Partial IV` counter) unchanged to `gateways/{gateway}/up/{device}/{suffix}`
//! ([`Uplink`]). [`Hub::verify_relayed`] decides, in this order, each step a
//! [`RelayRefusal`]:
//!
//! 1. the publisher is gateway `{gateway}`, and that gateway may relay for `{device}` (an
//!    allowance names the device, its MQTT group, or the enrollment group that provisioned
//!    it);
//! 2. the object parses, and its `x5t` names a certificate the registry holds for `{device}`;
//! 3. the signature verifies with that certificate's key;
//! 4. the certificate passes [`CertificateCheck`] — the one check of a certificate acting as
//!    a device, as at a direct CONNECT (validity now, chain, revocation and retire time,
//!    identity, registration, device state);
//! 5. the device's topic ACL lets it publish `devices/{device}/{suffix}`, where the message is
//!    republished;
//! 6. the counter is fresh: the device's [`ReplayWindow`] (32 counters) accepts it, and the
//!    new window is written to the registry (compare-and-set) before the message is accepted,
//!    so a replay is refused after a restart and on any node.
//!
//! Nothing here trusts the gateway beyond its right to relay: it can drop messages, but not
//! forge, alter or replay them, nor relay for devices it was not given.

use crate::{CertificateCheck, Denial, Error, Hub, validate_device_id};
use moat_cose::{ReplayWindow, decode_sign1};
use moat_store::{AllowanceKind, IdentityKind};
use p256::pkcs8::DecodePublicKey;
use rustls_pki_types::CertificateDer;
use std::hash::{BuildHasher, Hasher};
use time::OffsetDateTime;

/// The uplink topic tree's filter, for the broker: `gateways/+/up/#`.
pub const UPLINK_FILTER: &str = "gateways/+/up/#";

/// Where a gateway publishes a device's message: `gateways/{gateway}/up/{device}/{suffix}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink<'a> {
    /// The gateway (must be the publisher).
    pub gateway: &'a str,
    /// The device whose message it is (claimed until verified).
    pub device: &'a str,
    /// The rest of the topic: the message goes to `devices/{device}/{suffix}`.
    pub suffix: &'a str,
}

impl<'a> Uplink<'a> {
    /// Splits an uplink topic; `None` if it is not one (no suffix, or a gateway or device name
    /// that is not an identity).
    pub fn parse(topic: &'a str) -> Option<Self> {
        let (gateway, device, suffix) = split(topic, "up")?;
        Some(Uplink {
            gateway,
            device,
            suffix,
        })
    }

    /// [`Uplink::parse`], refusing what is not an uplink topic.
    pub fn parse_or_refuse(topic: &'a str) -> Result<Self, RelayRefusal> {
        Self::parse(topic).ok_or_else(|| RelayRefusal::BadTopic {
            topic: topic.to_string(),
        })
    }

    /// The topic the verified message is republished to: `devices/{device}/{suffix}`.
    pub fn device_topic(&self) -> String {
        format!("devices/{}/{}", self.device, self.suffix)
    }
}

/// `gateways/{gateway}/{way}/{device}/{suffix}` → (gateway, device, suffix), names checked.
fn split<'a>(topic: &'a str, way: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let rest = topic.strip_prefix("gateways/")?;
    let (gateway, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix(way)?.strip_prefix('/')?;
    let (device, suffix) = rest.split_once('/')?;
    if suffix.is_empty() || validate_device_id(gateway).is_err() {
        return None;
    }
    validate_device_id(device).ok()?;
    Some((gateway, device, suffix))
}

/// The downlink tree's filter, for the broker: `gateways/+/down/#`.
pub const DOWNLINK_FILTER: &str = "gateways/+/down/#";

/// Where an application (or the hub) publishes a signed message for a device behind a
/// gateway: `gateways/{gateway}/down/{device}/{suffix}`. The gateway subscribes to its tree
/// and forwards the object unchanged; the device verifies it (signature with the signer's
/// certificate it trusts, its own replay window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downlink<'a> {
    /// The gateway that will forward it.
    pub gateway: &'a str,
    /// The device it is for.
    pub device: &'a str,
    /// The rest of the topic.
    pub suffix: &'a str,
}

impl<'a> Downlink<'a> {
    /// Splits a downlink topic; `None` if it is not one.
    pub fn parse(topic: &'a str) -> Option<Self> {
        let (gateway, device, suffix) = split(topic, "down")?;
        Some(Downlink {
            gateway,
            device,
            suffix,
        })
    }
}

/// A relayed message that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relayed {
    /// The verified device.
    pub device_id: String,
    /// The serial of the certificate that signed it.
    pub serial: String,
    /// Its counter, now in the device's window.
    pub counter: u64,
    /// The COSE algorithm (`ES256`).
    pub algorithm: &'static str,
}

/// Why a relayed message is refused: each one is a security event (audited, counted by
/// [`RelayRefusal::reason`]). The texts name the gateway's or the device's side of it.
#[derive(Debug, thiserror::Error)]
pub enum RelayRefusal {
    /// The topic is not `gateways/{gateway}/up/{device}/{suffix}` with identities for names.
    #[error("topic {topic:?} is not gateways/{{gateway}}/up/{{device}}/{{suffix}}")]
    BadTopic {
        /// The topic.
        topic: String,
    },
    /// The publisher is not the gateway of the topic, or not a gateway at all.
    #[error("{identity:?} is not gateway {gateway:?}")]
    NotTheGateway {
        /// Who published.
        identity: String,
        /// The topic's gateway.
        gateway: String,
    },
    /// The gateway has no allowance that covers the device (or it is not a device).
    #[error("gateway {gateway:?} may not relay for {device:?}")]
    NotAllowed {
        /// The gateway.
        gateway: String,
        /// The device named in the topic.
        device: String,
    },
    /// The payload is not a COSE_Sign1 object of the format (moat-cose).
    #[error("not a signed object of the format: {0}")]
    Malformed(#[source] moat_cose::Error),
    /// The `x5t` names no certificate the registry holds.
    #[error("x5t {x5t} names no certificate the hub knows")]
    UnknownCertificate {
        /// The thumbprint, hex.
        x5t: String,
    },
    /// The `x5t` names a certificate of another device (or of no device).
    #[error("x5t names certificate {serial} of {holder:?}, not of {device:?}")]
    WrongDevice {
        /// The device named in the topic.
        device: String,
        /// Whose certificate it is.
        holder: Option<String>,
        /// Its serial.
        serial: String,
    },
    /// The certificate's key cannot verify ES256 (not P-256).
    #[error("certificate {serial} has no P-256 key")]
    UnsupportedKey {
        /// Its serial.
        serial: String,
    },
    /// The signature does not verify with the certificate's key: altered or forged.
    #[error("signature does not verify with certificate {serial} of {device:?}")]
    BadSignature {
        /// The device.
        device: String,
        /// The certificate's serial.
        serial: String,
    },
    /// The certificate check refused the certificate (revoked, retired, expired, device
    /// disabled or decommissioned…).
    #[error("certificate refused: {0}")]
    Certificate(#[source] Denial),
    /// The device's topic ACL does not let it publish where the message would go.
    #[error("device {device:?} may not publish to {topic:?}")]
    TopicDenied {
        /// The device.
        device: String,
        /// The device topic.
        topic: String,
    },
    /// The counter was accepted before.
    #[error("counter {counter} of {device:?} replayed")]
    Replayed {
        /// The device.
        device: String,
        /// The counter.
        counter: u64,
    },
    /// The counter is below the window: it cannot be told from a replay.
    #[error("counter {counter} of {device:?} is below the replay window (lowest {lowest})")]
    TooOld {
        /// The device.
        device: String,
        /// The counter.
        counter: u64,
        /// The lowest counter the window still takes.
        lowest: u64,
    },
    /// The registry could not be read or written: the message may be fine, try again.
    #[error("registry unavailable")]
    Unavailable(#[source] Box<Error>),
}

impl From<Error> for RelayRefusal {
    fn from(e: Error) -> Self {
        RelayRefusal::Unavailable(Box::new(e))
    }
}

impl From<moat_store::Error> for RelayRefusal {
    fn from(e: moat_store::Error) -> Self {
        RelayRefusal::Unavailable(Box::new(e.into()))
    }
}

/// The stable reasons of [`RelayRefusal::reason`] (metric labels).
pub const RELAY_REASONS: [&str; 18] = [
    "bad_topic",
    "not_the_gateway",
    "not_allowed",
    "malformed",
    "unknown_certificate",
    "forged",
    "unsupported_key",
    "not_yet_valid",
    "expired",
    "revoked",
    "retired",
    "disabled",
    "decommissioned",
    "certificate",
    "topic_denied",
    "replayed",
    "too_old",
    "unavailable",
];

impl RelayRefusal {
    /// A stable name (one of [`RELAY_REASONS`]): the metric label and the audit action's
    /// suffix. A message signed with another device's key is `forged`, whichever
    /// certificate it names.
    pub fn reason(&self) -> &'static str {
        match self {
            RelayRefusal::BadTopic { .. } => "bad_topic",
            RelayRefusal::NotTheGateway { .. } => "not_the_gateway",
            RelayRefusal::NotAllowed { .. } => "not_allowed",
            RelayRefusal::Malformed(_) => "malformed",
            RelayRefusal::UnknownCertificate { .. } => "unknown_certificate",
            RelayRefusal::WrongDevice { .. } | RelayRefusal::BadSignature { .. } => "forged",
            RelayRefusal::UnsupportedKey { .. } => "unsupported_key",
            RelayRefusal::Certificate(d) => match d {
                Denial::NotYetValid { .. } => "not_yet_valid",
                Denial::Expired { .. } => "expired",
                Denial::CertRevoked(_) => "revoked",
                Denial::CertRetired(_) => "retired",
                Denial::Disabled(_) => "disabled",
                Denial::DeviceRevoked(_) => "decommissioned",
                _ => "certificate",
            },
            RelayRefusal::TopicDenied { .. } => "topic_denied",
            RelayRefusal::Replayed { .. } => "replayed",
            RelayRefusal::TooOld { .. } => "too_old",
            RelayRefusal::Unavailable(_) => "unavailable",
        }
    }
}

/// Serialises the read-check-write of relay windows per device on this node (64 shards by
/// device id); between nodes the registry's compare-and-set does.
#[derive(Debug)]
pub(crate) struct WindowLocks {
    shards: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for WindowLocks {
    fn default() -> Self {
        WindowLocks {
            shards: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }
}

impl WindowLocks {
    fn shard(&self, device: &str) -> &tokio::sync::Mutex<()> {
        let mut h = self.hasher.build_hasher();
        h.write(device.as_bytes());
        let n = self.shards.len();
        // `shards` is never empty.
        &self.shards[(h.finish() as usize) % n]
    }
}

/// Compare-and-set attempts before a window write gives up (other nodes writing the same
/// device's window at the same moment).
const WINDOW_ATTEMPTS: usize = 8;

impl Hub {
    /// Runs the checks of the module docs on `object`, published by `identity` to `uplink`.
    /// `covers(filter, topic)` is the broker's topic matching (step 5 applies the device's
    /// ACL exactly as the broker would to the device's own publish). On success the counter
    /// is in the device's stored window: republish the object (once). Every refusal is final
    /// for this object except [`RelayRefusal::Unavailable`].
    pub async fn verify_relayed(
        &self,
        identity: &str,
        uplink: &Uplink<'_>,
        object: &[u8],
        covers: fn(&str, &str) -> bool,
    ) -> Result<Relayed, RelayRefusal> {
        let device = uplink.device;
        // 1. The gateway, and its right to relay for this device.
        if identity != uplink.gateway
            || self.identity_kind(identity).await? != IdentityKind::Gateway
        {
            return Err(RelayRefusal::NotTheGateway {
                identity: identity.to_string(),
                gateway: uplink.gateway.to_string(),
            });
        }
        if !self.may_relay(uplink.gateway, device).await? {
            return Err(RelayRefusal::NotAllowed {
                gateway: uplink.gateway.to_string(),
                device: device.to_string(),
            });
        }
        // 2. The object, and the certificate its x5t names.
        let msg = decode_sign1(object).map_err(RelayRefusal::Malformed)?;
        let x5t = hex::encode(msg.x5t().as_bytes());
        let Some(record) = self.cert_row(&x5t).await? else {
            return Err(RelayRefusal::UnknownCertificate { x5t });
        };
        if record.device_id.as_deref() != Some(device) {
            return Err(RelayRefusal::WrongDevice {
                device: device.to_string(),
                holder: record.device_id,
                serial: record.serial,
            });
        }
        // 3. The signature, with that certificate's key.
        let info = moat_pki::cert_info(&record.der).map_err(Error::Pki)?;
        let key = p256::ecdsa::VerifyingKey::from_public_key_der(&info.spki_der).map_err(|_| {
            RelayRefusal::UnsupportedKey {
                serial: record.serial.clone(),
            }
        })?;
        msg.verify(&key).map_err(|_| RelayRefusal::BadSignature {
            device: device.to_string(),
            serial: record.serial.clone(),
        })?;
        // 4. The one certificate check, as for a device connecting directly.
        let chain = [CertificateDer::from(record.der.as_slice())];
        let checked = match CertificateCheck::unverified(&chain).run(self).await {
            Ok(c) => c,
            Err(Denial::Unavailable(e)) => return Err(RelayRefusal::Unavailable(e)),
            Err(d) => return Err(RelayRefusal::Certificate(d)),
        };
        // The check found the device by the certificate's identity; it is the topic's (the
        // registry recorded the certificate for it, step 2), but say so rather than assume.
        let Some(admitted) = checked.device.filter(|d| d.id == device) else {
            return Err(RelayRefusal::WrongDevice {
                device: device.to_string(),
                holder: Some(checked.identity),
                serial: record.serial,
            });
        };
        // 5. Where it goes: within the device's own topic access.
        let topic = uplink.device_topic();
        let acl = self.topic_acl(&admitted).await?;
        if !acl.publish.iter().any(|f| covers(f, &topic)) {
            return Err(RelayRefusal::TopicDenied {
                device: device.to_string(),
                topic,
            });
        }
        // 6. The counter, stored before the message is accepted.
        self.accept_counter(device, msg.counter()).await?;
        Ok(Relayed {
            device_id: device.to_string(),
            serial: record.serial,
            counter: msg.counter(),
            algorithm: msg.algorithm().name(),
        })
    }

    /// Checks a downlink before the broker routes it to the gateway: the topic's gateway is
    /// one and may relay for the device (an application cannot push through a gateway that
    /// does not serve the device), and the payload is a signed object of the format. The
    /// signature is the device's to check (it trusts the signer's certificate, not the
    /// hub): the hub forwards the object unchanged.
    pub async fn check_downlink(
        &self,
        downlink: &Downlink<'_>,
        object: &[u8],
    ) -> Result<(), RelayRefusal> {
        if self.identity_kind(downlink.gateway).await? != IdentityKind::Gateway
            || !self.may_relay(downlink.gateway, downlink.device).await?
        {
            return Err(RelayRefusal::NotAllowed {
                gateway: downlink.gateway.to_string(),
                device: downlink.device.to_string(),
            });
        }
        decode_sign1(object).map_err(RelayRefusal::Malformed)?;
        Ok(())
    }

    /// Whether `gateway` has an allowance covering `device` (a device, not an application or
    /// a gateway).
    async fn may_relay(&self, gateway: &str, device: &str) -> Result<bool, Error> {
        let allowances = self.store().gateway_allowances(gateway).await?;
        if allowances.is_empty() {
            return Ok(false);
        }
        let access = self.access_row(device).await?;
        if access
            .as_ref()
            .is_some_and(|a| a.kind != IdentityKind::Device)
        {
            return Ok(false);
        }
        let mut enrollment_group: Option<Option<String>> = None;
        for a in &allowances {
            let covered = match a.kind {
                AllowanceKind::Device => a.name == device,
                AllowanceKind::Group => access
                    .as_ref()
                    .and_then(|x| x.group.as_deref())
                    .is_some_and(|g| g == a.name),
                AllowanceKind::EnrollmentGroup => {
                    if enrollment_group.is_none() {
                        let assignment = self.store().assignment(device).await?;
                        enrollment_group = Some(assignment.and_then(|x| x.enrollment_group));
                    }
                    enrollment_group.as_ref().and_then(Option::as_deref) == Some(a.name.as_str())
                }
            };
            if covered {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks `counter` against `device`'s stored window and stores the moved window; refuses
    /// replays and counters below the window.
    async fn accept_counter(&self, device: &str, counter: u64) -> Result<(), RelayRefusal> {
        let _serial = self.relay_locks.shard(device).lock().await;
        for _ in 0..WINDOW_ATTEMPTS {
            let stored = self.store().relay_window(device).await?;
            let window = match &stored {
                Some(w) => ReplayWindow::from_bytes(&w.state).map_err(|_| {
                    Error::Internal(format!("the stored relay window of {device:?} is corrupt"))
                })?,
                None => ReplayWindow::new(),
            };
            let next = window.check(counter).map_err(|e| match e {
                moat_cose::Error::TooOld { lowest, .. } => RelayRefusal::TooOld {
                    device: device.to_string(),
                    counter,
                    lowest,
                },
                _ => RelayRefusal::Replayed {
                    device: device.to_string(),
                    counter,
                },
            })?;
            let written = self
                .store()
                .put_relay_window(
                    device,
                    &next.to_bytes(),
                    stored.map(|w| w.version),
                    OffsetDateTime::now_utc(),
                )
                .await?;
            if written.is_some() {
                return Ok(());
            }
            // Another node moved it meanwhile: decide again on what it wrote.
        }
        Err(Error::Internal(format!(
            "the relay window of {device:?} kept changing under this node"
        ))
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_topics() {
        let u = Uplink::parse("gateways/gw1/up/dev-1/telemetry/temp").expect("an uplink");
        assert_eq!(
            (u.gateway, u.device, u.suffix),
            ("gw1", "dev-1", "telemetry/temp")
        );
        assert_eq!(u.device_topic(), "devices/dev-1/telemetry/temp");
        for bad in [
            "gateways/gw1/up/dev-1",
            "gateways/gw1/up/dev-1/",
            "gateways/gw1/down/dev-1/x",
            "gateways/gw1/up//x",
            "gateways//up/d/x",
            "devices/d/x",
            "gateways/gw1/up/-d/x",
        ] {
            assert_eq!(Uplink::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn downlink_topics() {
        let d = Downlink::parse("gateways/gw1/down/dev-1/cmd").unwrap_or_else(|| panic!());
        assert_eq!((d.gateway, d.device, d.suffix), ("gw1", "dev-1", "cmd"));
        assert_eq!(Downlink::parse("gateways/gw1/up/dev-1/cmd"), None);
        assert_eq!(Uplink::parse("gateways/gw1/down/dev-1/cmd"), None);
        assert_eq!(Uplink::parse("gateways/gw1/upx/dev-1/cmd"), None);
        assert_eq!(Downlink::parse("gateways/gw1/down/dev-1"), None);
    }

    #[test]
    fn every_reason_is_listed() {
        let d = || "d".to_string();
        let refusals = [
            RelayRefusal::BadTopic { topic: d() },
            RelayRefusal::NotTheGateway {
                identity: d(),
                gateway: d(),
            },
            RelayRefusal::NotAllowed {
                gateway: d(),
                device: d(),
            },
            RelayRefusal::Malformed(moat_cose::Error::Truncated),
            RelayRefusal::UnknownCertificate { x5t: d() },
            RelayRefusal::UnsupportedKey { serial: d() },
            RelayRefusal::Certificate(Denial::Disabled(d())),
            RelayRefusal::Certificate(Denial::UntrustedIssuer),
            RelayRefusal::TopicDenied {
                device: d(),
                topic: d(),
            },
            RelayRefusal::Replayed {
                device: d(),
                counter: 1,
            },
            RelayRefusal::Unavailable(Box::new(Error::Internal(d()))),
        ];
        for r in &refusals {
            assert!(RELAY_REASONS.contains(&r.reason()), "{r:?}");
        }
    }
}
