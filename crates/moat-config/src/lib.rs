//! The hub's configuration: one serde tree, `deny_unknown_fields`, real durations, a safe
//! default for every key. `moat config default` prints [`DEFAULT_TOML`].
//!
//! ```text
//!   file ──read──▶ text ──[`Config::from_toml_str`]: merged over DEFAULT_TOML, typed, validated──▶ Config
//! ```
//!
//! Its own crate, below `moat-node` (which re-exports it as `moat_node::config`), so that the
//! fuzz target reaches the parser without building the hub. Not here: what a node does with
//! the values (`moat-node`).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented default configuration. Every key is optional.
pub const DEFAULT_TOML: &str = r#"# Moat hub configuration. Every key is optional; the values shown are the defaults.
# Use with `moat serve --config moat.toml` (or put it at DATA_DIR/moat.toml).

# Where the hub keeps its registry, keys (sealed) and admin token.
data_dir = "./moat-data"
# Registry: SQLite in the data dir by default; "postgres://user:pass@host/db" for several hubs.
# database = "sqlite://./moat-data/moat.db"

[api]
# HTTPS admin API (REST + OpenAPI at /api/openapi.json).
listen = "0.0.0.0:8443"
handshake_timeout = "10s"
max_connections = 1024

[mqtt]
# Device-facing MQTT hub. TLS: mutual TLS (the only mode for deny_insecure devices) and
# server TLS + device token; plain TCP + token only for devices whose policy allows it.
tls_listen = "0.0.0.0:8883"
plain_enabled = true
plain_listen = "0.0.0.0:1883"
handshake_timeout = "10s"
connect_timeout = "10s"
# TLS handshakes past their ClientHello at once; more wait for a slot in arrival order (a
# reconnect storm is paced instead of timing out). The ClientHello is read without a slot.
max_concurrent_handshakes = 1024
# Connections the kernel holds for the hub before it accepts them (capped by
# net.core.somaxconn): devices reconnecting all at once, or while the hub starts, wait there.
listen_backlog = 8192
max_packet_size = 262144
max_connections = 100000
# Unacknowledged QoS 1/2 messages in flight per client, both ways (v5 Receive Maximum).
receive_maximum = 32
# Messages queued per session beyond the in-flight window, and their bytes (topic plus
# payload; at least max_packet_size). When either is reached, a new message evicts the
# oldest queued QoS 0 messages if that makes room, or is not queued for that session (and
# counted); a v5 publisher of a QoS 1/2 message then gets PUBACK/PUBREC 0x97 Quota exceeded.
# Together with receive_maximum this bounds each session's memory.
max_queued_messages = 1000
max_queued_bytes = 16777216
# How long a publisher's reads may pause while a subscriber it sends to is over half its
# queue; a subscriber that does not catch up in time is treated as stalled and no longer
# slows anyone. "0s" turns the pause off.
publisher_backpressure = "250ms"
# When an acknowledged message is on disk. "sync": a PUBACK/PUBREC for a message queued for a
# persistent session (or retained), a SUBACK, a PUBCOMP is sent only once the change is
# written and fsync'd (group-committed across connections): nothing acknowledged is lost in
# a crash or power cut. "periodic": written every 250 ms without holding acknowledgements
# back; a crash loses up to that much.
durability = "sync"
# Failed token CONNECTs (server TLS or plain) allowed per (source address, claimed identity)
# within the window; past it that identity is refused from that address (v5 0x8A Banned,
# v3.1.1 5) until the window ends. Devices behind the same address are not affected.
max_failed_connects = 20
# The same, per claimed identity from all addresses together (a distributed guess).
max_failed_connects_per_identity = 100
failed_connect_window = "1m"
# Past this many failed CONNECTs from one address within the window, token CONNECTs from it
# are slowed down by `address_throttle_delay` each, never refused: thousands of devices may
# share one address (carrier-grade NAT, a site router). Mutual TLS devices are never slowed
# or refused for other clients' failures.
address_throttle_after = 500
address_throttle_delay = "1s"

