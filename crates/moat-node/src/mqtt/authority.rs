//! The MQTT hub's [`Authority`] over the registry: admission by certificate or token
//! (`moat-core` decides), the default topic ACL, failed-attempt limits, and security events
//! into the audit log.
//!
//! The limits are shaped for devices that share an address (carrier-grade NAT, a site
//! router): a client with a valid certificate is never slowed or refused for anyone else's
//! failures; token failures ban per (address, identity) and per identity; an address with
//! many failures only gets its token CONNECTs slowed down, never refused.

use async_trait::async_trait;
use moat_broker::{Acl, Authority, ConnectRequest, Principal, Refusal, SecurityEvent, Transport};
use moat_core::{CertificateCheck, ConnectMode, Denial, FailureLimiter, Hub};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::Instrument;

/// Admits devices for the broker.
#[derive(Debug)]
pub struct HubAuthority {
    hub: Arc<Hub>,
    /// Token failures per (address, claimed identity): the ban a guessing client meets.
    by_pair: FailureLimiter<(IpAddr, String)>,
    /// Token failures per claimed identity from every address (a distributed guess).
    by_identity: FailureLimiter<String>,
    /// Failures per address, certificate or token: past the limit, token CONNECTs from the
    /// address wait `throttle_delay` (a throttle, not a ban).
    by_addr: FailureLimiter<IpAddr>,
    throttle_delay: Duration,
    /// Admissions without mutual TLS since start, per (device, mode) (the posture audit).
    insecure: Mutex<HashMap<(String, &'static str), u64>>,
    /// Refused CONNECTs since start, per reason (the admission step, `credentials`, `banned`).
    refusals: Mutex<BTreeMap<&'static str, u64>>,
}

/// Distinct (device, mode) pairs of insecure admissions remembered.
const MAX_TRACKED_INSECURE: usize = 100_000;

/// Failed-CONNECT limits (`[mqtt]` config).
#[derive(Clone, Copy, Debug)]
pub struct ConnectLimits {
    /// Token failures per (address, identity) per window before that pair is banned.
    pub per_address_identity: u32,
    /// Token failures per identity per window before it is banned from everywhere.
    pub per_identity: u32,
    /// The window.
    pub window: Duration,
    /// Failures per address per window past which its token CONNECTs are slowed.
    pub address_throttle_after: u32,
    /// How much they are slowed.
    pub address_throttle_delay: Duration,
}

/// Keys tracked per limiter at most (see [`FailureLimiter`]).
const LIMITER_CAPACITY: usize = 100_000;

impl HubAuthority {
    /// Admission over `hub` with `limits`.
    pub fn new(hub: Arc<Hub>, limits: ConnectLimits) -> Self {
        let w = limits.window;
        HubAuthority {
            hub,
            by_pair: FailureLimiter::new(limits.per_address_identity, w, LIMITER_CAPACITY),
            by_identity: FailureLimiter::new(limits.per_identity, w, LIMITER_CAPACITY),
            by_addr: FailureLimiter::new(limits.address_throttle_after, w, LIMITER_CAPACITY),
            throttle_delay: limits.address_throttle_delay,
            insecure: Mutex::default(),
            refusals: Mutex::default(),
        }
    }

    /// Refused CONNECTs since start, per reason.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        let m = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn count_refusal(&self, reason: &'static str) {
        let mut m = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        *m.entry(reason).or_default() += 1;
    }

    /// Devices admitted without mutual TLS since start, most connections first.
    pub fn insecure_uses(&self) -> Vec<moat_core::InsecureUse> {
        let m = self.insecure.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<moat_core::InsecureUse> = m
            .iter()
            .map(|((id, mode), n)| moat_core::InsecureUse {
                device_id: id.clone(),
                mode,
                connections: *n,
            })
            .collect();
        v.sort_by(|a, b| {
            b.connections
                .cmp(&a.connections)
                .then(a.device_id.cmp(&b.device_id))
        });
        v
    }

    fn record_insecure(&self, device_id: &str, mode: &'static str) {
        let mut m = self.insecure.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (device_id.to_string(), mode);
        if let Some(n) = m.get_mut(&key) {
            *n += 1;
        } else if m.len() < MAX_TRACKED_INSECURE {
            m.insert(key, 1);
        }
    }

    fn audit(&self, actor: String, action: &'static str, target: String) {
        let hub = self.hub.clone();
        // In the connection's span, so a failure to record it names the connection.
        tokio::spawn(
            async move { hub.record_security_event(&actor, action, &target).await }
                .in_current_span(),
        );
    }
}

