//! A running hub node, assembled from a [`Config`]: open the vault and the registry, make or
//! reuse the hub's CAs, server certificate and admin token, bind the listeners, start the
//! event followers and background jobs. [`Node::start`] returns once it serves;
//! [`Node::shutdown`] stops it gracefully. `moat serve` is this plus a signal handler; tests
//! start several nodes in one process on port 0.

use crate::config::{Config, Durability};
use crate::error::{Context, Error};
use crate::files::{private_dir, write_atomic};
use moat_api::{AdminAuth, AppState, ServeLimits};
use moat_core::{CoreConfig, Hub};
use moat_vault::{MasterKeySource, Pkcs11Config, Secret, Vault};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Setting key of the admin token's hash.
const ADMIN_TOKEN_HASH: &str = "admin.token_hash";

/// What `serve` writes into the data dir for the CLI: where the running hub listens.
#[derive(Debug, Serialize, Deserialize)]
pub struct HubFile {
    /// Admin API base URL.
    pub admin_url: String,
    /// CRL endpoint base URL.
    pub crl_url: String,
    /// MQTT over TLS (`host:port`).
    pub mqtt_tls: String,
    /// MQTT over plain TCP (`host:port`), if enabled.
    pub mqtt_plain: Option<String>,
    /// Metrics and health base URL.
    pub metrics_url: String,
    /// Firmware downloads, mutual TLS (`host:port`).
    #[serde(default)]
    pub ota_download: String,
    /// The hub's process id.
    pub pid: u32,
}

/// A running hub node.
#[derive(Debug)]
pub struct Node {
    hub: Arc<Hub>,
    broker: Arc<moat_broker::Broker>,
    endpoints: HubFile,
    data_dir: PathBuf,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Node {
    /// The hub's domain services.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Where the node listens (also written to `hub.json` in its data dir).
    pub fn endpoints(&self) -> &HubFile {
        &self.endpoints
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The node's cluster membership, if `[cluster] nats` is set.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// Stops the node: listeners close, background jobs end, MQTT state is saved, `hub.json`
    /// is removed.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        // The listeners flushed on the way out; this also covers connections that outlived them.
        if let Err(e) = self.broker.flush().await {
            tracing::error!(error = ?e, "cannot save the MQTT hub's state");
        }
        let _ = std::fs::remove_file(self.data_dir.join("hub.json"));
    }

    /// Starts a node as `cfg` says. The process's rustls crypto provider and logging are the
    /// caller's (see `moat serve`).
    pub async fn start(cfg: Config) -> crate::Result<Node> {
        let data_dir = cfg.data_dir.clone();
        cfg.check_cluster_registry()
            .map_err(|e| Error::Config(e.to_string()))?;
        private_dir(&data_dir)?;

        let vault = Vault::open(&data_dir, master_key_source(&cfg)?)
            .with_context(|| format!("cannot open the vault in {}", data_dir.display()))?;
        let db_url = cfg
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("moat.db").display()));
        let store = moat_store::open(&db_url)
            .await
            .context("cannot open the registry")?;
        tracing::info!(
            store = store.backend(),
            vault = vault.backend(),
            "registry and vault open"
        );

