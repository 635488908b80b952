//! `moat-device`: the fleet simulator and MQTT load generator for the Moat hub (the load
//! subcommands also work against any MQTT broker that accepts the same device certificates,
//! such as Mosquitto).
//!
//! Subcommands: `fleet` (N simulated devices taking firmware updates), `enroll` (bulk device
//! creation through the admin API), `connect` (full mTLS
//! handshakes + CONNECT/CONNACK per second), `hold` (idle connections, broker RSS per
//! connection), `pubsub` (message rate and latency), `revoke` (revocation → disconnect
//! latency), `est` (EST enrollments per second through a station). Each prints a human summary on stderr and one JSON object on stdout.

mod admin;
mod common;
mod connect;
mod est;
mod fleet;
mod hold;
mod pubsub;
mod revoke;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "moat-device",
    version,
    about = "Fleet simulator and MQTT load generator for the Moat hub"
)]
struct Cli {
    /// Tokio worker threads (the generator shares the machine with the broker).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Simulated devices (own certificates) that take firmware updates and report.
    Fleet(fleet::FleetArgs),
    /// Create devices through the hub's admin API and write DIR/ID.crt + DIR/ID.key.
    Enroll(admin::EnrollArgs),
    /// Full TLS handshakes + CONNECT/CONNACK per second (connect, CONNACK, disconnect, repeat).
    Connect(connect::ConnectArgs),
    /// Open idle connections in stages and report the broker's RSS per connection.
    Hold(hold::HoldArgs),
    /// Publish/subscribe workload: messages per second and end-to-end latency.
    Pubsub(pubsub::PubsubArgs),
    /// Revoke connected devices one by one and time until their connection closes.
    Revoke(revoke::RevokeArgs),
    /// EST simpleenroll rate through a station certificate (CSRs made beforehand).
    Est(est::EstArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match moat_device::load::sys::raise_nofile_limit() {
        Ok(n) => eprintln!("moat-device: RLIMIT_NOFILE soft limit {n}"),
        Err(e) => eprintln!("moat-device: cannot raise RLIMIT_NOFILE: {e}"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = rt.block_on(async {
        match cli.cmd {
            Cmd::Fleet(a) => fleet::run(a).await,
            Cmd::Enroll(a) => admin::enroll(a).await,
            Cmd::Connect(a) => connect::run(a).await,
            Cmd::Hold(a) => hold::run(a).await,
            Cmd::Pubsub(a) => pubsub::run(a).await,
            Cmd::Revoke(a) => revoke::run(a).await,
            Cmd::Est(a) => est::run(a).await,
        }
    })?;
    println!("{report}");
    Ok(())
}