#[async_trait]
impl Authority for HubAuthority {
    async fn authenticate(&self, req: ConnectRequest<'_>) -> Result<Principal, Refusal> {
        let ip = req.peer.ip();
        let (result, claimed) = match req.transport {
            // A certificate that passed the handshake (or a resumed session's, which the check
            // verifies again) is decided on its own merits: no limit applies.
            Transport::MutualTls { chain, resumed } => (
                self.hub
                    .admit_certificate(CertificateCheck::tls(chain, *resumed))
                    .await,
                None,
            ),
            Transport::ServerTls | Transport::Plain => {
                let mode = if matches!(req.transport, Transport::Plain) {
                    ConnectMode::Plain
                } else {
                    ConnectMode::ServerTls
                };
                if self.by_addr.is_limited(&ip) {
                    // Many failures from this address: slow its token CONNECTs down (devices
                    // behind it still get in, guesses get expensive).
                    tracing::debug!(%ip, "token CONNECT throttled: many failures from this address");
                    tokio::time::sleep(self.throttle_delay).await;
                }
                let (Some(user), Some(pass)) = (req.username, req.password) else {
                    self.by_addr.record_failure(&ip);
                    self.count_refusal("credentials");
                    self.audit(
                        format!("{}@{ip}", req.client_id),
                        "mqtt.connect",
                        format!(
                            "{}: no client certificate and no username/password",
                            mode.as_str()
                        ),
                    );
                    return Err(Refusal::BadCredentials);
                };
                let pair = (ip, user.to_string());
                if self.by_pair.is_limited(&pair) || self.by_identity.is_limited(&pair.1) {
                    // Still a failure of this address: one that keeps hammering a banned
                    // identity gets throttled.
                    self.by_addr.record_failure(&ip);
                    self.count_refusal("banned");
                    return Err(Refusal::Banned);
                }
                (self.hub.admit_token(user, pass, mode).await, Some(pair))
            }
        };
        match result {
            Ok(admission) => {
                if let Some(pair) = &claimed {
                    self.by_pair.clear(pair);
                }
                match req.transport {
                    Transport::MutualTls { .. } => {}
                    Transport::ServerTls => self.record_insecure(&admission.device.id, "tls"),
                    Transport::Plain => self.record_insecure(&admission.device.id, "plain"),
                }
                // The first accepted CONNECT makes the device active (one write, once).
                if let Err(e) = self.hub.note_connected(&admission.device).await {
                    tracing::warn!(error = ?e, device = %admission.device.id, "cannot record the device's first connection");
                }
                let acl = match self.hub.topic_acl(&admission.device).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = ?e, "cannot resolve topic access");
                        return Err(Refusal::ServerUnavailable);
                    }
                };
                Ok(Principal {
                    acl: Arc::new(Acl {
                        publish: acl.publish,
                        subscribe: acl.subscribe,
                    }),
                    identity: admission.device.id,
                })
            }
            Err(Denial::Unavailable(e)) => {
                tracing::error!(error = ?e, "registry unavailable during CONNECT");
                Err(Refusal::ServerUnavailable)
            }
            Err(denial) => {
                self.count_refusal(denial.step());
                self.by_addr.record_failure(&ip);
                if let Some(pair) = &claimed {
                    self.by_pair.record_failure(pair);
                    self.by_identity.record_failure(&pair.1);
                }
                let claimed = claimed.map_or_else(|| req.client_id.to_string(), |(_, id)| id);
                tracing::info!(%ip, claimed = %claimed, mode = req.transport.mode(), %denial, "MQTT connection refused");
                self.audit(
                    format!("{claimed}@{ip}"),
                    "mqtt.connect",
                    format!("{}: {}: {denial}", req.transport.mode(), denial.step()),
                );
                Err(Refusal::NotAuthorized)
            }
        }
    }

    fn security_event(&self, event: SecurityEvent) {
        match event {
            // Refusals decided here were audited with their reason above; the broker's own
            // (client id mismatch, protocol) are recorded here.
            SecurityEvent::Refused {
                refusal:
                    Refusal::NotAuthorized
                    | Refusal::Banned
                    | Refusal::ServerUnavailable
                    | Refusal::BadCredentials,
                ..
            } => {}
            SecurityEvent::Refused {
                claimed,
                mode,
                peer,
                refusal,
            } => {
                self.audit(
                    format!("{}@{}", claimed.unwrap_or_default(), peer.ip()),
                    "mqtt.connect",
                    format!("{mode}: {refusal}"),
                );
            }
            SecurityEvent::ReservedPropertiesStripped {
                identity,
                peer,
                topic,
                names,
            } => {
                self.audit(
                    format!("{identity}@{}", peer.ip()),
                    "mqtt.spoofed_properties",
                    format!(
                        "removed {} from a message to {topic} (only the hub sets them; reported once per connection)",
                        names.join(", ")
                    ),
                );
            }
            SecurityEvent::PublishDenied {
                identity,
                peer,
                topic,
            } => {
                self.audit(
                    format!("{identity}@{}", peer.ip()),
                    "mqtt.publish_denied",
                    format!("{topic} is outside its topic access (reported once per connection)"),
                );
            }
            SecurityEvent::PossibleClone {
                client_id,
                old_peer,
                new_peer,
            } => {
                tracing::warn!(%client_id, %old_peer, %new_peer, "possible clone: one identity connected from two addresses");
                self.audit(
                    format!("{client_id}@{}", new_peer.ip()),
                    "mqtt.possible_clone",
                    format!(
                        "{client_id} was connected from {old_peer}, taken over from {new_peer}"
                    ),
                );
            }
        }
    }
}