        // Bind first: the CRL URL written into certificates needs the real port.
        let api_listener = TcpListener::bind(cfg.api.listen)
            .await
            .with_context(|| format!("cannot listen on {} (api.listen)", cfg.api.listen))?;
        let crl_listener = TcpListener::bind(cfg.crl.listen)
            .await
            .with_context(|| format!("cannot listen on {} (crl.listen)", cfg.crl.listen))?;
        let metrics_listener = TcpListener::bind(cfg.metrics.listen)
            .await
            .with_context(|| format!("cannot listen on {} (metrics.listen)", cfg.metrics.listen))?;
        let backlog = cfg.mqtt.listen_backlog;
        let mqtt_tls_listener = listen(cfg.mqtt.tls_listen, backlog).with_context(|| {
            format!("cannot listen on {} (mqtt.tls_listen)", cfg.mqtt.tls_listen)
        })?;
        let mqtt_plain_listener = match cfg.mqtt.plain_enabled {
        true => Some(listen(cfg.mqtt.plain_listen, backlog).with_context(|| {
            format!("cannot listen on {} (mqtt.plain_listen; set mqtt.plain_enabled = false to turn it off)", cfg.mqtt.plain_listen)
        })?),
        false => None,
    };
        let ota_listener = TcpListener::bind(cfg.ota.listen)
            .await
            .with_context(|| format!("cannot listen on {} (ota.listen)", cfg.ota.listen))?;
        let ota_addr = ota_listener.local_addr()?;
        let api_addr = api_listener.local_addr()?;
        let crl_addr = crl_listener.local_addr()?;
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();

        let mqtt_addr = mqtt_tls_listener.local_addr()?;
        let core = core_config(&cfg, &hostname, crl_addr, mqtt_addr)?;
        let hub = Arc::new(Hub::open(store.clone(), Arc::new(vault), core).await?);
        // Before anything is loaded from the registry into memory: a change another node
        // commits from here on reaches this node through the cluster's event log.
        let cluster = match cfg.cluster.enabled() {
            true => {
                let name = cluster_node_name(&cfg, &hostname);
                Some(crate::cluster::Cluster::join(&cfg.cluster, name, &hub).await?)
            }
            false => None,
        };

