//! The MQTT hub's [`Authority`] over the registry: admission by certificate or token
//! (`moat-core` decides), the default topic ACL, failed-attempt limits per address and per
//! claimed identity, and security events into the audit log.

use async_trait::async_trait;
use moat_broker::{Acl, Authority, ConnectRequest, Principal, Refusal, SecurityEvent, Transport};
use moat_core::{ConnectMode, Denial, FailureLimiter, Hub};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::Instrument;

/// Admits devices for the broker.
#[derive(Debug)]
pub struct HubAuthority {
    hub: Arc<Hub>,
    by_addr: FailureLimiter<IpAddr>,
    by_identity: FailureLimiter<String>,
    /// Admissions without mutual TLS since start, per (device, mode) (the posture audit).
    insecure: Mutex<HashMap<(String, &'static str), u64>>,
    /// Refused CONNECTs since start, per reason (the admission step, `credentials`, `banned`).
    refusals: Mutex<BTreeMap<&'static str, u64>>,
}

/// Distinct (device, mode) pairs of insecure admissions remembered.
const MAX_TRACKED_INSECURE: usize = 100_000;

impl HubAuthority {
    /// Admission over `hub`, allowing `max_failures` failed CONNECTs per address and per
    /// claimed identity per `window`.
    pub fn new(hub: Arc<Hub>, max_failures: u32, window: Duration) -> Self {
        HubAuthority {
            hub,
            by_addr: FailureLimiter::new(max_failures, window, 100_000),
            by_identity: FailureLimiter::new(max_failures, window, 100_000),
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
        if self.by_addr.is_limited(&ip) {
            self.count_refusal("banned");
            return Err(Refusal::Banned);
        }
        let (result, claimed) = match req.transport {
            Transport::MutualTls { chain } => (
                self.hub.admit_verified_certificate(chain).await,
                req.client_id.to_string(),
            ),
            Transport::ServerTls | Transport::Plain => {
                let mode = if matches!(req.transport, Transport::Plain) {
                    ConnectMode::Plain
                } else {
                    ConnectMode::ServerTls
                };
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
                if self.by_identity.is_limited(&user.to_string()) {
                    self.count_refusal("banned");
                    return Err(Refusal::Banned);
                }
                (
                    self.hub.admit_token(user, pass, mode).await,
                    user.to_string(),
                )
            }
        };
        match result {
            Ok(admission) => {
                self.by_identity.clear(&claimed);
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
                self.by_identity.record_failure(&claimed);
                tracing::info!(%ip, claimed = %claimed, mode = req.transport.mode(), %denial, "MQTT connection refused");
                self.audit(
                    format!("{claimed}@{ip}"),
                    "mqtt.connect",
                    format!("{}: {denial}", req.transport.mode()),
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