[crl]
# Plain HTTP endpoint for CRLs (/crl/{ca}.crl) and the CA bundle (/ca/bundle.pem).
listen = "0.0.0.0:8080"
# Base URL written into every certificate's CRL distribution point. It must stay stable:
# certificates carry it for their whole life. Default: http://HOSTNAME:PORT of `listen`.
# public_url = "http://hub.example.com:8080"
# nextUpdate of published CRLs; they are republished when half of this is left.
validity = "7d"
refresh_interval = "1h"

[metrics]
# Prometheus metrics (/metrics), liveness (/healthz) and readiness (/readyz: the registry
# answers). Loopback by default: the figures describe the fleet; expose them deliberately.
listen = "127.0.0.1:9464"
# How often moat_campaign_devices (devices of running and paused campaigns, by state) is
# read from the registry.
campaign_refresh = "10s"

[posture]
# The security posture audit (moat audit posture, GET /api/v1/posture, and the
# moat_posture_findings metric, refreshed every `interval`).
interval = "5m"
# Certificates and CAs expiring within this are findings.
expiring_within = "30d"
# "One identity connected from two places" events of this recent past are findings.
clone_window = "30d"
# Lowest acceptable firmware security counter per model, e.g. { "Sensor v2" = 3 }.
min_security_counter = {}
# Devices enrolled longer ago than this that never connected are findings.
never_seen_after = "7d"

[ca]
organization = "Moat"
root_common_name = "Moat Root CA"
root_validity = "3650d"
device_ca_common_name = "Moat Device CA"
device_ca_validity = "1825d"
device_cert_validity = "365d"
# How long a CA registration code (`moat ca registration-code`) stays usable.
registration_code_ttl = "1h"

[enrollment]
# After a device certificate is renewed (EST simplereenroll) or rotated (`moat device
# rotate`), the old one keeps working this long, then it is revoked (CRL reason superseded).
rotation_overlap = "24h"

[server]
# The hub's TLS certificate always names localhost, 127.0.0.1 and the host name; add more.
names = []
validity = "90d"
# How often the hub checks its server certificate: renewed (new key) when less than a third
# of its validity is left, and picked up after `moat server rotate` on another node. The
# listeners switch without a restart; established connections stay up.
renew_check_interval = "1h"

[ota]
# Firmware updates. Devices download images here: HTTPS with mutual TLS (a device
# certificate is required at the handshake; revocations apply at once), GET /fw/{sha256}
# with Range. The connection limits and handshake timeout are [api]'s.
listen = "0.0.0.0:8444"
# Base URL devices download images from; signed manifests carry {download_url}/fw/{sha256}.
# Default: https://HOST:PORT of `listen` (HOST = the host name when listening on 0.0.0.0).
# download_url = "https://hub.example.com:8444"
# How long a signed manifest is valid: a device refuses an older one (replay, freeze).
manifest_ttl = "7d"
# Largest image `moat fw upload` and `moat fw sign` accept, in bytes.
max_image_size = 33554432

[provisioning]
# MQTT endpoints field provisioning (POST /provisioning/v1/register) assigns devices to, as
# mqtts://HOST:PORT. Enrollment groups with a fixed allocation use their own hub or the first
# of these; hashed allocations spread devices over all of them (stable while the list is).
# Default: this hub, mqtts://HOSTNAME:PORT of [mqtt] tls_listen.
hubs = []

[vault]
# Where the master key that seals every private key comes from:
#   "file"       a 32-byte key file (created 0600 on first start)
#   "passphrase" argon2id from the environment variable below, or a prompt
#   "pkcs11"     CA keys generated and used inside a PKCS#11 token
source = "file"
key_file = "master.key"          # relative to data_dir
passphrase_env = "MOAT_MASTER_PASSPHRASE"