        let token_hash = admin_token(&hub, &data_dir).await?;
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !hostname.is_empty() {
            names.push(hostname.clone());
        }
        for n in &cfg.server.names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let identity = hub.server_identity(&names).await?;
        // One client-certificate verifier for every TLS listener (MQTT, and HTTPS for EST),
        // kept current by `mqtt::follow_events`.
        let verifier = Arc::new(moat_api::LiveClientVerifier::new(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        )));
        verifier
            .sync(&hub)
            .await
            .context("cannot load the client trust anchors")?;
        // One server certificate resolver for every TLS listener, swapped by
        // `follow_server_identity`; the listeners' configurations are built once.
        let credentials = Arc::new(moat_api::ServerCredentials::new(&identity));
        let tls = moat_api::hub_server_config(credentials.clone(), verifier.clone())
            .context("cannot build the TLS configuration")?;
        let tls = Arc::new(arc_swap::ArcSwap::from_pointee(tls));
        let download_tls = Arc::new(arc_swap::ArcSwap::from_pointee(
            moat_api::download_server_config(credentials.clone(), verifier.clone())
                .context("cannot build the firmware download TLS configuration")?,
        ));

        write_atomic(
            &data_dir.join("ca-bundle.pem"),
            hub.ca_bundle_pem().as_bytes(),
            0o644,
        )?;
        let shutdown = CancellationToken::new();
        // The MQTT hub.
        let mqtt_tls: crate::mqtt::TlsCell = Arc::new(arc_swap::ArcSwap::from_pointee(
            crate::mqtt::tls_config(credentials.clone(), verifier.clone())?,
        ));
        let authority = Arc::new(crate::mqtt::HubAuthority::new(
            hub.clone(),
            crate::mqtt::ConnectLimits {
                per_address_identity: cfg.mqtt.max_failed_connects,
                per_identity: cfg.mqtt.max_failed_connects_per_identity,
                window: cfg.mqtt.failed_connect_window,
                address_throttle_after: cfg.mqtt.address_throttle_after,
                address_throttle_delay: cfg.mqtt.address_throttle_delay,
            },
        ));
        // A cluster node restores the sessions of the clients it holds the claim of.
        let persistence = Arc::new(match &cluster {
            Some(c) => crate::mqtt::RegistryPersistence::of_node(store.clone(), c.name().into()),
            None => crate::mqtt::RegistryPersistence::new(store.clone()),
        });
        let broker = moat_broker::Broker::with_persistence(
            moat_broker::BrokerConfig {
                tls_handshake_timeout: cfg.mqtt.handshake_timeout,
                connect_timeout: cfg.mqtt.connect_timeout,
                max_packet_size: cfg.mqtt.max_packet_size as usize,
                max_connections: cfg.mqtt.max_connections,
                max_concurrent_handshakes: cfg.mqtt.max_concurrent_handshakes,
                receive_maximum: cfg.mqtt.receive_maximum,
                max_queued_messages: cfg.mqtt.max_queued_messages,
                max_queued_bytes: cfg.mqtt.max_queued_bytes,
                publisher_backpressure: cfg.mqtt.publisher_backpressure,
                durability: match cfg.mqtt.durability {
                    Durability::Sync => moat_broker::Durability::Sync,
                    Durability::Periodic => moat_broker::Durability::Periodic,
                },
                // Only the hub names a verified device (relayed messages).
                reserved_user_properties: vec![crate::mqtt::RESERVED_PREFIX.to_string()],
                ..moat_broker::BrokerConfig::default()
            },
            authority.clone(),
            persistence.clone(),
        );
        // What gateways relay is verified before it is routed.
        let relay = Arc::new(crate::mqtt::RelayIngest::new(hub.clone()));
        for filter in [moat_core::UPLINK_FILTER, moat_core::DOWNLINK_FILTER] {
            broker.intercept(filter, relay.clone()).map_err(|e| {
                crate::Error::Config(format!("cannot check relayed messages on {filter}: {e}"))
            })?;
        }
        // Retained messages and persistent sessions of the last run, before any client connects.
        broker
            .restore()
            .await
            .context("cannot restore the MQTT hub's state")?;
        // hub.json tells clients and tests that the hub is up: written once trust anchors,
        // revocations and MQTT state are loaded (connections before that waited in the backlog).
        let hub_file = HubFile {
            admin_url: format!("https://{}", local_url_host(api_addr)),
            crl_url: format!("http://{}", local_url_host(crl_addr)),
            mqtt_tls: local_url_host(mqtt_tls_listener.local_addr()?),
            mqtt_plain: match &mqtt_plain_listener {
                Some(l) => Some(local_url_host(l.local_addr()?)),
                None => None,
            },
            metrics_url: format!("http://{}", local_url_host(metrics_listener.local_addr()?)),
            ota_download: local_url_host(ota_addr),
            pid: std::process::id(),
        };
        write_atomic(
            &data_dir.join("hub.json"),
            &serde_json::to_vec_pretty(&hub_file).context("cannot encode hub.json")?,
            0o644,
        )?;

        // Joined to the other nodes before the first device connects here.
        let mut mqtt_tasks = match &cluster {
            Some(cluster) => {
                cluster
                    .start(
                        hub.clone(),
                        &broker,
                        persistence.clone(),
                        (hub_file.mqtt_tls.clone(), hub_file.admin_url.clone()),
                        shutdown.clone(),
                    )
                    .await?
            }
            None => Vec::new(),
        };
        mqtt_tasks.extend([
            tokio::spawn(broker.clone().serve_tls(
                mqtt_tls_listener,
                mqtt_tls.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(crate::mqtt::follow_events(
                hub.clone(),
                broker.clone(),
                verifier.clone(),
                shutdown.clone(),
            )),
        ]);
        if let Some(l) = mqtt_plain_listener {
            mqtt_tasks.push(tokio::spawn(
                broker.clone().serve_plain(l, shutdown.clone()),
            ));
        }
        // Firmware updates: manifests out through the broker, reports in through its tap.
        let ota = Arc::new(
            moat_ota::Ota::open(
                hub.clone(),
                ota_config(&cfg, &hostname, ota_addr),
                Arc::new(crate::mqtt::BrokerNotifier(broker.clone())),
            )
            .await
            .context("cannot start firmware updates")?,
        );
        mqtt_tasks.push(tokio::spawn(crate::mqtt::follow_reports(
            ota.clone(),
            broker.clone(),
            shutdown.clone(),
        )));
        mqtt_tasks.push(tokio::spawn(
            ota.clone()
                .follow_events(shutdown.clone().cancelled_owned()),
        ));
        if let Some(cluster) = &cluster {
            mqtt_tasks.push(tokio::spawn(step_campaigns(
                hub.clone(),
                ota.clone(),
                cluster.heartbeat_interval(),
                shutdown.clone(),
            )));
        }
        mqtt_tasks.push(tokio::spawn(refresh_ota_notices(
            hub.clone(),
            ota.clone(),
            cfg.ota.manifest_ttl,
            shutdown.clone(),
        )));
        let d =
            |x: std::time::Duration| time::Duration::try_from(x).context("duration out of range");
        let posture_counts = Arc::new(crate::posture::PostureCounts::default());
        let posture = Arc::new(crate::posture::HubPosture {
            counts: posture_counts.clone(),
            authority: authority.clone(),
            verifier: verifier.clone(),
            options: moat_core::PostureOptions {
                expiring_within: d(cfg.posture.expiring_within)?,
                clone_window: d(cfg.posture.clone_window)?,
                min_security_counter: cfg.posture.min_security_counter.clone(),
                never_seen_after: d(cfg.posture.never_seen_after)?,
                ..moat_core::PostureOptions::default()
            },
        });
        mqtt_tasks.push(tokio::spawn(crate::posture::follow(
            hub.clone(),
            posture.clone(),
            posture_counts.clone(),
            cfg.posture.interval,
            shutdown.clone(),
        )));
        // Firmware downloads: mutual TLS, the device admitted per request like at MQTT CONNECT.
        let downloads = tokio::spawn(moat_api::serve_tls(
            ota_listener,
            download_tls,
            moat_api::device_download_router(
                hub.clone(),
                Arc::new(moat_ota::Downloads::new(store.clone(), &data_dir)),
            ),
            ServeLimits {
                handshake_timeout: cfg.api.handshake_timeout,
                max_connections: cfg.api.max_connections,
                ..ServeLimits::default()
            },
            shutdown.clone(),
        ));
        mqtt_tasks.push(tokio::spawn(retire_superseded(
            hub.clone(),
            (cfg.enrollment.rotation_overlap / 4).clamp(SECOND, MINUTE),
            shutdown.clone(),
        )));
        let state = AppState {
            hub: hub.clone(),
            auth: Arc::new(AdminAuth::new(token_hash)),
            sessions: Some(Arc::new(crate::mqtt::BrokerSessions(broker.clone()))),
            est: Arc::default(),
            ota: Some(ota),
            posture: Some(posture),
        };
        let limits = ServeLimits {
            handshake_timeout: cfg.api.handshake_timeout,
            max_connections: cfg.api.max_connections,
            ..ServeLimits::default()
        };
        let server_cert = tokio::spawn(follow_server_identity(
            hub.clone(),
            names,
            identity.serial()?,
            credentials,
            cfg.server.renew_check_interval,
            shutdown.clone(),
        ));
        let api = tokio::spawn(moat_api::serve_tls(
            api_listener,
            tls,
            moat_api::admin_router(state),
            limits,
            shutdown.clone(),
        ));
        let crl = tokio::spawn(moat_api::serve_plain(
            crl_listener,
            moat_api::public_router(hub.clone()),
            shutdown.clone(),
        ));
        let event_counts = Arc::new(crate::metrics::EventCounts::default());
        mqtt_tasks.push(tokio::spawn(crate::metrics::count_events(
            hub.clone(),
            event_counts.clone(),
            shutdown.clone(),
        )));
        let campaigns = Arc::new(crate::metrics::CampaignProgress::default());
        mqtt_tasks.push(tokio::spawn(crate::metrics::follow_campaigns(
            hub.clone(),
            campaigns.clone(),
            cfg.metrics.campaign_refresh,
            shutdown.clone(),
        )));
        let registry = Arc::new(crate::metrics::registry(crate::metrics::Sources {
            hub: hub.clone(),
            broker: broker.clone(),
            authority: authority.clone(),
            relay,
            verifier: verifier.clone(),
            events: event_counts,
            posture: posture_counts,
            campaigns,
            cluster: cluster.clone(),
        }));
        let metrics = tokio::spawn(moat_api::serve_plain(
            metrics_listener,
            crate::metrics::router(registry, hub.clone(), cluster.clone()),
            shutdown.clone(),
        ));
        let refresh = tokio::spawn(refresh_crls(
            hub.clone(),
            cfg.crl.refresh_interval,
            shutdown.clone(),
        ));
        let mut tasks = vec![
            detach(api),
            detach(downloads),
            detach(refresh),
            detach(metrics),
            detach(server_cert),
            tokio::spawn(async move {
                if let Ok(Err(e)) = crl.await {
                    tracing::warn!(error = %e, "CRL endpoint ended with an error");
                }
            }),
        ];
        tasks.extend(mqtt_tasks.into_iter().map(detach));
        Ok(Node {
            hub,
            broker,
            endpoints: hub_file,
            data_dir,
            shutdown,
            tasks,
            cluster,
        })
    }
}

