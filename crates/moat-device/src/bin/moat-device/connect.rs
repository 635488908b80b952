//! Handshake rate: workers connect (TCP + full TLS 1.3 handshake with a client certificate +
//! CONNECT/CONNACK), disconnect and repeat, cycling through the fleet's identities.

use crate::common::{CpuMark, TargetArgs, latency_json, latency_line};
use clap::Args;
use moat_device::load::client;
use moat_device::load::hist::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// First device (index in the sorted directory).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Devices to cycle through (default: all from the offset). Use ≥ 10 × concurrency.
    #[arg(long)]
    pub count: Option<usize>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
}

pub async fn run(a: ConnectArgs) -> anyhow::Result<Value> {
    let (setup, devices) = a.target.load(a.offset, a.count, 60)?;
    anyhow::ensure!(!devices.is_empty(), "no devices");
    let setup = Arc::new(setup);
    let devices = Arc::new(devices);
    let start = Instant::now();
    let from = start + Duration::from_secs_f64(a.warmup);
    let to = from + Duration::from_secs_f64(a.duration);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.max(1) {
        let (setup, devices, next, errors, first_error) = (
            setup.clone(),
            devices.clone(),
            next.clone(),
            errors.clone(),
            first_error.clone(),
        );
        tasks.spawn(async move {
            let mut h = Histogram::new();
            loop {
                let now = Instant::now();
                if now >= to {
                    return h;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let d = &devices[i % devices.len()];
                let src = setup.sources[i % setup.sources.len()];
                match client::connect(&setup.target, d.tls.clone(), &d.id, Some(src)).await {
                    Ok(conn) => {
                        let done = Instant::now();
                        if now >= from && done <= to {
                            h.record(
                                u64::try_from(done.duration_since(now).as_nanos())
                                    .unwrap_or(u64::MAX),
                            );
                        }
                        let _closed = conn.disconnect().await;
                    }
                    Err(e) => {
                        if now >= from {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Ok(mut f) = first_error.lock()
                            && f.is_none()
                        {
                            *f = Some(format!("{}: {e:#}", d.id));
                        }
                    }
                }
            }
        });
    }
    tokio::time::sleep_until(from.into()).await;
    let cpu0 = CpuMark::now(a.target.watch_pid);
    tokio::time::sleep_until(to.into()).await;
    let cpu1 = CpuMark::now(a.target.watch_pid);
    let mut h = Histogram::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(part) = r {
            h.merge(&part);
        }
    }
    let rate = h.count() as f64 / a.duration;
    let errs = errors.load(Ordering::Relaxed);
    let first = first_error.lock().ok().and_then(|f| f.clone());
    eprintln!(
        "connect[{}]: {rate:.0} handshakes+CONNACK/s over {:.0}s, concurrency {}, errors {errs}; latency {}",
        a.target.label,
        a.duration,
        a.concurrency,
        latency_line(&h)
    );
    if let Some(f) = &first {
        eprintln!("connect[{}]: first error: {f}", a.target.label);
    }
    Ok(json!({
        "kind": "connect",
        "label": a.target.label,
        "devices": devices.len(),
        "concurrency": a.concurrency,
        "handshakes_per_s": rate,
        "errors": errs,
        "first_error": first,
        "latency": latency_json(&h),
        "cpu": cpu0.since(&cpu1),
    }))
}