[vault.pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "moat"
pin_env = "MOAT_PKCS11_PIN"

[cluster]
# Several hub nodes serving one fleet behind a TCP load balancer (README: "Running several
# nodes"). Empty `nats`: this node is the whole hub. With NATS servers listed, `database`
# must be PostgreSQL, shared by every node, and every node must open the same vault (the
# same master key file or passphrase, or the same PKCS#11 token).
nats = []                        # e.g. ["nats://10.0.0.5:4222", "nats://10.0.0.6:4222"]
# This node's name, unique in the cluster. Default: the host name.
# node = "hub-1"
# Subject prefix of the cluster's NATS traffic (several clusters can share NATS servers).
subject_prefix = "moat"
# NATS credentials file (.creds: JWT and NKey) and CA certificate (PEM) for TLS to NATS.
# nats_credentials = "/etc/moat/nats.creds"
# nats_tls_ca = "/etc/moat/nats-ca.pem"
# Changes made on other nodes arrive on NATS at once; each node also reads the cluster's
# event log in PostgreSQL this often, so a change NATS lost is applied at most this late.
catch_up_interval = "1s"
# How long the event log keeps an event (a node away longer resynchronises in full).
event_retention = "7d"
# How often a node records its status (`moat cluster status`); a node silent for three
# intervals is shown as down.
heartbeat_interval = "5s"
# CONNECT admission reads devices and certificates from memory, kept current by the
# cluster's events (false: from PostgreSQL at every CONNECT).
admission_view = true

[log]
# "text" or "json" (one object per line; the ids of the request or MQTT connection a line
# belongs to, request_id or conn_id, and the peer are top-level keys). RUST_LOG, when set,
# replaces `level`.
format = "text"
level = "info"
"#;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Registry URL; default SQLite in the data dir.
    #[serde(default)]
    pub database: Option<String>,
    /// Admin API.
    pub api: ApiConfig,
    /// MQTT hub.
    pub mqtt: MqttConfig,
    /// CRL endpoint.
    pub crl: CrlConfig,
    /// Metrics and health.
    pub metrics: MetricsConfig,
    /// Security posture audit.
    pub posture: PostureConfig,
    /// CA names and validities.
    pub ca: CaConfig,
    /// Hub server certificate.
    pub server: ServerConfig,
    /// Enrollment and rotation.
    pub enrollment: EnrollmentConfig,
    /// Firmware updates.
    pub ota: OtaSection,
    /// Field provisioning.
    pub provisioning: ProvisioningSection,
    /// Master key.
    pub vault: VaultConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// Logging.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str(DEFAULT_TOML)
            .unwrap_or_else(|e| unreachable!("default config is valid: {e}"))
    }
}

/// `[api]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS handshake timeout.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Connection cap.
    pub max_connections: usize,
}

/// `[mqtt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// TLS listener (mutual TLS and server TLS).
    pub tls_listen: SocketAddr,
    /// Whether the plain TCP listener runs.
    pub plain_enabled: bool,
    /// Plain TCP listener.
    pub plain_listen: SocketAddr,
    /// TLS handshake timeout.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time from accept to CONNECT.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Largest MQTT packet accepted, in bytes.
    pub max_packet_size: u32,
    /// TLS handshakes past their ClientHello at once.
    pub max_concurrent_handshakes: usize,
    /// Listen backlog of the MQTT listeners.
    pub listen_backlog: u32,
    /// Connection cap (both listeners).
    pub max_connections: usize,
    /// In-flight window per client.
    pub receive_maximum: u16,
    /// Queue per session beyond the window.
    pub max_queued_messages: usize,
    /// Bytes (topic and payload) of that queue.
    pub max_queued_bytes: usize,
    /// Longest pause of a publisher for a congested subscriber.
    #[serde(with = "humantime_serde")]
    pub publisher_backpressure: Duration,
    /// When acknowledged state is durable: `sync` or `periodic`.
    pub durability: Durability,
    /// Failed token CONNECTs per (address, identity) per window.
    pub max_failed_connects: u32,
    /// Failed token CONNECTs per identity (all addresses) per window.
    pub max_failed_connects_per_identity: u32,
    /// Window of the failure limits.
    #[serde(with = "humantime_serde")]
    pub failed_connect_window: Duration,
    /// Failed CONNECTs from one address per window past which its token CONNECTs are slowed.
    pub address_throttle_after: u32,
    /// The delay a throttled token CONNECT waits before it is decided.
    #[serde(with = "humantime_serde")]
    pub address_throttle_delay: Duration,
}

