//! OTA over the MQTT hub: manifests go out as retained messages on
//! `devices/{id}/ota/notify`, reports come in through a hub tap on `devices/+/ota/report`.

use bytes::Bytes;
use moat_broker::codec::Properties;
use moat_broker::{Broker, Message};
use moat_ota::{Notifier, Ota};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Reports queued for the OTA service before new ones are dropped (and counted).
const REPORT_QUEUE: usize = 65_536;
/// Report workers (each applies its devices' reports one at a time; a report is a few
/// registry writes, and SQLite commits the workers' writes together).
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
///
/// Reports are applied by [`REPORT_CONCURRENCY`] workers, each device's always by the same
/// one, in the order the broker received them: a device's reports must not overtake each
/// other, or an earlier report (still running the old image) applied after the
/// confirmation would put the old version back in the inventory.
pub async fn follow_reports(ota: Arc<Ota>, broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut reports = match broker.tap(moat_ota_proto::REPORT_FILTER, REPORT_QUEUE) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow OTA reports");
            return;
        }
    };
    let workers: Vec<tokio::sync::mpsc::Sender<Arc<Message>>> = (0..REPORT_CONCURRENCY)
        .map(|_| {
            let (tx, mut rx) =
                tokio::sync::mpsc::channel::<Arc<Message>>(REPORT_QUEUE / REPORT_CONCURRENCY);
            let ota = ota.clone();
            tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    ota.handle_report_message(&msg.topic, msg.publisher.as_deref(), &msg.payload)
                        .await;
                }
            });
            tx
        })
        .collect();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = reports.recv() => match m { Some(m) => m, None => return },
        };
        // The topic names the device (`devices/{id}/ota/report`).
        let shard = worker_of(&msg.topic, workers.len());
        if workers[shard].send(msg).await.is_err() {
            return;
        }
    }
}

/// The worker that applies the reports published on `topic`.
fn worker_of(topic: &str, workers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    (h.finish() % workers as u64) as usize
}
