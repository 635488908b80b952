//! The fleet simulator: N devices, each with its own certificate, connected to the hub over
//! mutual-TLS MQTT, each running an OTA [`Agent`] over simulated flash. They announce what
//! they run, take updates from their notify topic, download over HTTPS with their own
//! certificate, and report every step.
//!
//! One MQTT client in the workspace: the connections are the load generator's
//! ([`crate::load::client`]).

use crate::load::client::{self, Incoming, Target, put_puback, put_publish};
use crate::ota::{Agent, AgentConfig, HttpsFetcher, Outcome, SimFlash};
use bytes::{Bytes, BytesMut};
use moat_image::sign::{ImageBuilder, SigningKey};
use moat_image::{ImageVersion, TrustedKey};
use moat_ota_proto::{UpdateKey, notify_topic, report_topic};
use rand::RngCore;
use rustls::ClientConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One simulated device's credentials.
#[derive(Clone, Debug)]
pub struct FleetDevice {
    /// Device id (MQTT client id, certificate identity).
    pub id: String,
    /// MQTT TLS client configuration presenting its certificate.
    pub mqtt_tls: Arc<ClientConfig>,
    /// Its certificate chain and key (PEM), for HTTPS downloads.
    pub identity_pem: Vec<u8>,
}

/// What every simulated device shares.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The MQTT hub.
    pub target: Target,
    /// Trust anchors for downloads (PEM bundle).
    pub download_roots_pem: Vec<u8>,
    /// The devices' model.
    pub model: String,
    /// The hub's update key.
    pub update_key: UpdateKey,
    /// Keys the simulated boot ROM trusts for updates.
    pub firmware_keys: Vec<TrustedKey>,
    /// Security counter of the factory image (the devices' starting anti-rollback floor).
    pub factory_counter: u32,
    /// Slot size of the simulated flash.
    pub slot_len: usize,
    /// Download attempts per update (each resumes).
    pub download_attempts: u32,
    /// Each device stops after this many finished updates (0: runs until shut down).
    pub stop_after_updates: u32,
}

/// What the fleet did.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Devices that connected and announced themselves.
    pub connected: AtomicU64,
    /// Devices that could not connect (or lost the connection).
    pub connection_errors: AtomicU64,
    /// Updates confirmed.
    pub confirmed: AtomicU64,
    /// Updates rolled back.
    pub rolled_back: AtomicU64,
    /// Updates refused or failed.
    pub failed: AtomicU64,
    /// Image bytes downloaded.
    pub bytes: AtomicU64,
    /// Download attempts beyond the first (resumes).
    pub resumes: AtomicU64,
}

impl FleetStats {
    /// A JSON summary.
    pub fn to_json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "connected": g(&self.connected),
            "connection_errors": g(&self.connection_errors),
            "confirmed": g(&self.confirmed),
            "rolled_back": g(&self.rolled_back),
            "failed": g(&self.failed),
            "bytes": g(&self.bytes),
            "resumes": g(&self.resumes),
        })
    }
}

/// Reports over the device's MQTT session (QoS 1 on its report topic).
struct MqttReports<'a, S> {
    writer: &'a mut client::Writer<S>,
    topic: &'a str,
    pid: &'a mut u16,
    /// The first send error; the device stops after the update.
    error: Option<crate::load::Error>,
}

#[async_trait::async_trait]
impl<S> crate::ota::Reports for MqttReports<'_, S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async fn report(&mut self, report: moat_ota_proto::Report) {
        *self.pid = self.pid.wrapping_add(1).max(1);
        let mut buf = BytesMut::new();
        let v = self.writer.version();
        put_publish(
            &mut buf,
            v,
            self.topic,
            1,
            *self.pid,
            Bytes::from(report.to_json()),
        );
        if let Err(e) = self.writer.send(&mut buf).await
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }
}

/// A factory image and the key that signed it (trusted by the simulated boot ROM only).
fn factory_image(counter: u32) -> Result<(Vec<u8>, TrustedKey), crate::load::Error> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = SigningKey::ed25519_from_bytes(&secret);
    let image = ImageBuilder::new(ImageVersion {
        major: 1,
        ..ImageVersion::default()
    })
    .with_header_size(0x200)
    .with_security_counter(counter)
    .sign(b"moat simulated factory firmware", &key)
    .map_err(|_| crate::load::Error::Timeout("factory image"))?;
    Ok((image, key.trusted_key()))
}