/// This node's name in its cluster: `[cluster] node`, or the host name.
fn cluster_node_name(cfg: &Config, hostname: &str) -> String {
    cfg.cluster
        .node
        .clone()
        .unwrap_or_else(|| hostname.to_string())
}

fn local_url_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn core_config(
    cfg: &Config,
    hostname: &str,
    crl_addr: SocketAddr,
    mqtt_addr: SocketAddr,
) -> crate::Result<CoreConfig> {
    let d = |x: std::time::Duration| time::Duration::try_from(x).context("duration out of range");
    let crl_base = cfg.crl.public_url.clone().unwrap_or_else(|| {
        let host = if crl_addr.ip().is_unspecified() {
            if hostname.is_empty() {
                "localhost".to_string()
            } else {
                hostname.to_string()
            }
        } else {
            crl_addr.ip().to_string()
        };
        format!("http://{host}:{}", crl_addr.port())
    });
    Ok(CoreConfig {
        organization: cfg.ca.organization.clone(),
        root_common_name: cfg.ca.root_common_name.clone(),
        root_validity: d(cfg.ca.root_validity)?,
        device_ca_common_name: cfg.ca.device_ca_common_name.clone(),
        device_ca_validity: d(cfg.ca.device_ca_validity)?,
        device_cert_validity: d(cfg.ca.device_cert_validity)?,
        server_cert_validity: d(cfg.server.validity)?,
        crl_base_url: Some(crl_base),
        crl_validity: d(cfg.crl.validity)?,
        registration_code_ttl: d(cfg.ca.registration_code_ttl)?,
        ca_names: Default::default(),
        provisioning_hubs: provisioning_hubs(cfg, hostname, mqtt_addr)?,
        rotation_overlap: d(cfg.enrollment.rotation_overlap)?,
        admission_view: moat_core::ADMISSION_VIEW_CAPACITY,
        server_identity_scope: cfg
            .cluster
            .enabled()
            .then(|| cluster_node_name(cfg, hostname)),
    })
}

