//! The fleet simulator: N devices, each with its own certificate, connected to the hub over
//! mutual-TLS MQTT, each running an OTA [`Agent`] over simulated flash. They announce what
//! they run, take updates from their notify topic, download over HTTPS with their own
//! certificate, and report every step.
//!
//! One MQTT client in the workspace: the connections are the load generator's
//! ([`crate::load::client`]).

use crate::load::client::{self, Incoming, Target, put_puback};
use crate::ota::{Agent, AgentConfig, HttpsFetcher, Outcome, ReportOutbox, SimFlash};
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
    /// MQTT connections lost and made again.
    pub reconnects: AtomicU64,
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
            "reconnects": g(&self.reconnects),
        })
    }
}

/// Reports over the device's MQTT session: QoS 1 through its [`ReportOutbox`], so a report
/// the hub has not acknowledged is sent again after a reconnect.
struct MqttReports<'a, S> {
    writer: &'a mut client::Writer<S>,
    outbox: &'a mut ReportOutbox,
    /// The first send error: the connection is gone; the update goes on, the device
    /// reconnects afterwards and sends what the outbox still holds.
    error: Option<crate::load::Error>,
}

#[async_trait::async_trait]
impl<S> crate::ota::Reports for MqttReports<'_, S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async fn report(&mut self, report: moat_ota_proto::Report) {
        let mut buf = BytesMut::new();
        self.outbox.push(
            &mut buf,
            self.writer.version(),
            Bytes::from(report.to_json()),
        );
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.writer.send(&mut buf).await {
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

/// One device: connect, subscribe, announce, then apply notices as they come; reconnect
/// when the connection is lost.
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
    let topic = report_topic(&dev.id);
    let mut outbox = ReportOutbox::new(topic.clone(), 64);
    let mut finished = 0u32;
    let mut connected_once = false;
    let mut backoff = Duration::from_millis(200);
    // One MQTT session per pass; a lost connection is made again (the update in progress
    // goes on over HTTPS meanwhile) and unacknowledged reports are sent again.
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let conn = match client::connect(&cfg.target, dev.mqtt_tls.clone(), &dev.id, None).await {
            Ok(c) => c,
            // A device that never got in has a configuration problem: say so.
            Err(e) if !connected_once => return Err(e),
            Err(e) => {
                tracing::info!(device = %dev.id, error = %e, ?backoff, "reconnect failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        match session(
            cfg,
            dev,
            stats,
            &shutdown,
            conn,
            &mut agent,
            &mut outbox,
            &mut finished,
            !connected_once,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) => {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(device = %dev.id, error = %e, unacknowledged = outbox.len(), "MQTT connection lost; reconnecting");
                connected_once = true;
                backoff = Duration::from_millis(200);
            }
        }
    }
}

/// One MQTT connection of a device: subscribe, send what the outbox holds, announce, then
/// apply notices. Ok when the device is done (shutdown or its updates), Err when the
/// connection was lost.
#[allow(clippy::too_many_arguments)]
async fn session<F: crate::ota::Fetcher>(
    cfg: &FleetConfig,
    dev: &FleetDevice,
    stats: &FleetStats,
    shutdown: &CancellationToken,
    mut conn: client::Connection<client::Stream>,
    agent: &mut Agent<F>,
    outbox: &mut ReportOutbox,
    finished: &mut u32,
    first: bool,
) -> Result<(), crate::load::Error> {
    conn.subscribe(&notify_topic(&dev.id), 1).await?;
    let (mut reader, mut writer) = conn.split();
    let v = writer.version();
    let mut out = BytesMut::new();
    outbox.resend(&mut out, v);
    outbox.push(&mut out, v, Bytes::from(agent.idle_report().to_json()));
    writer.send(&mut out).await?;
    if first {
        stats.connected.fetch_add(1, Ordering::Relaxed);
    }
    let mut done = false;
    while !done {
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
                outbox.ack(id);
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
            outbox: &mut *outbox,
            error: None,
        };
        let outcome = agent.handle_notice(&p.payload, &mut sink).await;
        let lost = sink.error.take();
        let counter = match &outcome {
            Outcome::Confirmed => &stats.confirmed,
            Outcome::RolledBack(_) => &stats.rolled_back,
            Outcome::Failed(_) => &stats.failed,
            Outcome::Ignored(why) => {
                tracing::debug!(device = %dev.id, why, "notice ignored");
                match lost {
                    Some(e) => return Err(e),
                    None => continue,
                }
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
        *finished += 1;
        done = cfg.stop_after_updates > 0 && *finished >= cfg.stop_after_updates;
        if let Some(e) = lost {
            return Err(e);
        }
    }
    // Wait for the hub to acknowledge every report before leaving: closing with a PUBACK
    // unread makes the kernel reset the connection, which can discard the report before
    // the hub has read it.
    if !outbox.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(packet)) = reader.next().await {
                if let Incoming::PubAck(id) = packet {
                    outbox.ack(id);
                    if outbox.is_empty() {
                        break;
                    }
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
