//! `moat serve`: the configuration (file, then flags), logging, one rustls crypto provider
//! for the process, then a [`moat_node::Node`] until SIGINT/SIGTERM.

use crate::cli::ServeArgs;
use moat_node::{Config, Node};
use std::path::PathBuf;

/// Runs the hub. `data_dir` is the CLI's `--data-dir`, which wins over the config file's.
pub async fn run(data_dir: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<()> {
    let config_path = args.config.clone().or_else(|| {
        let p = data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::cmd::DEFAULT_DATA_DIR))
            .join("moat.toml");
        p.exists().then_some(p)
    });
    let mut cfg = Config::load(config_path.as_deref())?;
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    if let Some(db) = args.database {
        cfg.database = Some(db);
    }
    if let Some(a) = args.api_listen {
        cfg.api.listen = a;
    }
    if let Some(a) = args.crl_listen {
        cfg.crl.listen = a;
    }
    if let Some(a) = args.mqtt_listen {
        cfg.mqtt.tls_listen = a;
    }
    if let Some(a) = args.mqtt_plain_listen {
        cfg.mqtt.plain_listen = a;
    }
    if let Some(a) = args.metrics_listen {
        cfg.metrics.listen = a;
    }
    if let Some(a) = args.ota_listen {
        cfg.ota.listen = a;
    }
    if args.no_mqtt_plain {
        cfg.mqtt.plain_enabled = false;
    }
    if let Some(v) = args.vault {
        cfg.vault.source = v;
    }
    crate::logging::init(&cfg.log);
    // Both aws-lc-rs and ring can end up in the tree; pick one provider for the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let node = Node::start(cfg).await?;
    let e = node.endpoints();
    let mqtt_plain = e.mqtt_plain.as_deref().unwrap_or("off");
    tracing::info!(admin = %e.admin_url, console = %format!("{}/console", e.admin_url), crl = %e.crl_url, mqtt_tls = %e.mqtt_tls, mqtt_plain, ota_download = %e.ota_download, data_dir = %node.data_dir().display(), "moat hub running");
    println!(
        "moat hub running: admin API {} , CRLs {} , MQTT TLS {} , MQTT plain {} , firmware downloads {} , data dir {}",
        e.admin_url,
        e.crl_url,
        e.mqtt_tls,
        mqtt_plain,
        e.ota_download,
        node.data_dir().display()
    );
    wait_for_signal().await;
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