/// `[mqtt] durability` (see `moat_broker::persistence`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Acknowledged means fsync'd.
    Sync,
    /// Written every housekeeping interval.
    Periodic,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Period of the campaign progress refresh (a registry query per active campaign).
    #[serde(with = "humantime_serde")]
    pub campaign_refresh: Duration,
}

/// `[posture]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostureConfig {
    /// How often the metrics' audit runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Expiry window.
    #[serde(with = "humantime_serde")]
    pub expiring_within: Duration,
    /// Possible-clone window.
    #[serde(with = "humantime_serde")]
    pub clone_window: Duration,
    /// Minimum firmware security counter per model.
    pub min_security_counter: std::collections::BTreeMap<String, u32>,
    /// Never-connected window.
    #[serde(with = "humantime_serde")]
    pub never_seen_after: Duration,
}

/// `[crl]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Base URL in certificates.
    #[serde(default)]
    pub public_url: Option<String>,
    /// CRL validity.
    #[serde(with = "humantime_serde")]
    pub validity: Duration,
    /// How often CRL freshness is checked.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

/// `[ca]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Subject O.
    pub organization: String,
    /// Root CN.
    pub root_common_name: String,
    /// Root validity.
    #[serde(with = "humantime_serde")]
    pub root_validity: Duration,
    /// Device CA CN.
    pub device_ca_common_name: String,
    /// Device CA validity.
    #[serde(with = "humantime_serde")]
    pub device_ca_validity: Duration,
    /// Device certificate validity.
    #[serde(with = "humantime_serde")]
    pub device_cert_validity: Duration,
    /// Registration code lifetime.
    #[serde(with = "humantime_serde")]
    pub registration_code_ttl: Duration,
}

/// `[enrollment]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// How long a superseded device certificate keeps working.
    #[serde(with = "humantime_serde")]
    pub rotation_overlap: Duration,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Extra SANs.
    pub names: Vec<String>,
    /// Validity.
    #[serde(with = "humantime_serde")]
    pub validity: Duration,
    /// Period of the renewal check.
    #[serde(with = "humantime_serde")]
    pub renew_check_interval: Duration,
}

/// `[ota]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtaSection {
    /// The firmware download listener (mutual TLS).
    pub listen: SocketAddr,
    /// Base URL of image downloads; default `https://HOST:PORT` of `listen`.
    #[serde(default)]
    pub download_url: Option<String>,
    /// Manifest validity.
    #[serde(with = "humantime_serde")]
    pub manifest_ttl: Duration,
    /// Largest image accepted, in bytes.
    pub max_image_size: u64,
}

/// `[provisioning]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningSection {
    /// Hub endpoints devices are assigned to; empty: this hub.
    pub hubs: Vec<String>,
}

/// `[vault]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `file`, `passphrase` or `pkcs11`.
    pub source: String,
    /// Key file, relative to the data dir.
    pub key_file: PathBuf,
    /// Environment variable holding the passphrase.
    pub passphrase_env: String,
    /// PKCS#11 token.
    pub pkcs11: Pkcs11Config,
}

/// `[vault.pkcs11]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Module path.
    pub module: PathBuf,
    /// Token label.
    pub token_label: String,
    /// Environment variable holding the user PIN.
    pub pin_env: String,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs; empty: no cluster.
    pub nats: Vec<String>,
    /// This node's name (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    /// Prefix of every NATS subject the cluster uses.
    pub subject_prefix: String,
    /// NATS credentials file.
    #[serde(default)]
    pub nats_credentials: Option<PathBuf>,
    /// CA certificate for TLS to NATS.
    #[serde(default)]
    pub nats_tls_ca: Option<PathBuf>,
    /// How often the event log is read even when NATS delivers.
    #[serde(with = "humantime_serde")]
    pub catch_up_interval: Duration,
    /// How long an event stays in the log.
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
    /// How often the node records its status.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Whether CONNECT admission reads from the in-memory view.
    pub admission_view: bool,
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// Filter.
    pub level: String,
}