/// `[provisioning] hubs`, checked; by default this hub's own mutual-TLS MQTT listener
/// (`addr`, as bound).
fn provisioning_hubs(cfg: &Config, hostname: &str, addr: SocketAddr) -> crate::Result<Vec<String>> {
    if cfg.provisioning.hubs.is_empty() {
        let url = if !addr.ip().is_unspecified() {
            format!("mqtts://{addr}")
        } else if hostname.is_empty() {
            format!("mqtts://localhost:{}", addr.port())
        } else {
            format!("mqtts://{hostname}:{}", addr.port())
        };
        let url = moat_core::HubEndpoint::parse(&url)
            .context("[mqtt] tls_listen does not make a provisioning endpoint")?;
        return Ok(vec![url.url]);
    }
    cfg.provisioning
        .hubs
        .iter()
        .map(|h| {
            moat_core::HubEndpoint::parse(h)
                .map(|e| e.url)
                .with_context(|| "[provisioning] hubs")
        })
        .collect()
}

/// The OTA service's configuration. Manifests name `ota.download_url`, by default the
/// download listener's own address (`https://HOST:PORT`, HOST the host name when it
/// listens on every address).
fn ota_config(cfg: &Config, hostname: &str, listen: SocketAddr) -> moat_ota::OtaConfig {
    let host = match listen.ip() {
        std::net::IpAddr::V6(ip) if !ip.is_unspecified() => format!("[{ip}]"),
        ip if !ip.is_unspecified() => ip.to_string(),
        _ if hostname.is_empty() => "localhost".to_string(),
        _ => hostname.to_string(),
    };
    moat_ota::OtaConfig {
        data_dir: cfg.data_dir.clone(),
        download_url: cfg
            .ota
            .download_url
            .clone()
            .unwrap_or_else(|| format!("https://{host}:{}", listen.port())),
        manifest_ttl: cfg.ota.manifest_ttl,
        max_image_size: cfg.ota.max_image_size,
    }
}