/// Runs every device until each has finished `stop_after_updates` updates or `shutdown`.
pub async fn run(
    cfg: Arc<FleetConfig>,
    devices: Vec<FleetDevice>,
    stats: Arc<FleetStats>,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for dev in devices {
        let (cfg, stats, shutdown) = (cfg.clone(), stats.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = device(&cfg, &dev, &stats, shutdown).await {
                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = %dev.id, error = %e, "simulated device stopped");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// One device: connect, subscribe, announce, then apply notices as they come.
async fn device(
    cfg: &FleetConfig,
    dev: &FleetDevice,
    stats: &FleetStats,
    shutdown: CancellationToken,
) -> Result<(), crate::load::Error> {
    let (factory, factory_key) = factory_image(cfg.factory_counter)?;
    let flash = SimFlash::with_factory_image(
        &factory,
        cfg.slot_len,
        ImageVersion {
            major: 1,
            ..ImageVersion::default()
        },
        cfg.factory_counter,
    );
    let mut keys = cfg.firmware_keys.clone();
    keys.push(factory_key);
    let fetcher = HttpsFetcher::new(&dev.identity_pem, &cfg.download_roots_pem)
        .map_err(|e| crate::load::Error::Io(std::io::Error::other(e.to_string())))?;
    let mut agent = Agent::new(
        AgentConfig {
            model: cfg.model.clone(),
            update_key: cfg.update_key.clone(),
            firmware_keys: keys,
            download_attempts: cfg.download_attempts,
            retry_pause: Duration::from_millis(200),
        },
        fetcher,
        flash,
    );
    let mut conn = client::connect(&cfg.target, dev.mqtt_tls.clone(), &dev.id, None).await?;
    conn.subscribe(&notify_topic(&dev.id), 1).await?;
    let (mut reader, mut writer) = conn.split();
    let v = writer.version();
    let topic = report_topic(&dev.id);
    let mut pid: u16 = 1;
    let mut out = BytesMut::new();
    put_publish(
        &mut out,
        v,
        &topic,
        1,
        pid,
        Bytes::from(agent.idle_report().to_json()),
    );
    writer.send(&mut out).await?;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let mut finished = 0u32;
    // The last report's packet id that the hub acknowledged.
    let mut acked: u16 = 0;
    loop {
        let packet = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = reader.next() => p?,
        };
        let Some(packet) = packet else {
            return Err(crate::load::Error::Closed);
        };
        let p = match packet {
            Incoming::Publish(p) => p,
            Incoming::PubAck(id) => {
                acked = id;
                continue;
            }
            Incoming::Disconnect(_) => return Err(crate::load::Error::Closed),
            _ => continue,
        };
        if p.qos > 0 {
            put_puback(&mut out, v, p.pid);
            writer.send(&mut out).await?;
        }
        if p.topic != notify_topic(&dev.id) || p.payload.is_empty() {
            continue;
        }
        let mut sink = MqttReports {
            writer: &mut writer,
            topic: &topic,
            pid: &mut pid,
            error: None,
        };
        let outcome = agent.handle_notice(&p.payload, &mut sink).await;
        if let Some(e) = sink.error {
            return Err(e);
        }
        let counter = match &outcome {
            Outcome::Confirmed => &stats.confirmed,
            Outcome::RolledBack(_) => &stats.rolled_back,
            Outcome::Failed(_) => &stats.failed,
            Outcome::Ignored(why) => {
                tracing::debug!(device = %dev.id, why, "notice ignored");
                continue;
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(agent.last_download_bytes, Ordering::Relaxed);
        stats.resumes.fetch_add(
            u64::from(agent.last_download_attempts.saturating_sub(1)),
            Ordering::Relaxed,
        );
        agent.last_download_bytes = 0;
        agent.last_download_attempts = 0;
        tracing::info!(device = %dev.id, ?outcome, "update finished");
        finished += 1;
        if cfg.stop_after_updates > 0 && finished >= cfg.stop_after_updates {
            break;
        }
    }
    // Wait for the hub to acknowledge the last report before leaving: closing with its
    // PUBACK unread makes the kernel reset the connection, which can discard the report
    // before the hub has read it.
    if acked != pid {
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(packet)) = reader.next().await {
                if matches!(packet, Incoming::PubAck(id) if id == pid) {
                    break;
                }
            }
        })
        .await;
    }
    writer.put_disconnect(&mut out);
    let _ = writer.send(&mut out).await;
    let _ = writer.shutdown().await;
    Ok(())
}

/// Loads devices `ids` from a credentials directory (`ID.crt` + `ID.key`, as `moat device
/// create --out` and `moat-device enroll` write them).
pub fn load_devices(
    dir: &std::path::Path,
    ids: &[String],
    provider: &Arc<rustls::crypto::CryptoProvider>,
    verifier: &Arc<crate::load::tls::PinningVerifier>,
) -> Result<Vec<FleetDevice>, crate::load::Error> {
    let loaded = crate::load::fleet::load(dir, ids, provider, verifier)?;
    loaded
        .into_iter()
        .map(|d| {
            let mut identity_pem = std::fs::read(dir.join(format!("{}.crt", d.id)))?;
            identity_pem.extend_from_slice(&std::fs::read(dir.join(format!("{}.key", d.id)))?);
            Ok(FleetDevice {
                id: d.id,
                mqtt_tls: d.tls,
                identity_pem,
            })
        })
        .collect()
}
