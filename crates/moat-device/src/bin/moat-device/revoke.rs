//! Revocation → disconnect latency: connect devices, then revoke them one at a time through
//! the admin API and time until the generator sees each connection close. Afterwards each
//! revoked device tries to reconnect once, which must fail.

use crate::admin::{Admin, AdminArgs};
use crate::common::{TargetArgs, latency_json, latency_line};
use anyhow::Context;
use clap::Args;
use moat_device::load::client::{self, Incoming};
use moat_device::load::hist::Histogram;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    /// First device to revoke (index in the sorted directory). These devices are spent.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Devices to revoke.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Source address of the reconnect attempts after revocation (kept apart so that the
    /// hub's per-address failure limit cannot affect other runs).
    #[arg(long, default_value = "127.0.0.254")]
    pub reconnect_src: std::net::IpAddr,
    /// Longest wait for a close, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub wait: f64,
}

pub async fn run(a: RevokeArgs) -> anyhow::Result<Value> {
    let admin = Admin::from_data_dir(&a.admin.hub_data_dir)?;
    let (setup, devices) = a.target.load(a.offset, Some(a.count), 600)?;
    let mut watched = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let src = setup.sources[i % setup.sources.len()];
        let conn = client::connect(&setup.target, d.tls.clone(), &d.id, Some(src))
            .await
            .with_context(|| format!("connecting {}", d.id))?;
        let (mut reader, writer) = conn.split();
        let (tx, rx) = oneshot::channel::<Instant>();
        tokio::spawn(async move {
            let _writer = writer;
            loop {
                match reader.next().await {
                    Ok(Some(Incoming::Disconnect(_))) | Ok(None) | Err(_) => break,
                    Ok(Some(_)) => {}
                }
            }
            let _ = tx.send(Instant::now());
        });
        watched.push((d.clone(), rx));
    }
    eprintln!(
        "revoke[{}]: {} connections up",
        a.target.label,
        watched.len()
    );
    let mut from_request = Histogram::new();
    let mut from_response = Histogram::new();
    let mut before_response = 0u32;
    let mut not_closed = Vec::new();
    let mut reconnected = Vec::new();
    for (d, mut rx) in watched {
        let t0 = Instant::now();
        admin
            .revoke_device(&d.id)
            .await
            .with_context(|| format!("revoking {}", d.id))?;
        let t1 = Instant::now();
        let closed = match rx.try_recv() {
            Ok(t) => Some(t),
            Err(_) => tokio::time::timeout(Duration::from_secs_f64(a.wait), rx)
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(t2) = closed else {
            not_closed.push(d.id.clone());
            continue;
        };
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        from_request.record(ns(t2.duration_since(t0)));
        if t2 <= t1 {
            before_response += 1;
            from_response.record(0);
        } else {
            from_response.record(ns(t2.duration_since(t1)));
        }
        // The same credentials must now be refused (at the handshake or at CONNECT).
        if let Ok(c) =
            client::connect(&setup.target, d.tls.clone(), &d.id, Some(a.reconnect_src)).await
        {
            // A CONNACK 0 after revocation is a failure of the hub; record it.
            reconnected.push(d.id.clone());
            let _ = c.disconnect().await;
        }
    }
    eprintln!(
        "revoke[{}]: revoke request → connection closed: {}",
        a.target.label,
        latency_line(&from_request)
    );
    eprintln!(
        "revoke[{}]: API response → connection closed: {} ({} closed before the response)",
        a.target.label,
        latency_line(&from_response),
        before_response
    );
    eprintln!(
        "revoke[{}]: not closed within {}s: {}; reconnects accepted after revocation: {}",
        a.target.label,
        a.wait,
        not_closed.len(),
        reconnected.len()
    );
    Ok(json!({
        "kind": "revoke",
        "label": a.target.label,
        "revocations": a.count,
        "request_to_close": latency_json(&from_request),
        "response_to_close": latency_json(&from_response),
        "closed_before_response": before_response,
        "not_closed": not_closed,
        "reconnects_accepted": reconnected,
    }))
}
