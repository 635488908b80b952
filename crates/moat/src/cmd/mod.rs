//! The CLI's commands. Each admin command is one API call (or a few) and a printout.

mod access;
mod ca;
mod campaign;
mod cert;
mod device;
mod enrollment;
mod fw;
mod gateway;
mod lifecycle;
mod operators;

use crate::cli::{AuditCmd, Cli, ClusterCmd, Command, ConfigCmd, ServerCmd, SessionCmd};
use crate::client::ApiClient;
use moat_api::dto::{AuditView, CertView, ClusterView, CrlView, SessionView};
use serde::Serialize;

/// The data dir when neither `--data-dir` nor the config names one.
pub const DEFAULT_DATA_DIR: &str = "./moat-data";

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => crate::serve::run(cli.data_dir, args).await,
        Command::Config(ConfigCmd::Default) => {
            print!("{}", moat_node::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Ca(ref c) => ca::run(&cli, c).await,
        Command::Acl(ref c) => access::acl(&cli, c).await,
        Command::App(ref c) => access::app(&cli, c).await,
        Command::Device(ref c) => device::run(&cli, c).await,
        Command::Gateway(ref c) => gateway::run(&cli, c).await,
        Command::Cert(ref c) => cert::run(&cli, c).await,
        Command::Allowlist(ref c) => enrollment::allowlist(&cli, c).await,
        Command::Station(ref c) => enrollment::station(&cli, c).await,
        Command::EnrollmentGroup(ref c) => enrollment::enrollment_group(&cli, c).await,
        Command::Operator(ref c) => operators::run(&cli, c).await,
        Command::Session(SessionCmd::List) => {
            let api = ApiClient::from_cli(&cli)?;
            let sessions: Vec<SessionView> = api.get("/api/v1/sessions").await?;
            if cli.json {
                return print_json(&sessions);
            }
            println!(
                "{:<32} {:<32} {:<6} {:<5} {:<22} CONNECTED",
                "CLIENT ID", "IDENTITY", "MODE", "MQTT", "PEER"
            );
            for s in sessions {
                println!(
                    "{:<32} {:<32} {:<6} {:<5} {:<22} {}",
                    s.client_id, s.identity, s.mode, s.protocol, s.peer, s.connected_at
                );
            }
            Ok(())
        }
        Command::Cluster(ClusterCmd::Status) => {
            let api = ApiClient::from_cli(&cli)?;
            let c: ClusterView = api.get("/api/v1/cluster").await?;
            if cli.json {
                return print_json(&c);
            }
            if c.nodes.is_empty() {
                println!(
                    "not a cluster: this hub runs as a single node (see [cluster] in `moat config default`)"
                );
                return Ok(());
            }
            println!(
                "event log at {}; leader {}; answered by {}",
                c.event_log_head,
                c.leader.as_deref().unwrap_or("(none)"),
                c.answered_by.as_deref().unwrap_or("?")
            );
            println!(
                "{:<16} {:<5} {:>9} {:>8} {:<12} {:>9} {:<22} API",
                "NODE", "STATE", "SESSIONS", "BEHIND", "NATS", "SEEN (s)", "MQTT"
            );
            for n in c.nodes {
                println!(
                    "{:<16} {:<5} {:>9} {:>8} {:<12} {:>9} {:<22} {}",
                    n.name,
                    n.state,
                    n.sessions,
                    n.events_behind,
                    n.nats,
                    n.last_heartbeat_seconds_ago,
                    n.mqtt,
                    n.api
                );
            }
            Ok(())
        }
        Command::Cluster(ClusterCmd::Forget { ref name }) => {
            let api = ApiClient::from_cli(&cli)?;
            api.delete(&format!("/api/v1/cluster/nodes/{}", seg(name)))
                .await?;
            println!("forgot cluster node {name}");
            Ok(())
        }
        Command::Session(SessionCmd::Kick { ref client_id }) => {
            let api = ApiClient::from_cli(&cli)?;
            api.post_empty(&format!("/api/v1/sessions/{}/kick", seg(client_id)))
                .await?;
            println!("closed the session of {client_id}");
            Ok(())
        }
        Command::Fw(ref c) => fw::run(&cli, c).await,
        Command::Campaign(ref c) => campaign::run(&cli, c).await,
        Command::Server(ServerCmd::Rotate) => {
            let api = ApiClient::from_cli(&cli)?;
            let cert: CertView = api.post("/api/v1/server/rotate", &()).await?;
            if cli.json {
                return print_json(&cert);
            }
            println!(
                "hub server certificate rotated: serial {}, valid until {}",
                cert.serial, cert.not_after
            );
            Ok(())
        }
        Command::Crl { ref ca } => {
            let api = ApiClient::from_cli(&cli)?;
            let crl: CrlView = api.get(&format!("/api/v1/crls/{}", seg(ca))).await?;
            if cli.json {
                return print_json(&crl);
            }
            print!("{}", crl.crl_pem);
            Ok(())
        }
        Command::Audit {
            what:
                Some(AuditCmd::Posture {
                    within_days,
                    ref fail_on,
                }),
            ..
        } => posture(&cli, within_days, fail_on.as_deref()).await,
        Command::Audit { limit, what: None } => {
            let api = ApiClient::from_cli(&cli)?;
            let entries: Vec<AuditView> = api.get(&format!("/api/v1/audit?limit={limit}")).await?;
            if cli.json {
                return print_json(&entries);
            }
            for e in entries.iter().rev() {
                println!(
                    "{}  {:<7} {:<6} {:<22} {:<24} {}",
                    e.at,
                    e.outcome,
                    e.actor,
                    e.action,
                    e.target.as_deref().unwrap_or("-"),
                    e.detail.as_deref().unwrap_or("")
                );
            }
            Ok(())
        }
    }
}

/// `moat audit posture`.
async fn posture(cli: &Cli, within_days: Option<u32>, fail_on: Option<&str>) -> anyhow::Result<()> {
    let api = ApiClient::from_cli(cli)?;
    let path = match within_days {
        Some(d) => format!("/api/v1/posture?within_days={d}"),
        None => "/api/v1/posture".to_string(),
    };
    let report: moat_api::PostureReport = api.get(&path).await?;
    if cli.json {
        print_json(&report)?;
    } else if report.findings.is_empty() {
        println!("no findings ({})", report.generated_at);
    } else {
        for f in &report.findings {
            println!(
                "{:<8} {:<30} {}\n         {}\n         → {}",
                f.severity.to_uppercase(),
                f.check,
                f.subject,
                f.detail,
                f.action
            );
        }
        let counts: Vec<String> = report
            .counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        println!("{} findings: {}", report.findings.len(), counts.join(", "));
    }
    let rank = |s: &str| {
        ["low", "medium", "high", "critical"]
            .iter()
            .position(|x| *x == s)
    };
    if let Some(min) = fail_on.and_then(rank)
        && report
            .findings
            .iter()
            .any(|f| rank(&f.severity).is_some_and(|r| r >= min))
    {
        std::process::exit(3);
    }
    Ok(())
}

/// Prints a value as pretty JSON.
pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Percent-encodes a path segment (ids are restricted, but a typo must not become a path).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a file the user named, with an error that names it.
pub fn read_input(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))
}
