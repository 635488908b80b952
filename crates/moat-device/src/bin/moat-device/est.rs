//! EST enrollment rate, end to end: `simpleenroll` over HTTPS with a station certificate
//! (mutual TLS) → CSR check → allow-list claim → sign → device + certificate + audit stored
//! → certs-only answer. CSRs (P-256 keys) are made before the clock starts, as a factory's
//! devices make their own; the serials are put on the allow-list and a station is created
//! through the admin API first.

use crate::admin::{Admin, AdminArgs};
use crate::common::{CpuMark, latency_json, latency_line};
use anyhow::{Context, bail};
use base64::Engine;
use clap::Args;
use moat_device::load::hist::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct EstArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Enrollments (distinct serials, each enrolled once).
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Concurrent clients, each with its own HTTPS connection (kept alive).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// A new TCP + TLS connection (full mutual-TLS handshake) for every enrollment.
    #[arg(long)]
    pub new_connections: bool,
    /// Process id of the hub, to report its CPU time (default: from hub.json).
    #[arg(long)]
    pub watch_pid: Option<u32>,
}

pub async fn run(a: EstArgs) -> anyhow::Result<Value> {
    let admin = Admin::from_data_dir(&a.admin.hub_data_dir)?;
    let run_id = format!("{:08x}", rand_u32());
    let prefix = format!("est-{run_id}-");

    // Before the clock: CSRs, allow-list, station.
    let t = Instant::now();
    let serials: Vec<String> = (0..a.count).map(|i| format!("{prefix}{i:07}")).collect();
    let bodies: Vec<String> = serials
        .iter()
        .map(|s| csr_base64(s))
        .collect::<anyhow::Result<_>>()?;
    eprintln!(
        "est: {} CSRs (P-256) made in {:.1}s",
        bodies.len(),
        t.elapsed().as_secs_f64()
    );
    for chunk in serials.chunks(100_000) {
        admin.add_allowlist(chunk.join("\n")).await?;
    }
    let (cert, key) = admin
        .create_station(&format!("bench-{run_id}"))
        .await
        .context("creating the bench station")?;
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes())
        .context("station identity")?;
    let bundle = std::fs::read(a.admin.hub_data_dir.join("ca-bundle.pem"))
        .context("reading ca-bundle.pem")?;
    let roots = reqwest::Certificate::from_pem_bundle(&bundle).context("ca-bundle.pem")?;
    let url = format!("{}/.well-known/est/simpleenroll", admin.base());
    let watch = match a.watch_pid {
        Some(p) => Some(p),
        None => hub_pid(&a.admin.hub_data_dir),
    };

    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut clients = Vec::with_capacity(a.concurrency.max(1));
    for _ in 0..a.concurrency.max(1) {
        let mut b = reqwest::Client::builder()
            .tls_certs_only(roots.clone())
            .identity(identity.clone())
            .timeout(Duration::from_secs(30));
        if a.new_connections {
            b = b.pool_max_idle_per_host(0);
        }
        clients.push(b.build().context("HTTPS client")?);
    }
    let cpu0 = CpuMark::now(watch);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for http in clients {
        let (bodies, next, errors, first_error, url) = (
            bodies.clone(),
            next.clone(),
            errors.clone(),
            first_error.clone(),
            url.clone(),
        );
        tasks.spawn(async move {
            let mut h = Histogram::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return h;
                };
                let t = Instant::now();
                match enroll(&http, &url, body.clone()).await {
                    Ok(()) => h.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock()
                            && f.is_none()
                        {
                            *f = Some(format!("{e:#}"));
                        }
                    }
                }
            }
        });
    }
    let mut h = Histogram::new();
    while let Some(r) = tasks.join_next().await {
        h.merge(&r.context("EST worker panicked")?);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = CpuMark::now(watch);
    let rate = h.count() as f64 / secs;
    let errs = errors.load(Ordering::Relaxed);
    let first = first_error.lock().ok().and_then(|f| f.clone());
    eprintln!(
        "est: {} enrollments in {secs:.2}s = {rate:.0}/s, {} clients{}, errors {errs}; latency {}",
        h.count(),
        a.concurrency,
        if a.new_connections {
            ", new TLS connection each"
        } else {
            ", kept-alive connections"
        },
        latency_line(&h)
    );
    if let Some(f) = &first {
        eprintln!("est: first error: {f}");
    }
    Ok(json!({
        "kind": "est",
        "enrollments": h.count(),
        "concurrency": a.concurrency,
        "new_connections": a.new_connections,
        "seconds": secs,
        "enrollments_per_s": rate,
        "errors": errs,
        "first_error": first,
        "latency": latency_json(&h),
        "cpu": cpu0.since(&cpu1),
    }))
}

/// One simpleenroll; the answer must be a 200 certs-only body.
async fn enroll(http: &reqwest::Client, url: &str, body: String) -> anyhow::Result<()> {
    let resp = http
        .post(url)
        .header("content-type", "application/pkcs10")
        .body(body)
        .send()
        .await
        .context("POST simpleenroll")?;
    let status = resp.status();
    let text = resp.text().await.context("reading the answer")?;
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    if text.len() < 400 {
        bail!("answer too short for a certificate: {text:?}");
    }
    Ok(())
}

/// A P-256 CSR with CN = `serial`, DER in one-line base64.
fn csr_base64(serial: &str) -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate().context("P-256 key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, serial);
    let csr = params.serialize_request(&key).context("CSR")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(csr.der()))
}

fn hub_pid(dir: &std::path::Path) -> Option<u32> {
    let text = std::fs::read(dir.join("hub.json")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    v.get("pid")?.as_u64().and_then(|p| u32::try_from(p).ok())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}
