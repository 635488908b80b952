//! Verified ingest of what gateways relay: the broker's interceptor for
//! `gateways/+/up/#` ([`moat_core::UPLINK_FILTER`]) and `gateways/+/down/#`
//! ([`moat_core::DOWNLINK_FILTER`]). Each uplink is decided by [`Hub::verify_relayed`] while
//! the gateway waits for its PUBACK:
//!
//! - accepted: republished to `devices/{device}/{suffix}` with the payload unchanged (the COSE
//!   object, which an application can verify without trusting the hub) and the MQTT 5 user
//!   properties `moat-device` (the verified device), `moat-gateway` and `moat-cose` (the
//!   algorithm). The broker strips `moat-*` properties from every client's messages first
//!   (`BrokerConfig::reserved_user_properties`), so only these reach subscribers.
//! - refused: PUBACK 0x87 (Not authorized) to an MQTT 5 gateway, 0x80 when the registry could
//!   not decide (try again), with the refusal's reason name as reason string; counted by
//!   reason (`moat_relay_refused`) and audited as `gateway.relay`, refused, with the reason
//!   and its detail (at most [`AUDITS_PER_MINUTE`] entries per gateway a minute: a gateway
//!   flooding forgeries cannot flood the audit log; the count keeps every one).
//!
//! A downlink (an application's signed command for a device) is checked by
//! [`Hub::check_downlink`] (the gateway may serve the device, the object has the format) and
//! routed unchanged to the gateway, which forwards it; the device verifies the signature and
//! its counter. Refused downlinks get 0x87 and a `gateway.downlink` audit entry.

use async_trait::async_trait;
use moat_broker::intercept::{Interceptor, Publisher, Refused, Verdict};
use moat_broker::{Message, reason};
use moat_core::{Actor, Downlink, FailureLimiter, Hub, RELAY_REASONS, RelayRefusal, Uplink};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The user properties of a verified relayed message.
pub const PROPERTY_DEVICE: &str = "moat-device";
/// The gateway that relayed it.
pub const PROPERTY_GATEWAY: &str = "moat-gateway";
/// The COSE algorithm of its signature (`ES256`).
pub const PROPERTY_COSE: &str = "moat-cose";
/// The prefix only the hub may use in user properties.
pub const RESERVED_PREFIX: &str = "moat-";

/// Audit entries of refused relays per gateway per minute, at most.
pub const AUDITS_PER_MINUTE: u32 = 60;

/// Gateways tracked by the audit limiter.
const LIMITER_CAPACITY: usize = 10_000;

/// The interceptor of relayed uplinks.
#[derive(Debug)]
pub struct RelayIngest {
    hub: Arc<Hub>,
    /// Messages accepted since start.
    accepted: AtomicU64,
    /// Refused since start, by reason (every reason present, zeros included).
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Audit entries written per gateway, to bound them.
    audits: FailureLimiter<String>,
    /// Refusals not audited because their gateway was over [`AUDITS_PER_MINUTE`].
    audits_suppressed: AtomicU64,
    /// Downlinks routed to their gateway since start.
    downlinks_accepted: AtomicU64,
    /// Downlinks refused since start.
    downlinks_refused: AtomicU64,
}

/// Which way a relayed message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// A device's message, through its gateway, to the hub.
    Up,
    /// An application's message, through the gateway, to a device.
    Down,
}

