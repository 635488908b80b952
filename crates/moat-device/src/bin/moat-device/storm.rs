//! Reconnect storm: connects a fleet and holds it; when the broker drops the connections (it
//! was restarted or killed and started again on the same address), every device reconnects
//! at once, as real devices do after an outage, retrying with exponential backoff and full
//! jitter like a well-behaved device SDK. Reports how long until every device was back, the
//! attempts it took, why attempts failed, and each device's time from loss to CONNACK.
//!
//! It prints `storm: N connected` on stderr once the fleet is up, then waits for the drop;
//! whoever restarts the broker watches for that line.

use crate::common::TargetArgs;
use anyhow::Context;
use clap::Args;
use moat_device::load::client::{self, Connection, Stream, Target};
use moat_device::load::hist::Histogram;
use rustls::ClientConfig;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Devices (the first N of the fleet directory; all by default).
    #[arg(long)]
    pub count: Option<usize>,
    /// Handshakes in flight at once while first connecting (the storm itself is unpaced).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// First retry delay after a failed reconnection, seconds (doubling, full jitter).
    #[arg(long, default_value_t = 0.5)]
    pub backoff: f64,
    /// Longest retry delay, seconds.
    #[arg(long, default_value_t = 8.0)]
    pub max_backoff: f64,
    /// Give up (and fail) if not every device is back this many seconds after the drop.
    #[arg(long, default_value_t = 120.0)]
    pub deadline: f64,
    /// Seconds to wait for the broker to drop the connections.
    #[arg(long, default_value_t = 600.0)]
    pub wait_drop: f64,
}

/// One device's storm.
struct Back {
    /// From losing the connection to its new CONNACK.
    after: Duration,
    attempts: u32,
    /// Failed attempts by cause.
    failures: BTreeMap<&'static str, u32>,
    /// Kept open until the report.
    _conn: Connection<Stream>,
}

pub async fn run(a: StormArgs) -> anyhow::Result<Value> {
    let (setup, devices) = a.target.load(0, a.count, 0)?;
    let setup = Arc::new(setup);
    let n = devices.len();
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut opening = tokio::task::JoinSet::new();
    for (i, d) in devices.into_iter().enumerate() {
        let (setup, sem) = (setup.clone(), sem.clone());
        opening.spawn(async move {
            let permit = sem.acquire_owned().await;
            let src = setup.sources[i % setup.sources.len()];
            let conn = client::connect(&setup.target, d.tls.clone(), &d.id, Some(src))
                .await
                .with_context(|| format!("connecting {}", d.id))?;
            drop(permit);
            anyhow::Ok((conn, d, src))
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(r) = opening.join_next().await {
        held.push(r.context("connect task panicked")??);
    }
    eprintln!("storm: {n} connected");

    let mut storm = tokio::task::JoinSet::new();
    for (conn, d, src) in held {
        let (setup, lost_tx) = (setup.clone(), lost_tx.clone());
        let policy = Backoff {
            first: Duration::from_secs_f64(a.backoff),
            max: Duration::from_secs_f64(a.max_backoff),
        };
        let wait_drop = Duration::from_secs_f64(a.wait_drop);
        storm.spawn(async move {
            let (mut reader, _writer) = conn.split();
            // Keep alive 0: the broker sends nothing until it goes away.
            let _ = tokio::time::timeout(wait_drop, async {
                while let Ok(Some(_)) = reader.next().await {}
            })
            .await;
            let lost = Instant::now();
            let _sent = lost_tx.send(lost);
            reconnect(&setup.target, d.tls.clone(), &d.id, src, policy, lost).await
        });
    }
    drop(lost_tx);
    // The storm starts with the first connection lost.
    let first_lost = lost_rx.recv().await.context("no connection was held")?;
    let deadline = Duration::from_secs_f64(a.deadline);
    let mut back = Vec::with_capacity(n);
    let all = tokio::time::timeout(deadline, async {
        while let Some(r) = storm.join_next().await {
            back.push(r.context("storm task panicked")?);
        }
        anyhow::Ok(())
    })
    .await;
    let all_back_s = first_lost.elapsed().as_secs_f64();
    let mut hist = Histogram::new();
    let mut attempts = 0u64;
    let mut failures: BTreeMap<&'static str, u64> = BTreeMap::new();
    for b in &back {
        hist.record(b.after.as_micros() as u64);
        attempts += u64::from(b.attempts);
        for (k, v) in &b.failures {
            *failures.entry(k).or_default() += u64::from(*v);
        }
    }
    let ms = |q: f64| hist.quantile(q).map(|us| us as f64 / 1000.0);
    eprintln!(
        "storm: {}/{n} back {all_back_s:.1}s after the drop; {attempts} attempts; failures {failures:?}; p50 {:?} ms, p99 {:?} ms",
        back.len(),
        ms(0.5),
        ms(0.99),
    );
    let report = json!({
        "kind": "storm",
        "label": a.target.label,
        "devices": n,
        "reconnected": back.len(),
        "all_back_s": all_back_s,
        "attempts": attempts,
        "failures": failures,
        "reconnect_ms": { "p50": ms(0.5), "p99": ms(0.99), "max": hist.max().map(|us| us as f64 / 1000.0) },
    });
    match all {
        Ok(r) => r?,
        Err(_) => anyhow::bail!(
            "only {}/{n} devices back within {:.0}s: {report}",
            back.len(),
            a.deadline
        ),
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    max: Duration,
}

/// Reconnects until it succeeds, waiting between attempts as a device SDK would.
async fn reconnect(
    target: &Target,
    tls: Arc<ClientConfig>,
    id: &str,
    src: IpAddr,
    policy: Backoff,
    lost: Instant,
) -> Back {
    let mut failures = BTreeMap::new();
    let mut attempts = 0;
    let mut ceiling = policy.first;
    loop {
        attempts += 1;
        match client::connect(target, tls.clone(), id, Some(src)).await {
            Ok(conn) => {
                return Back {
                    after: lost.elapsed(),
                    attempts,
                    failures,
                    _conn: conn,
                };
            }
            Err(e) => {
                let cause = match e {
                    moat_device::load::Error::Timeout(_) => "timeout",
                    moat_device::load::Error::Refused(_) => "refused",
                    moat_device::load::Error::Closed => "closed",
                    moat_device::load::Error::Tls(_) => "tls",
                    // Nothing listening yet: the broker is still starting.
                    moat_device::load::Error::Io(e)
                        if e.kind() == std::io::ErrorKind::ConnectionRefused =>
                    {
                        "not_listening"
                    }
                    moat_device::load::Error::Io(e) => match e.kind() {
                        std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionAborted => "reset",
                        std::io::ErrorKind::UnexpectedEof => "eof",
                        std::io::ErrorKind::AddrNotAvailable => "no_local_port",
                        _ => "io",
                    },
                    _ => "other",
                };
                *failures.entry(cause).or_default() += 1;
                let jitter = rand_fraction(id, attempts);
                tokio::time::sleep(ceiling.mul_f64(jitter)).await;
                ceiling = (ceiling * 2).min(policy.max);
            }
        }
    }
}

/// A number in [0, 1) that differs per device and attempt (full jitter without a random
/// number generator dependency).
fn rand_fraction(id: &str, attempt: u32) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(id.as_bytes());
    h.write_u32(attempt);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
