//! Options and helpers shared by the subcommands.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use moat_device::load::client::Target;
use moat_device::load::fleet::{self, Device};
use moat_device::load::hist::Histogram;
use moat_device::load::sys;
use moat_device::load::tls::{KeyExchange, PinningVerifier, provider};
use moat_mqtt::Version;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Key exchange choice on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kx {
    /// X25519 only.
    X25519,
    /// P-256 only.
    P256,
    /// rustls' default preference list.
    Default,
}

/// Which broker, which devices, from where.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Broker address (TLS listener).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Name the broker's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// PEM file of the CA(s) that issued the broker's server certificate (the only trust).
    #[arg(long)]
    pub ca: PathBuf,
    /// Directory of device credentials (ID.crt + ID.key).
    #[arg(long)]
    pub devices: PathBuf,
    /// Source addresses: a list (127.0.0.1,127.0.0.2) or a last-octet range (127.0.0.1-16).
    #[arg(long, default_value = "127.0.0.1")]
    pub src: String,
    /// Speak MQTT 5.0 (default 3.1.1).
    #[arg(long)]
    pub mqtt5: bool,
    /// Key exchange group the client offers.
    #[arg(long, value_enum, default_value = "x25519")]
    pub kx: Kx,
    /// Timeout for TCP + TLS + CONNACK, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub connect_timeout: f64,
    /// Report CPU (and RSS, for `hold`) of this process, normally the broker.
    #[arg(long)]
    pub watch_pid: Option<u32>,
    /// Free-form label copied into the JSON report (e.g. "moat" or "mosquitto").
    #[arg(long, default_value = "")]
    pub label: String,
    /// Persistent sessions with this expiry (seconds; MQTT 3.1.1: clean session 0), so
    /// the broker keeps (and, durably, writes) what it queues for them.
    #[arg(long)]
    pub session_expiry: Option<u32>,
}

/// Everything needed to open connections.
#[derive(Debug)]
pub struct Setup {
    pub target: Target,
    pub sources: Vec<IpAddr>,
}

impl TargetArgs {
    /// Parses the target and loads devices `ids[offset..offset+count]` (all when `count` is
    /// None).
    pub fn load(
        &self,
        offset: usize,
        count: Option<usize>,
        keep_alive: u16,
    ) -> anyhow::Result<(Setup, Vec<Device>)> {
        let provider = provider(match self.kx {
            Kx::X25519 => KeyExchange::X25519,
            Kx::P256 => KeyExchange::P256,
            Kx::Default => KeyExchange::Default,
        });
        let verifier = Arc::new(
            PinningVerifier::from_ca_file(&self.ca, provider.clone())
                .with_context(|| format!("trust anchors from {}", self.ca.display()))?,
        );
        let ids = fleet::list(&self.devices)
            .with_context(|| format!("listing devices in {}", self.devices.display()))?;
        let end = count.map_or(ids.len(), |c| offset.saturating_add(c));
        let Some(ids) = ids.get(offset..end) else {
            bail!(
                "{} holds {} devices; asked for {}..{end}",
                self.devices.display(),
                ids.len(),
                offset
            );
        };
        let t = Instant::now();
        let devices = fleet::load(&self.devices, ids, &provider, &verifier)
            .with_context(|| format!("loading devices from {}", self.devices.display()))?;
        eprintln!(
            "moat-device: {} device identities loaded in {:.1?}",
            devices.len(),
            t.elapsed()
        );
        let server_name = ServerName::try_from(self.server_name.clone())
            .with_context(|| format!("--server-name {}", self.server_name))?;
        let target = Target {
            addr: self.addr,
            server_name,
            version: if self.mqtt5 {
                Version::V5
            } else {
                Version::V311
            },
            keep_alive,
            timeout: Duration::from_secs_f64(self.connect_timeout),
            session_expiry: self.session_expiry,
        };
        Ok((
            Setup {
                target,
                sources: parse_sources(&self.src)?,
            },
            devices,
        ))
    }
}

/// Parses `127.0.0.1,127.0.0.2` or `127.0.0.1-16`.
pub fn parse_sources(s: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((first, last)) = part.split_once('-') {
            let first: Ipv4Addr = first
                .parse()
                .with_context(|| format!("--src {part}: bad address"))?;
            let last: u8 = last
                .parse()
                .with_context(|| format!("--src {part}: bad last octet"))?;
            let o = first.octets();
            if last < o[3] {
                bail!("--src {part}: range goes backwards");
            }
            for x in o[3]..=last {
                out.push(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], x)));
            }
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("--src {part}: bad address"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("--src names no address");
    }
    Ok(out)
}

/// CPU clocks of the generator and (optionally) the broker, read at window edges.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    own: Duration,
    peer: Option<Duration>,
    at: Instant,
}

impl CpuMark {
    pub fn now(peer: Option<u32>) -> Self {
        CpuMark {
            own: sys::own_cpu_time(),
            peer: peer.and_then(|p| sys::cpu_time_of(p).ok()),
            at: Instant::now(),
        }
    }

    /// JSON of CPU seconds used since `self`, and the wall time.
    pub fn since(&self, later: &CpuMark) -> Value {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        let own = later.own.saturating_sub(self.own).as_secs_f64();
        let peer = match (self.peer, later.peer) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
            _ => None,
        };
        json!({ "wall_s": wall, "generator_cpu_s": own, "broker_cpu_s": peer })
    }
}

/// Latency summary in milliseconds.
pub fn latency_json(h: &Histogram) -> Value {
    let ms = |v: Option<u64>| v.map(|ns| ns as f64 / 1e6);
    json!({
        "count": h.count(),
        "p50_ms": ms(h.quantile(0.50)),
        "p99_ms": ms(h.quantile(0.99)),
        "p999_ms": ms(h.quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean().map(|v| v / 1e6),
    })
}

/// One-line human form of a latency summary.
pub fn latency_line(h: &Histogram) -> String {
    let ms = |q: f64| h.quantile(q).map_or(f64::NAN, |ns| ns as f64 / 1e6);
    format!(
        "n={} p50={:.2}ms p99={:.2}ms p999={:.2}ms max={:.2}ms",
        h.count(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max().map_or(f64::NAN, |ns| ns as f64 / 1e6)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() -> anyhow::Result<()> {
        assert_eq!(parse_sources("127.0.0.1-3")?.len(), 3);
        assert_eq!(parse_sources("127.0.0.1, 127.0.0.9")?.len(), 2);
        assert!(parse_sources("127.0.0.5-2").is_err());
        assert!(parse_sources("").is_err());
        Ok(())
    }
}
