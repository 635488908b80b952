//! Wiring of the MQTT hub into `moat serve`: the broker, its TLS configuration with the live
//! client verifier (`moat_api::LiveClientVerifier`, shared with the HTTPS listener for EST),
//! the event loop that turns registry changes into verifier updates and session kicks, the
//! OTA notices and reports, and the verified ingest of what gateways relay (`relay.rs`).

mod authority;
mod ota;
mod persistence;
mod relay;

pub use authority::{ConnectLimits, HubAuthority};
pub use ota::{BrokerNotifier, follow_reports};
pub use persistence::RegistryPersistence;
pub use relay::{RESERVED_PREFIX, RelayIngest};

use arc_swap::ArcSwap;
use moat_api::{LiveClientVerifier, ServerCredentials};
use moat_broker::Broker;
use moat_core::{BusError, Event, Hub};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The MQTT TLS configuration: the hub's server credentials (shared with the other TLS
/// listeners), client certificates requested (optional) and checked by `verifier`. TLS 1.2
/// and 1.3.
pub fn tls_config(
    credentials: Arc<ServerCredentials>,
    verifier: Arc<LiveClientVerifier>,
) -> crate::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(credentials);
    cfg.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(cfg)
}

/// Applies registry events to the live MQTT hub until `shutdown`: revocations go into the
/// verifier's revoked set and kick the device's sessions; disabling or deleting a device
/// kicks it; CA changes rebuild the trust anchors. On lag it resynchronises from the registry.
/// The verifier is the one every TLS listener of the hub shares (MQTT and HTTPS/EST), so
/// this loop keeps both current; it updates the verifier before kicking, so a kicked device
/// that reconnects at once meets the new state at the handshake.
pub async fn follow_events(
    hub: Arc<Hub>,
    broker: Arc<Broker>,
    verifier: Arc<LiveClientVerifier>,
    shutdown: CancellationToken,
) {
    let mut rx = hub.subscribe();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = rx.recv() => ev.map(|e| e.event),
        };
        if let Ok(ev) = &ev {
            verifier.apply(&hub, ev).await;
        }
        match ev {
            Ok(Event::DeviceRevoked { device_id, .. }) => {
                let n = broker.kick_identity(&device_id);
                tracing::info!(device = %device_id, sessions = n, "device revoked: sessions closed");
            }
            Ok(Event::CertificateRevoked {
                device_id: Some(id),
                ..
            }) => {
                broker.kick_identity(&id);
            }
            Ok(
                Event::DeviceDisabled { device_id }
                | Event::DeviceDeleted { device_id }
                | Event::AccessChanged { device_id },
            ) => {
                broker.kick_identity(&device_id);
            }
            Ok(Event::CaRemoved { name }) => {
                kick_devices_of_ca(&hub, &broker, &name).await;
            }
            Ok(_) => {}
            Err(BusError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "event bus lagged; resynchronising the client verifier and live sessions"
                );
                verifier.resync(&hub).await;
                recheck_sessions(&hub, &broker).await;
            }
            Err(BusError::Closed) => return,
        }
    }
}

/// Closes the live sessions whose identity the registry no longer admits (changes this node
/// may have missed). Sessions are checked one identity at a time; an unreadable registry
/// keeps them (the next resynchronisation checks again).
async fn recheck_sessions(hub: &Hub, broker: &Broker) {
    let mut identities: Vec<String> = broker.sessions().into_iter().map(|s| s.identity).collect();
    identities.sort_unstable();
    identities.dedup();
    let mut closed = 0;
    for id in identities {
        match hub.recheck_identity(&id).await {
            Ok(()) => {}
            Err(moat_core::Denial::Unavailable(e)) => {
                tracing::warn!(error = %e, "cannot recheck live sessions: the registry is unavailable");
                return;
            }
            Err(denial) => {
                tracing::info!(identity = %id, %denial, "live session no longer admitted: closed");
                closed += broker.kick_identity(&id);
            }
        }
    }
    if closed > 0 {
        tracing::warn!(
            sessions = closed,
            "closed live sessions the registry no longer admits"
        );
    }
}

async fn kick_devices_of_ca(hub: &Hub, broker: &Broker, ca: &str) {
    let mut after: Option<String> = None;
    loop {
        let page = match hub.list_devices(after.as_deref(), 1000).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = ?e, "cannot list devices of a removed CA");
                return;
            }
        };
        let Some(last) = page.last().map(|d| d.id.clone()) else {
            return;
        };
        for d in page.iter().filter(|d| d.ca_name == ca) {
            broker.kick_identity(&d.id);
        }
        after = Some(last);
    }
}

/// Shared, swappable TLS configuration (a new server certificate applies per connection).
pub type TlsCell = Arc<ArcSwap<rustls::ServerConfig>>;

/// The admin API's view of the broker's sessions.
#[derive(Debug)]
pub struct BrokerSessions(pub Arc<Broker>);

/// A broker session as the API shows it.
fn session_view(s: moat_broker::SessionInfo) -> moat_api::dto::SessionView {
    moat_api::dto::SessionView {
        client_id: s.client_id,
        identity: s.identity,
        mode: s.mode.to_string(),
        peer: s.peer.to_string(),
        protocol: if s.protocol_version == 5 {
            "5.0"
        } else {
            "3.1.1"
        }
        .to_string(),
        connected_at: time::OffsetDateTime::from(s.connected_at)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }
}

impl moat_api::SessionControl for BrokerSessions {
    fn list(&self) -> Vec<moat_api::dto::SessionView> {
        self.0.sessions().into_iter().map(session_view).collect()
    }

    fn get(&self, client_id: &str) -> Option<moat_api::dto::SessionView> {
        self.0.session(client_id).map(session_view)
    }

    fn kick(&self, client_id: &str) -> bool {
        self.0.kick_client(client_id)
    }
}
