//! Prometheus metrics (`GET /metrics`, text exposition format), `/healthz` and `/readyz`, on
//! their own listener (`[metrics] listen`, loopback by default: metrics describe the fleet).
//!
//! Nothing here keeps a second copy of state: at scrape time a collector reads the broker's
//! counters and live sessions (by connection mode), the shared client-certificate verifier's
//! refusals (by reason) and revoked-set size; hub events (issuance, revocation, CA and
//! device changes) are counted by a task that follows the hub's event channel.

use moat_api::LiveClientVerifier;
use moat_broker::Broker;
use moat_core::{Event, Hub};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

/// Hub events counted since start, by event name.
#[derive(Debug, Default)]
pub struct EventCounts {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Events the counter task missed because it fell behind the channel.
    lagged: AtomicU64,
}

impl EventCounts {
    fn bump(&self, name: &'static str) {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *m.entry(name).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// The metric name of an event (stable: dashboards depend on it).
fn event_name(e: &Event) -> &'static str {
    match e {
        Event::DeviceCreated { .. } => "device_created",
        Event::CertificateIssued { .. } => "certificate_issued",
        Event::DeviceDisabled { .. } => "device_disabled",
        Event::DeviceEnabled { .. } => "device_enabled",
        Event::DeviceRevoked { .. } => "device_revoked",
        Event::DeviceDeleted { .. } => "device_deleted",
        Event::CertificateRevoked { .. } => "certificate_revoked",
        Event::CaRegistered { .. } => "ca_registered",
        Event::CaRemoved { .. } => "ca_removed",
        Event::AccessChanged { .. } => "access_changed",
        Event::AccessPoliciesChanged { .. } => "access_policies_changed",
        Event::CrlPublished { .. } => "crl_published",
        Event::ServerCertRotated { .. } => "server_cert_rotated",
        Event::CertificateRetired { .. } => "certificate_retired",
        Event::DeviceUpdated { .. } => "device_updated",
    }
}

/// Counts hub events until `shutdown`.
pub async fn count_events(hub: Arc<Hub>, counts: Arc<EventCounts>, shutdown: CancellationToken) {
    let mut rx = hub.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            e = rx.recv() => match e.map(|e| e.event) {
                Ok(e) => {
                    counts.bump(event_name(&e));
                    if let Event::DeviceRevoked { certificates, .. } = &e {
                        for _ in certificates {
                            counts.bump("certificate_revoked");
                        }
                    }
                }
                Err(moat_core::BusError::Lagged(n)) => {
                    counts.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(moat_core::BusError::Closed) => return,
            },
        }
    }
}

/// Reads the hub's live state at scrape time.
#[derive(Debug)]
struct HubCollector {
    sources: Sources,
}

