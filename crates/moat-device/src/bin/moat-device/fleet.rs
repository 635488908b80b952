//! `moat-device fleet`: N simulated devices that connect with their own certificates, take
//! firmware updates (signed manifests over MQTT, HTTPS downloads with resume) and report.

use anyhow::Context;
use clap::Args;
use moat_device::fleet::{self, FleetConfig, FleetStats};
use moat_device::load::client::Target;
use moat_device::load::tls::{KeyExchange, PinningVerifier, provider};
use moat_image::TrustedKey;
use moat_mqtt::Version;
use moat_ota_proto::UpdateKey;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The hub's MQTT TLS listener.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Name the hub's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// The hub's CA bundle (PEM): trusted for MQTT, and for downloads unless --download-ca.
    #[arg(long)]
    pub ca: PathBuf,
    /// Trust anchors for the download listener (PEM; repeatable). Default: --ca.
    #[arg(long)]
    pub download_ca: Vec<PathBuf>,
    /// Directory of device credentials (ID.crt + ID.key).
    #[arg(long)]
    pub devices: PathBuf,
    /// How many devices to simulate (the first N of the directory, by id).
    #[arg(long)]
    pub count: usize,
    /// The devices' model.
    #[arg(long)]
    pub model: String,
    /// The hub's update key (PEM, from `moat fw update-key`).
    #[arg(long)]
    pub update_key: PathBuf,
    /// Firmware signing public key the simulated boot ROM trusts (PEM; repeatable).
    #[arg(long = "fw-key", required = true)]
    pub fw_keys: Vec<PathBuf>,
    /// Security counter of the simulated factory image.
    #[arg(long, default_value_t = 1)]
    pub factory_counter: u32,
    /// Simulated slot size in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub slot_size: usize,
    /// Each device stops after this many finished updates (0: run until --duration).
    #[arg(long, default_value_t = 0)]
    pub updates: u32,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    pub duration: f64,
}

pub async fn run(a: FleetArgs) -> anyhow::Result<Value> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let update_key = UpdateKey::from_pem(&String::from_utf8_lossy(&read(&a.update_key)?))
        .with_context(|| format!("{} is not the hub's update key", a.update_key.display()))?;
    let mut firmware_keys = Vec::new();
    for p in &a.fw_keys {
        firmware_keys.push(
            TrustedKey::from_pem(&read(p)?)
                .map_err(|e| anyhow::anyhow!("{}: not a firmware public key: {e}", p.display()))?,
        );
    }
    let mut download_roots_pem = Vec::new();
    let roots = if a.download_ca.is_empty() {
        std::slice::from_ref(&a.ca)
    } else {
        &a.download_ca[..]
    };
    for p in roots {
        download_roots_pem.extend_from_slice(&read(p)?);
    }
    let provider = provider(KeyExchange::X25519);
    let verifier = Arc::new(
        PinningVerifier::from_ca_file(&a.ca, provider.clone())
            .with_context(|| format!("trust anchors from {}", a.ca.display()))?,
    );
    let ids = moat_device::load::fleet::list(&a.devices)
        .with_context(|| format!("listing devices in {}", a.devices.display()))?;
    let ids = ids.get(..a.count).with_context(|| {
        format!(
            "{} holds {} devices, not {}",
            a.devices.display(),
            ids.len(),
            a.count
        )
    })?;
    let devices = fleet::load_devices(&a.devices, ids, &provider, &verifier)
        .with_context(|| format!("loading devices from {}", a.devices.display()))?;
    let cfg = Arc::new(FleetConfig {
        target: Target {
            addr: a.addr,
            server_name: ServerName::try_from(a.server_name.clone())
                .with_context(|| format!("--server-name {}", a.server_name))?,
            version: Version::V311,
            keep_alive: 0,
            timeout: Duration::from_secs(30),
            session_expiry: None,
        },
        download_roots_pem,
        model: a.model.clone(),
        update_key,
        firmware_keys,
        factory_counter: a.factory_counter,
        slot_len: a.slot_size,
        download_attempts: 10,
        stop_after_updates: a.updates,
    });
    let stats = Arc::new(FleetStats::default());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let duration = Duration::from_secs_f64(a.duration);
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        stop.cancel();
    });
    let t0 = Instant::now();
    let cpu0 = moat_device::load::sys::own_cpu_time();
    fleet::run(cfg, devices, stats.clone(), shutdown).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (moat_device::load::sys::own_cpu_time() - cpu0).as_secs_f64();
    eprintln!(
        "fleet: {} devices, {:.1}s, summary {}",
        a.count,
        secs,
        stats.to_json()
    );
    Ok(
        json!({ "kind": "fleet", "devices": a.count, "seconds": secs, "cpu_seconds": cpu, "stats": stats.to_json() }),
    )
}