impl Config {
    /// The defaults, data in `data_dir`, every listener on 127.0.0.1 with a port the system
    /// picks (port 0): a node that can run beside others in one process (tests, embedding).
    /// Where it listens is in `moat_node::Node::endpoints`.
    pub fn loopback(data_dir: &Path) -> Config {
        let mut cfg = Config::default();
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        cfg.data_dir = data_dir.to_path_buf();
        cfg.api.listen = any;
        cfg.crl.listen = any;
        cfg.mqtt.tls_listen = any;
        cfg.mqtt.plain_listen = any;
        cfg.metrics.listen = any;
        cfg.ota.listen = any;
        cfg
    }

    /// Loads `path` (or the defaults when None), then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let Some(p) = path else {
            let cfg = Config::default();
            cfg.validate()?;
            return Ok(cfg);
        };
        let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
            what: format!("cannot read config file {}", p.display()),
            source,
        })?;
        Config::from_toml_str(&text, &p.display().to_string())
    }

    /// The configuration a file's `text` gives: merged over [`DEFAULT_TOML`] table by table
    /// (so partial files work), then validated. `origin` (the file's path) starts the error
    /// messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, Error> {
        let mut base: toml::Table = toml::from_str(DEFAULT_TOML).map_err(|source| Error::Toml {
            what: "the embedded default configuration is not valid TOML".to_string(),
            source,
        })?;
        let over: toml::Table = toml::from_str(text).map_err(|source| Error::Toml {
            what: format!("{origin} is not valid TOML"),
            source,
        })?;
        merge(&mut base, over);
        let cfg: Config = toml::Value::Table(base)
            .try_into()
            .map_err(|e: toml::de::Error| {
                Error::Config(format!(
                    "{origin}: {} (see `moat config default` for every key)",
                    e.message()
                ))
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), Error> {
        if !matches!(self.vault.source.as_str(), "file" | "passphrase" | "pkcs11") {
            return Err(Error::Config(format!(
                "vault.source = {:?}: use \"file\", \"passphrase\" or \"pkcs11\"",
                self.vault.source
            )));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(Error::Config(format!(
                "log.format = {:?}: use \"text\" or \"json\"",
                self.log.format
            )));
        }
        if self.crl.validity < Duration::from_secs(3600) {
            return Err(Error::Config(
                "crl.validity must be at least 1h".to_string(),
            ));
        }
        if self.ca.device_cert_validity > self.ca.device_ca_validity {
            return Err(Error::Config(
                "ca.device_cert_validity must not exceed ca.device_ca_validity".to_string(),
            ));
        }
        if self.mqtt.max_packet_size < 1024 {
            return Err(Error::Config(
                "mqtt.max_packet_size must be at least 1024 bytes".to_string(),
            ));
        }
        if self.mqtt.max_concurrent_handshakes == 0 {
            return Err(Error::Config(
                "mqtt.max_concurrent_handshakes must be at least 1".to_string(),
            ));
        }
        if self.mqtt.max_connections == 0 {
            return Err(Error::Config(
                "mqtt.max_connections must be at least 1".to_string(),
            ));
        }
        if self.mqtt.receive_maximum == 0 {
            return Err(Error::Config(
                "mqtt.receive_maximum must be at least 1 (MQTT 5 forbids 0)".to_string(),
            ));
        }
        if self.enrollment.rotation_overlap < Duration::from_secs(1) {
            return Err(Error::Config("enrollment.rotation_overlap must be at least 1s (a renewed device needs time to switch to its new certificate)".to_string()));
        }
        if self.metrics.campaign_refresh < Duration::from_secs(1) {
            return Err(Error::Config(
                "metrics.campaign_refresh must be at least 1s".to_string(),
            ));
        }
        if self.server.renew_check_interval < Duration::from_secs(1) {
            return Err(Error::Config(
                "server.renew_check_interval must be at least 1s".to_string(),
            ));
        }
        if self.mqtt.max_failed_connects == 0
            || self.mqtt.max_failed_connects_per_identity == 0
            || self.mqtt.address_throttle_after == 0
            || self.mqtt.failed_connect_window.is_zero()
        {
            return Err(Error::Config("mqtt.max_failed_connects, mqtt.max_failed_connects_per_identity, mqtt.address_throttle_after and mqtt.failed_connect_window must be above 0".to_string()));
        }
        if self.mqtt.address_throttle_delay >= self.mqtt.connect_timeout {
            return Err(Error::Config("mqtt.address_throttle_delay must be shorter than mqtt.connect_timeout (a throttled device must still get its answer)".to_string()));
        }
        if self.mqtt.max_queued_messages < 4 {
            return Err(Error::Config(
                "mqtt.max_queued_messages must be at least 4".to_string(),
            ));
        }
        if self.mqtt.max_queued_bytes < self.mqtt.max_packet_size as usize {
            return Err(Error::Config(format!(
                "mqtt.max_queued_bytes = {} is below mqtt.max_packet_size = {}: a session must be able to queue the largest message",
                self.mqtt.max_queued_bytes, self.mqtt.max_packet_size
            )));
        }
        if self.api.max_connections == 0 {
            return Err(Error::Config(
                "api.max_connections must be at least 1".to_string(),
            ));
        }
        if let Some(url) = &self.ota.download_url
            && !url.starts_with("https://")
        {
            return Err(Error::Config(format!(
                "ota.download_url = {url:?}: must be an https:// URL (devices download with mutual TLS)"
            )));
        }
        if self.ota.manifest_ttl < Duration::from_secs(60) {
            return Err(Error::Config(
                "ota.manifest_ttl must be at least 1m".to_string(),
            ));
        }
        if self.ota.max_image_size == 0 || self.ota.max_image_size > 64 * 1024 * 1024 {
            return Err(Error::Config(
                "ota.max_image_size must be between 1 byte and 64 MiB".to_string(),
            ));
        }
        if let Some(url) = &self.crl.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "crl.public_url = {url:?}: must be an http:// or https:// URL"
            )));
        }
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), Error> {
        let c = &self.cluster;
        for url in &c.nats {
            if !["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return Err(Error::Config(format!(
                    "cluster.nats: {url:?} is not a NATS URL (nats://HOST:PORT, or tls://HOST:PORT)"
                )));
            }
        }
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !token_ok(&c.subject_prefix) {
            return Err(Error::Config(format!(
                "cluster.subject_prefix = {:?}: use letters, digits, '-' and '_' only",
                c.subject_prefix
            )));
        }
        if let Some(node) = &c.node
            && !token_ok(node)
        {
            return Err(Error::Config(format!(
                "cluster.node = {node:?}: use letters, digits, '-' and '_' only (it names NATS subjects)"
            )));
        }
        for (key, v) in [
            ("catch_up_interval", c.catch_up_interval),
            ("heartbeat_interval", c.heartbeat_interval),
        ] {
            if v < Duration::from_millis(100) || v > Duration::from_secs(3600) {
                return Err(Error::Config(format!(
                    "cluster.{key} must be between 100ms and 1h"
                )));
            }
        }
        if c.event_retention < Duration::from_secs(3600) {
            return Err(Error::Config(
                "cluster.event_retention must be at least 1h".to_string(),
            ));
        }
        Ok(())
    }

    /// With `[cluster] nats` set, the registry must be one every node shares: PostgreSQL.
    /// Checked by the node at start, once `--database` is applied.
    pub fn check_cluster_registry(&self) -> Result<(), Error> {
        if !self.cluster.enabled() {
            return Ok(());
        }
        match self.database.as_deref() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(())
            }
            other => Err(Error::Config(format!(
                "[cluster] nats is set, but the registry is {}: every node of a cluster must \
                 share one PostgreSQL registry (SQLite is one process's file). Set database = \
                 \"postgres://…\" in the config or pass --database postgres://…, or remove \
                 [cluster] nats to run a single node",
                match other {
                    Some(url) => format!("{url:?}"),
                    None => "SQLite in the data dir (the default)".to_string(),
                }
            ))),
        }
    }
}