fn master_key_source(cfg: &Config) -> crate::Result<MasterKeySource> {
    Ok(match cfg.vault.source.as_str() {
        "file" => {
            let p = &cfg.vault.key_file;
            MasterKeySource::File(if p.is_absolute() {
                p.clone()
            } else {
                cfg.data_dir.join(p)
            })
        }
        "passphrase" => {
            let var = &cfg.vault.passphrase_env;
            let pass = match std::env::var(var) {
                Ok(p) if !p.is_empty() => p,
                _ if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
                    rpassword::prompt_password("Moat master passphrase: ")
                        .context("cannot read the passphrase")?
                }
                _ => {
                    return Err(Error::Config(format!(
                        "vault.source is \"passphrase\": set {var} or run in a terminal to be prompted"
                    )));
                }
            };
            MasterKeySource::Passphrase(Secret::new(pass))
        }
        "pkcs11" => {
            let p = &cfg.vault.pkcs11;
            let pin = match std::env::var(&p.pin_env) {
                Ok(pin) => pin,
                Err(e) => {
                    return Err(Error::Config(format!(
                        "vault.source is \"pkcs11\": set {} to the token's user PIN ({e})",
                        p.pin_env
                    )));
                }
            };
            MasterKeySource::Pkcs11(Pkcs11Config {
                module: p.module.clone(),
                token_label: p.token_label.clone(),
                pin: Secret::new(pin),
            })
        }
        other => {
            return Err(Error::Config(format!(
                "vault.source = {other:?}: use file, passphrase or pkcs11"
            )));
        }
    })
}

/// The admin token: made on the first start, written once to `admin.token` (0600), only
/// its hash kept in the registry. Written before the hash is stored, so a crash between the
/// two makes a fresh token on the next start instead of a hash nobody holds the token of.
async fn admin_token(hub: &Hub, data_dir: &Path) -> crate::Result<String> {
    if let Some(hash) = hub.setting(ADMIN_TOKEN_HASH).await? {
        return Ok(hash);
    }
    let token = moat_core::new_token("moat_adm_");
    let path = data_dir.join("admin.token");
    write_atomic(&path, format!("{}\n", token.expose()).as_bytes(), 0o600)?;
    let hash = moat_core::hash_token(token.expose());
    hub.put_setting(ADMIN_TOKEN_HASH, &hash).await?;
    tracing::info!(path = %path.display(), "admin token written (the hub keeps only its hash)");
    Ok(hash)
}

