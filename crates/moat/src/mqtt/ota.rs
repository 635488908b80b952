//! OTA over the MQTT hub: manifests go out as retained messages on
//! `devices/{id}/ota/notify`, reports come in through a hub tap on `devices/+/ota/report`.

use bytes::Bytes;
use moat_broker::codec::Properties;
use moat_broker::{Broker, Message};
use moat_ota::{Notifier, Ota};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Reports queued for the OTA service before new ones are dropped (and counted).
const REPORT_QUEUE: usize = 65_536;
/// Reports applied at once (each is a few registry writes; SQLite commits them together).
const REPORT_CONCURRENCY: usize = 32;

/// Publishes manifests through the broker.
#[derive(Debug)]
pub struct BrokerNotifier(pub Arc<Broker>);

impl BrokerNotifier {
    fn retain(&self, device_id: &str, payload: Bytes) {
        self.0.publish(Message {
            topic: moat_ota_proto::notify_topic(device_id),
            payload,
            qos: 1,
            retain: true,
            properties: Properties::default(),
            expires_at: None,
            publisher: None,
        });
    }
}

impl Notifier for BrokerNotifier {
    fn notify(&self, device_id: &str, manifest: &[u8]) {
        self.retain(device_id, Bytes::copy_from_slice(manifest));
    }

    /// An empty retained message removes the retained notice (MQTT semantics); subscribers
    /// that are connected see an empty message, which the device agent ignores.
    fn clear(&self, device_id: &str) {
        self.retain(device_id, Bytes::new());
    }
}

/// Feeds device reports from the broker to the OTA service until `shutdown`.
pub async fn follow_reports(ota: Arc<Ota>, broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut reports = match broker.tap(moat_ota_proto::REPORT_FILTER, REPORT_QUEUE) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow OTA reports");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(REPORT_CONCURRENCY));
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = reports.recv() => match m { Some(m) => m, None => return },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let ota = ota.clone();
        tokio::spawn(async move {
            let _permit = permit;
            ota.handle_report_message(&msg.topic, msg.publisher.as_deref(), &msg.payload)
                .await;
        });
    }
}