/// Why a configuration cannot be used: each variant's text names the file or the key, and
/// the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable; the text names the key and the fix.
    #[error("{0}")]
    Config(String),
    /// The configuration file cannot be read.
    #[error("{what}")]
    Read {
        /// Which file.
        what: String,
        /// The reading error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file (or the embedded default) is not valid TOML.
    #[error("{what}")]
    Toml {
        /// Which file.
        what: String,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses_and_validates() {
        let cfg = Config::default();
        cfg.validate().expect("default config validates");
        assert_eq!(cfg.api.listen.port(), 8443);
        assert_eq!(cfg.crl.listen.port(), 8080);
        assert_eq!(cfg.ota.listen.port(), 8444);
    }

    #[test]
    fn a_cluster_needs_nats_urls_and_a_shared_registry() {
        let cfg = Config::from_toml_str(
            "[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nnode = \"hub-1\"\n",
            "m.toml",
        )
        .expect("cluster config");
        assert!(cfg.cluster.enabled());
        let err = cfg.check_cluster_registry().expect_err("SQLite refused");
        let err = err.to_string();
        assert!(err.contains("SQLite in the data dir"), "{err}");
        assert!(err.contains("--database postgres://"), "{err}");
        let cfg = Config::from_toml_str(
            "database = \"postgres://u@h/db\"\n[cluster]\nnats = [\"nats://h:4222\"]\n",
            "m.toml",
        )
        .expect("cluster on PostgreSQL");
        cfg.check_cluster_registry().expect("PostgreSQL is shared");
        Config::default()
            .check_cluster_registry()
            .expect("no cluster, any registry");
        for (text, says) in [
            ("[cluster]\nnats = [\"http://h:4222\"]\n", "not a NATS URL"),
            ("[cluster]\nnode = \"a.b\"\n", "cluster.node"),
            (
                "[cluster]\nsubject_prefix = \"m>\"\n",
                "cluster.subject_prefix",
            ),
            (
                "[cluster]\ncatch_up_interval = \"1ms\"\n",
                "catch_up_interval",
            ),
        ] {
            let err = Config::from_toml_str(text, "m.toml")
                .expect_err(text)
                .to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "[api]\nlisten_on = \"1.2.3.4:1\"\n").expect("write");
        let err = Config::load(Some(&p))
            .expect_err("unknown key refused")
            .to_string();
        assert!(err.contains("listen_on"), "{err}");
    }

    #[test]
    fn text_errors_name_the_origin() {
        let err = Config::from_toml_str("[api", "m.toml")
            .expect_err("bad TOML")
            .to_string();
        assert_eq!(err, "m.toml is not valid TOML");
        let err = Config::from_toml_str("[mqtt]\nmax_connections = 0\n", "m.toml")
            .expect_err("invalid value")
            .to_string();
        assert_eq!(err, "mqtt.max_connections must be at least 1");
        let err = Config::from_toml_str("[api]\nlisten = 1\n", "m.toml")
            .expect_err("wrong type")
            .to_string();
        assert!(err.starts_with("m.toml: "), "{err}");
        assert!(
            err.ends_with(" (see `moat config default` for every key)"),
            "{err}"
        );
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "[api]\nlisten = \"127.0.0.1:9443\"\n").expect("write");
        let cfg = Config::load(Some(&p)).expect("loads");
        assert_eq!(cfg.api.listen.port(), 9443);
        assert_eq!(cfg.api.max_connections, 1024);
    }
}