/// Renews OTA notices of devices that have not started before their manifests expire
/// (checked every quarter of a manifest's lifetime, at most hourly).
async fn refresh_ota_notices(
    hub: Arc<Hub>,
    ota: Arc<moat_ota::Ota>,
    ttl: std::time::Duration,
    shutdown: CancellationToken,
) {
    let every = (ttl / 4).clamp(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(3600),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => if hub.is_leader() && let Err(e) = ota.refresh_notices().await {
                tracing::error!(error = ?e, "renewing OTA notices failed");
            },
        }
    }
}

/// On a cluster, campaigns advance on the leader only (reports recorded on other nodes do
/// not step them): it checks every running campaign every `every`.
async fn step_campaigns(
    hub: Arc<Hub>,
    ota: Arc<moat_ota::Ota>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => if hub.is_leader() && let Err(e) = ota.evaluate_running().await {
                tracing::error!(error = ?e, "stepping campaigns failed");
            },
        }
    }
}

async fn refresh_crls(hub: Arc<Hub>, every: std::time::Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => if hub.is_leader() && let Err(e) = hub.refresh_crls().await {
                tracing::error!(error = ?e, "CRL refresh failed");
            },
        }
    }
}

const SECOND: std::time::Duration = std::time::Duration::from_secs(1);
const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

/// Retires superseded certificates whose overlap has ended (revoked, reason superseded), every
/// `every` (a quarter of the overlap, between 1 s and 1 min).
async fn retire_superseded(hub: Arc<Hub>, every: std::time::Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // On a cluster, the leader sweeps.
        if !hub.is_leader() {
            continue;
        }
        match hub.retire_superseded_certs().await {
            Ok(r) if !r.is_empty() => {
                tracing::info!(certificates = r.len(), "retired superseded certificates")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = ?e, "retiring superseded certificates failed"),
        }
    }
}

/// Keeps the listeners on the hub's current server certificate: after `moat server rotate`
/// (event), and on a timer that renews it when a third of its validity is left (or picks up
/// a rotation made by another node). New connections get the new certificate; established
/// ones are untouched.
async fn follow_server_identity(
    hub: Arc<Hub>,
    names: Vec<String>,
    mut serving: String,
    credentials: Arc<moat_api::ServerCredentials>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut events = hub.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        let mut rotated = None;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv() => match ev.map(|e| e.event) {
                Ok(moat_core::Event::ServerCertRotated { serial }) => rotated = Some(serial),
                Err(moat_core::BusError::Lagged(_)) => {}
                Ok(_) => continue,
                Err(moat_core::BusError::Closed) => return,
            },
            _ = tick.tick() => {}
        }
        let swapped = async {
            let mut identity = hub.server_identity(&names).await?;
            // `moat server rotate` through another node of a cluster rotated that node's
            // certificate (each node has its own): this node replaces its own as well.
            if let Some(theirs) = &rotated
                && *theirs != identity.serial()?
                && hub.config().server_identity_scope.is_some()
            {
                identity = hub.renew_server_identity(&names).await?;
            }
            let serial = identity.serial()?;
            if serial == serving {
                return Ok::<_, Error>(None);
            }
            credentials.set(&identity);
            Ok(Some(serial))
        }
        .await;
        match swapped {
            Ok(Some(serial)) => {
                tracing::info!(old = %serving, new = %serial, "listeners now serve the new hub server certificate");
                serving = serial;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = ?e, "cannot load the hub server certificate; keeping the current one")
            }
        }
    }
}

/// A task's handle whose output is not needed, as a `JoinHandle<()>` to await at shutdown.
fn detach<T: Send + 'static>(task: tokio::task::JoinHandle<T>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = task.await;
    })
}

/// A listening socket with room for `backlog` connections the hub has not accepted yet (the
/// kernel caps it at `net.core.somaxconn`): in a reconnect storm, and while the hub starts,
/// devices wait there instead of being reset.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