/// What the metrics read.
#[derive(Debug)]
pub struct Sources {
    pub hub: Arc<Hub>,
    pub broker: Arc<Broker>,
    pub authority: Arc<crate::mqtt::HubAuthority>,
    pub relay: Arc<crate::mqtt::RelayIngest>,
    pub verifier: Arc<LiveClientVerifier>,
    pub events: Arc<EventCounts>,
    pub posture: Arc<crate::posture::PostureCounts>,
    pub campaigns: Arc<CampaignProgress>,
    /// The node's cluster membership, if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Devices per state of the running and paused campaigns, refreshed by [`follow_campaigns`].
#[derive(Debug, Default)]
pub struct CampaignProgress(Mutex<Vec<(String, &'static str, u64)>>);

/// Refreshes `progress` every `interval` until `shutdown`.
pub async fn follow_campaigns(
    hub: Arc<Hub>,
    progress: Arc<CampaignProgress>,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    loop {
        match campaign_progress(&hub).await {
            Ok(v) => *progress.0.lock().unwrap_or_else(PoisonError::into_inner) = v,
            Err(e) => tracing::warn!(error = %e, "cannot read campaign progress"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn campaign_progress(
    hub: &Hub,
) -> Result<Vec<(String, &'static str, u64)>, moat_store::Error> {
    let mut out = Vec::new();
    let registry = hub.firmware_registry();
    for c in registry.list_campaigns().await? {
        if !c.state.is_active() {
            continue;
        }
        let mut per_state: BTreeMap<&'static str, u64> = BTreeMap::new();
        for w in registry.wave_counts(&c.id).await? {
            *per_state.entry(w.state.as_str()).or_default() += w.count;
        }
        out.extend(per_state.into_iter().map(|(s, n)| (c.id.clone(), s, n)));
    }
    Ok(out)
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// One family with one label: `(label value, value)` pairs.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (l, v) in values {
        let labels = [(label, *l)];
        let e = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(e)?,
            _ => ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(e)?,
        }
    }
    Ok(())
}

impl Collector for HubCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let src = &self.sources;
        let s = src.broker.metrics();
        counter(
            &mut enc,
            "moat_mqtt_connections_accepted",
            "TCP connections accepted by the MQTT listeners.",
            s.connections_accepted,
        )?;
        family(
            &mut enc,
            "moat_tls_handshakes",
            "TLS handshakes on the MQTT listener, by outcome.",
            MetricType::Counter,
            "outcome",
            &[
                ("ok", s.tls_handshakes),
                ("failed", s.tls_handshake_failures),
                ("timeout", s.tls_handshake_timeouts),
            ],
        )?;
        counter(
            &mut enc,
            "moat_tls_handshakes_paced",
            "TLS handshakes that waited for a handshake slot (mqtt.max_concurrent_handshakes).",
            s.tls_handshakes_paced,
        )?;
        family(
            &mut enc,
            "moat_mqtt_auth_failures",
            "Refused MQTT CONNECTs by reason (the admission step: chain, revocation, identity, registration, device_state, policy; credentials, banned).",
            MetricType::Counter,
            "reason",
            &src.authority.refusals(),
        )?;
        counter(
            &mut enc,
            "moat_relay_accepted",
            "Messages of devices without IP relayed by gateways and verified (signature, certificate check, counter), republished on the device's topics.",
            src.relay.accepted(),
        )?;
        family(
            &mut enc,
            "moat_relay_refused",
            "Relayed messages refused, by reason (not_allowed, forged, replayed, too_old, revoked, expired, disabled, …).",
            MetricType::Counter,
            "reason",
            &src.relay.refused(),
        )?;
        let (down_ok, down_refused) = src.relay.downlinks();
        family(
            &mut enc,
            "moat_relay_downlinks",
            "Signed downlinks for devices behind gateways, by outcome (routed to the gateway, or refused: gateway not serving the device, not a signed object).",
            MetricType::Counter,
            "outcome",
            &[("routed", down_ok), ("refused", down_refused)],
        )?;
        counter(
            &mut enc,
            "moat_relay_audits_suppressed",
            "Refused relayed messages not audited because their gateway was over its audit limit (counted above all the same).",
            src.relay.audits_suppressed(),
        )?;
        counter(
            &mut enc,
            "moat_mqtt_reserved_properties_stripped",
            "Client messages and wills from which user properties only the hub may set (moat-*) were removed.",
            s.reserved_properties_stripped,
        )?;
        counter(
            &mut enc,
            "moat_certificates_signed",
            "Device certificates this node signed since start (create, EST, re-enrollment, provisioning, rotation).",
            src.hub.certificates_signed(),
        )?;
        let progress = src
            .campaigns
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut m = enc.encode_descriptor(
            "moat_campaign_devices",
            "Devices of running and paused firmware campaigns, by update state.",
            None,
            MetricType::Gauge,
        )?;
        for (campaign, state, n) in &progress {
            let labels = [("campaign", campaign.as_str()), ("state", *state)];
            ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                .encode(m.encode_family(&labels)?)?;
        }
        family(
            &mut enc,
            "moat_mqtt_connects",
            "MQTT CONNECTs by outcome.",
            MetricType::Counter,
            "outcome",
            &[
                ("accepted", s.connects_accepted),
                ("refused", s.connects_refused),
            ],
        )?;
        let mut modes = [("mtls", 0u64), ("tls", 0), ("plain", 0)];
        for session in src.broker.sessions() {
            let mode = session.mode.to_string();
            if let Some(m) = modes.iter_mut().find(|(name, _)| *name == mode) {
                m.1 += 1;
            }
        }
        family(
            &mut enc,
            "moat_mqtt_connected_clients",
            "Clients connected now, by connection mode (mtls, tls = server TLS + token, plain).",
            MetricType::Gauge,
            "mode",
            &modes,
        )?;
        family(
            &mut enc,
            "moat_mqtt_messages",
            "PUBLISH packets, by direction.",
            MetricType::Counter,
            "direction",
            &[("in", s.messages_received), ("out", s.messages_sent)],
        )?;
        counter(
            &mut enc,
            "moat_mqtt_messages_dropped",
            "Messages dropped by queue policy, expiry or a client's maximum packet size.",
            s.messages_dropped,
        )?;
        counter(
            &mut enc,
            "moat_mqtt_publishes_denied",
            "Publishes refused by the topic ACL.",
            s.publishes_denied,
        )?;
        counter(
            &mut enc,
            "moat_mqtt_publisher_pauses",
            "Times a publisher paused for a congested subscriber.",
            s.publisher_pauses,
        )?;
        counter(
            &mut enc,
            "moat_mqtt_subscribers_stalled",
            "Times a subscriber was marked stalled.",
            s.subscribers_stalled,
        )?;
        counter(
            &mut enc,
            "moat_mqtt_messages_refused_storage",
            "QoS 1/2 messages refused because the hub could not write them (storage failing).",
            s.messages_refused_storage,
        )?;
        counter(
            &mut enc,
            "moat_mqtt_state_batches_written",
            "Batches of MQTT session state written (one registry transaction, one fsync each).",
            s.state_batches_written,
        )?;
        counter(
            &mut enc,
            "moat_mqtt_state_changes_written",
            "Changes of MQTT session state written (queued messages, acknowledgements, sessions, retained messages).",
            s.state_changes_written,
        )?;
        gauge(
            &mut enc,
            "moat_mqtt_sessions",
            "MQTT sessions (live and offline persistent).",
            s.sessions,
        )?;
        gauge(
            &mut enc,
            "moat_mqtt_subscriptions",
            "Subscriptions.",
            s.subscriptions,
        )?;
        gauge(
            &mut enc,
            "moat_mqtt_retained_messages",
            "Retained topics.",
            s.retained,
        )?;
        let refusals: Vec<(&str, u64)> = src.verifier.refusals().collect();
        family(
            &mut enc,
            "moat_tls_client_certificates_refused",
            "Client certificates refused during TLS handshakes (MQTT and HTTPS), by reason.",
            MetricType::Counter,
            "reason",
            &refusals,
        )?;
        gauge(
            &mut enc,
            "moat_revoked_certificates",
            "Revoked certificates of the trusted client CAs (the handshake's revoked set).",
            u64::try_from(src.verifier.revoked_len()).unwrap_or(u64::MAX),
        )?;
        let events = src.events.snapshot();
        family(
            &mut enc,
            "moat_hub_events",
            "Registry changes since start (device_created, certificate_revoked, …).",
            MetricType::Counter,
            "event",
            &events,
        )?;
        let mut m = enc.encode_descriptor(
            "moat_posture_findings",
            "Findings of the last security posture audit, by check and severity.",
            None,
            MetricType::Gauge,
        )?;
        for (check, severity, n) in src.posture.snapshot() {
            let labels = [("check", check), ("severity", severity)];
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(m.encode_family(&labels)?)?;
        }
        counter(
            &mut enc,
            "moat_hub_events_lagged",
            "Hub events the metrics counter missed (it fell behind).",
            src.events.lagged.load(Ordering::Relaxed),
        )?;
        if let Some(cluster) = &src.cluster {
            let view = cluster.view();
            gauge(
                &mut enc,
                "moat_cluster_nats_connected",
                "1 while this cluster node is connected to NATS; 0: messages to and from the other nodes are paused, registry changes arrive through the event log.",
                u64::from(view.nats_connected),
            )?;
            gauge(
                &mut enc,
                "moat_cluster_event_applied",
                "The last event of the cluster's event log this node has applied.",
                view.applied_seq,
            )?;
            let f = cluster.fabric_counts();
            family(
                &mut enc,
                "moat_cluster_messages",
                "MQTT messages between this node and the other nodes, by outcome (sent, received, duplicate: a copy overlapping filters caused, ignored; dropped: this node could not keep up sending or receiving; failed: not sent or not decodable).",
                MetricType::Counter,
                "outcome",
                &[
                    ("sent", f.sent.load(Ordering::Relaxed)),
                    ("received", f.received.load(Ordering::Relaxed)),
                    ("duplicate", f.duplicates.load(Ordering::Relaxed)),
                    ("dropped", f.dropped.load(Ordering::Relaxed)),
                    ("failed", f.failed.load(Ordering::Relaxed)),
                ],
            )?;
        }
        Ok(())
    }
}

/// The registry `/metrics` encodes.
pub fn registry(sources: Sources) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(HubCollector { sources }));
    r
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(
    registry: Arc<Registry>,
    hub: Arc<Hub>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let hub = hub.clone();
                let cluster = cluster.clone();
                async move {
                    // Ready when the registry answers (the listeners run before this does).
                    // A cluster node cut off from NATS still serves its own devices: ready,
                    // and says it is degraded.
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(2),
                        hub.registry_ready(),
                    )
                    .await
                    {
                        Ok(Ok(_)) if cluster.as_ref().is_some_and(|c| !c.view().nats_connected) => (
                            StatusCode::OK,
                            "degraded: NATS unreachable; messages to and from the other nodes are paused, registry changes arrive through the event log\n",
                        )
                            .into_response(),
                        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
                        _ => (StatusCode::SERVICE_UNAVAILABLE, "registry unavailable\n")
                            .into_response(),
                    }
                }
            }),
        )
}
