//! `moat-device`: the device SDK on the command line, and the fleet simulator and MQTT load
//! generator for the Moat hub (the load subcommands also work against any MQTT broker that
//! accepts the same device certificates, such as Mosquitto).
//!
//! Device subcommands (device.rs): `key generate|show` (file or PKCS#11 key store),
//! `cacerts`, `est-enroll` (factory enrollment through a station), `reenroll`, `provision`,
//! `run` (MQTT over mutual TLS, publishing, renewing the certificate when due). Devices
//! without IP (link.rs): `gateway` (a simulated link, UDP, bridged to the hub), `cose-send`
//! and `cose-receive` (the constrained device's side of it).
//!
//! Load subcommands: `fleet` (N simulated devices taking firmware updates), `enroll` (bulk device
//! creation through the admin API), `connect` (full mTLS
//! handshakes + CONNECT/CONNACK per second), `hold` (idle connections, broker RSS per
//! connection), `storm` (a held fleet reconnecting at once after a broker restart), `pubsub`
//! (message rate and latency), `revoke` (revocation → disconnect
//! latency), `est` (EST enrollments per second through a station), `baseline-server` (a bare rustls
//! mutual-TLS server, the handshake benchmark's baseline). Each prints a human summary on stderr and one JSON object on stdout.

mod admin;
mod baseline;
mod common;
mod connect;
mod device;
mod est;
mod fleet;
mod hold;
mod link;
mod pubsub;
mod revoke;
mod storm;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "moat-device",
    version,
    about = "Moat device SDK: key store, EST enrollment, provisioning, MQTT with renewal; fleet simulator and load generator"
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
    /// Device key: generate (in the token for PKCS#11) or show its public key.
    #[command(subcommand)]
    Key(device::KeyCmd),
    /// EST cacerts: the hub's CA certificates.
    Cacerts(device::CacertsArgs),
    /// EST simpleenroll of this device's key through a factory station.
    EstEnroll(device::EnrollArgs),
    /// EST simplereenroll over mutual TLS with the current certificate (renewal).
    Reenroll(device::ReenrollArgs),
    /// Field provisioning with the factory certificate: operational certificate + MQTT endpoint.
    Provision(device::ProvisionArgs),
    /// Connect to MQTT with the device certificate, publish, renew when due.
    Run(device::RunArgs),
    /// A gateway for devices without IP: bridges a simulated link (UDP datagrams of at most
    /// 222 bytes) to the hub, relaying signed frames unchanged both ways.
    Gateway(link::GatewayArgs),
    /// Play a device without IP: sign one message (COSE_Sign1, counter file) and send it to
    /// the gateway over the link.
    CoseSend(link::CoseSendArgs),
    /// Play a device without IP: receive downlinks from the link and verify each (trusted
    /// signer, signature, replay window file).
    CoseReceive(link::CoseReceiveArgs),
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
    /// Reconnect storm: hold a fleet, and when the broker drops it (a restart), reconnect
    /// every device at once with backoff; time until all are back.
    Storm(storm::StormArgs),
    /// Revoke connected devices one by one and time until their connection closes.
    Revoke(revoke::RevokeArgs),
    /// EST simpleenroll rate through a station certificate (CSRs made beforehand).
    Est(est::EstArgs),
    /// A bare rustls mutual-TLS server answering a fixed CONNACK: the handshake benchmark's
    /// baseline (what TLS alone costs, without MQTT or admission).
    BaselineServer(baseline::BaselineArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match run(cli) {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut line = String::new();
            for c in chain {
                if !line.contains(&c) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&c);
                }
            }
            eprintln!("error: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    let device_cmd = matches!(
        cli.cmd,
        Cmd::Key(_)
            | Cmd::Cacerts(_)
            | Cmd::EstEnroll(_)
            | Cmd::Reenroll(_)
            | Cmd::Provision(_)
            | Cmd::Run(_)
            | Cmd::Gateway(_)
            | Cmd::CoseSend(_)
            | Cmd::CoseReceive(_)
    );
    if !device_cmd {
        match moat_device::load::sys::raise_nofile_limit() {
            Ok(n) => eprintln!("moat-device: RLIMIT_NOFILE soft limit {n}"),
            Err(e) => eprintln!("moat-device: cannot raise RLIMIT_NOFILE: {e}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Key(c) => device::key(c),
            Cmd::Cacerts(a) => device::cacerts(a).await,
            Cmd::EstEnroll(a) => device::est_enroll(a).await,
            Cmd::Reenroll(a) => device::reenroll(a).await,
            Cmd::Provision(a) => device::provision(a).await,
            Cmd::Gateway(a) => link::gateway(a).await,
            Cmd::CoseSend(a) => link::cose_send(a).await,
            Cmd::CoseReceive(a) => link::cose_receive(a).await,
            Cmd::Run(a) => device::run(a).await,
            Cmd::Fleet(a) => fleet::run(a).await,
            Cmd::Enroll(a) => admin::enroll(a).await,
            Cmd::Connect(a) => connect::run(a).await,
            Cmd::Hold(a) => hold::run(a).await,
            Cmd::Storm(a) => storm::run(a).await,
            Cmd::Pubsub(a) => pubsub::run(a).await,
            Cmd::Revoke(a) => revoke::run(a).await,
            Cmd::Est(a) => est::run(a).await,
            Cmd::BaselineServer(a) => baseline::run(a).await,
        }
    })
}
