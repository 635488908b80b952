//! Idle connections: opens them in stages, and after each stage reads the broker's RSS, so
//! memory per connection is the slope between stages (which cancels the broker's baseline).

use crate::common::{CpuMark, TargetArgs};
use anyhow::Context;
use clap::Args;
use moat_device::load::client;
use moat_device::load::sys;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// First device.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Cumulative connection counts at which to measure, e.g. 5000,15000.
    #[arg(long, value_delimiter = ',', required = true)]
    pub stages: Vec<usize>,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to wait after a stage before reading RSS.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
}

pub async fn run(a: HoldArgs) -> anyhow::Result<Value> {
    let total = a.stages.iter().copied().max().unwrap_or(0);
    let pid = a
        .target
        .watch_pid
        .context("hold needs --watch-pid (the broker)")?;
    // Keep alive 0: an idle connection sends nothing at all.
    let (setup, devices) = a.target.load(a.offset, Some(total), 0)?;
    let setup = Arc::new(setup);
    let mut held = Vec::with_capacity(total);
    let mut stages = Vec::new();
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let rss0 = sys::rss_bytes(pid).context("reading the broker's RSS")?;
    let cpu0 = CpuMark::now(Some(pid));
    let mut opened = 0usize;
    for &stage in &a.stages {
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, d) in devices.iter().enumerate().take(stage).skip(opened) {
            let (setup, d, sem) = (setup.clone(), d.clone(), sem.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let src = setup.sources[i % setup.sources.len()];
                client::connect(&setup.target, d.tls.clone(), &d.id, Some(src))
                    .await
                    .with_context(|| format!("connecting {}", d.id))
            });
        }
        while let Some(r) = tasks.join_next().await {
            held.push(r.context("connect task panicked")??);
        }
        opened = stage;
        let open_s = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
        let rss = sys::rss_bytes(pid)?;
        eprintln!(
            "hold[{}]: {} connections open ({:.1}s to open this stage), broker RSS {:.1} MiB",
            a.target.label,
            held.len(),
            open_s,
            rss as f64 / 1048576.0
        );
        stages
            .push(json!({ "connections": held.len(), "broker_rss_bytes": rss, "open_s": open_s }));
    }
    let cpu1 = CpuMark::now(Some(pid));
    let slope = match (stages.first(), stages.last()) {
        (Some(f), Some(l)) if stages.len() > 1 => {
            let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            Some(
                (n(l, "broker_rss_bytes") - n(f, "broker_rss_bytes"))
                    / (n(l, "connections") - n(f, "connections")),
            )
        }
        _ => None,
    };
    if let Some(s) = slope {
        eprintln!(
            "hold[{}]: broker memory per idle connection (RSS slope) {:.0} bytes = {:.1} KiB",
            a.target.label,
            s,
            s / 1024.0
        );
    }
    let gen_rss = sys::rss_bytes(std::process::id()).ok();
    drop(held);
    Ok(json!({
        "kind": "hold",
        "label": a.target.label,
        "broker_rss_before_bytes": rss0,
        "stages": stages,
        "bytes_per_connection": slope,
        "generator_rss_bytes": gen_rss,
        "cpu": cpu0.since(&cpu1),
    }))
}