impl RelayIngest {
    /// Ingest over `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        RelayIngest {
            hub,
            accepted: AtomicU64::new(0),
            refused: Mutex::new(RELAY_REASONS.iter().map(|r| (*r, 0)).collect()),
            audits: FailureLimiter::new(
                AUDITS_PER_MINUTE,
                Duration::from_secs(60),
                LIMITER_CAPACITY,
            ),
            audits_suppressed: AtomicU64::new(0),
            downlinks_accepted: AtomicU64::new(0),
            downlinks_refused: AtomicU64::new(0),
        }
    }

    /// Downlinks routed to their gateway, and refused, since start.
    pub fn downlinks(&self) -> (u64, u64) {
        (
            self.downlinks_accepted.load(Ordering::Relaxed),
            self.downlinks_refused.load(Ordering::Relaxed),
        )
    }

    /// Relayed messages accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Relayed messages refused since start, by reason.
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        let m = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Refusals not audited (their gateway was over the audit limit).
    pub fn audits_suppressed(&self) -> u64 {
        self.audits_suppressed.load(Ordering::Relaxed)
    }

    async fn refuse(
        &self,
        way: Way,
        publisher: &Publisher,
        topic: &str,
        refusal: RelayRefusal,
    ) -> Verdict {
        let why = refusal.reason();
        let (device, action) = match way {
            Way::Up => {
                *self
                    .refused
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(why)
                    .or_default() += 1;
                (
                    Uplink::parse(topic).map_or("-", |u| u.device),
                    "gateway.relay",
                )
            }
            Way::Down => {
                self.downlinks_refused.fetch_add(1, Ordering::Relaxed);
                (
                    Downlink::parse(topic).map_or("-", |d| d.device),
                    "gateway.downlink",
                )
            }
        };
        let code = match refusal {
            RelayRefusal::Unavailable(ref e) => {
                tracing::error!(error = ?e, gateway = %publisher.identity, %device, "registry unavailable while verifying a relayed message");
                reason::UNSPECIFIED
            }
            _ => {
                tracing::warn!(gateway = %publisher.identity, %device, reason = why, %refusal, "relayed message refused");
                reason::NOT_AUTHORIZED
            }
        };
        if !matches!(refusal, RelayRefusal::Unavailable(_)) {
            if self.audits.is_limited(&publisher.identity) {
                self.audits_suppressed.fetch_add(1, Ordering::Relaxed);
            } else {
                self.audits.record_failure(&publisher.identity);
                self.hub
                    .record_admin_action(
                        &Actor(format!("{}@{}", publisher.identity, publisher.peer.ip())),
                        action,
                        Some(device),
                        "refused",
                        Some(format!("{why}: {refusal}")),
                    )
                    .await;
            }
        }
        Verdict::Refuse(Refused {
            code,
            reason: format!("relayed message refused: {why}"),
        })
    }
}

#[async_trait]
impl Interceptor for RelayIngest {
    async fn intercept(&self, publisher: &Publisher, mut message: Message) -> Verdict {
        if message.topic.split('/').nth(2) == Some("down") {
            return self.downlink(publisher, message).await;
        }
        let uplink = match Uplink::parse_or_refuse(&message.topic) {
            Ok(u) => u,
            Err(refusal) => {
                return self
                    .refuse(Way::Up, publisher, &message.topic, refusal)
                    .await;
            }
        };
        let verified = self
            .hub
            .verify_relayed(
                &publisher.identity,
                &uplink,
                &message.payload,
                moat_broker::topic::matches,
            )
            .await;
        match verified {
            Ok(relayed) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(gateway = %uplink.gateway, device = %relayed.device_id, counter = relayed.counter, "relayed message verified");
                let gateway = uplink.gateway.to_string();
                message.topic = uplink.device_topic();
                message.properties.user.extend([
                    (PROPERTY_DEVICE.to_string(), relayed.device_id),
                    (PROPERTY_GATEWAY.to_string(), gateway),
                    (PROPERTY_COSE.to_string(), relayed.algorithm.to_string()),
                ]);
                Verdict::Route(Box::new(message))
            }
            Err(refusal) => {
                let topic = message.topic.clone();
                self.refuse(Way::Up, publisher, &topic, refusal).await
            }
        }
    }
}

impl RelayIngest {
    async fn downlink(&self, publisher: &Publisher, message: Message) -> Verdict {
        let checked = match Downlink::parse(&message.topic) {
            Some(d) => self.hub.check_downlink(&d, &message.payload).await,
            None => Err(RelayRefusal::BadTopic {
                topic: message.topic.clone(),
            }),
        };
        match checked {
            Ok(()) => {
                self.downlinks_accepted.fetch_add(1, Ordering::Relaxed);
                Verdict::Route(Box::new(message))
            }
            Err(refusal) => {
                let topic = message.topic.clone();
                self.refuse(Way::Down, publisher, &topic, refusal).await
            }
        }
    }
}
