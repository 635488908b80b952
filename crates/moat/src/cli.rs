//! Command-line interface. Admin commands talk to the running hub's API, finding its URL,
//! token and CA through the data dir unless `--hub`/`--token-file`/`--ca-file` say otherwise.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Moat: a self-hosted IoT device security hub.
#[derive(Debug, Parser)]
#[command(name = "moat", version, about, propagate_version = true)]
pub struct Cli {
    /// Data directory of the hub [default: ./moat-data, or data_dir from the config file].
    #[arg(long, global = true, env = "MOAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin API URL (default: read from DATA_DIR/hub.json).
    #[arg(long, global = true, env = "MOAT_HUB")]
    pub hub: Option<String>,
    /// File holding the admin token, or an operator's (default: DATA_DIR/admin.token).
    #[arg(long, global = true, env = "MOAT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM bundle to trust for the hub's TLS certificate (default: DATA_DIR/ca-bundle.pem).
    #[arg(long, global = true, env = "MOAT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print API responses as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub.
    Serve(ServeArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Certificate authorities: the hub's bundle, third-party CA registration.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Devices.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Certificates.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Topic access policies (MQTT filter templates with {device.id} and {device.group}).
    #[command(subcommand)]
    Acl(AclCmd),
    /// Backend applications: identities with wider topic access.
    #[command(subcommand)]
    App(AppCmd),
    /// Gateways: relay the signed messages of devices without IP (LoRa, BLE, serial) under
    /// gateways/NAME/#; the hub verifies each one as the device's own.
    #[command(subcommand)]
    Gateway(GatewayCmd),
    /// Live MQTT sessions.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Several nodes serving one fleet (`[cluster]` in the config).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Firmware images (MCUboot format): keys, signing, the catalogue.
    #[command(subcommand)]
    Fw(FwCmd),
    /// Firmware rollout campaigns.
    #[command(subcommand)]
    Campaign(CampaignCmd),
    /// The hub's own TLS server certificate (admin API and MQTT listeners).
    #[command(subcommand)]
    Server(ServerCmd),
    /// The factory allow-list: serials that may enroll over EST, once each.
    #[command(subcommand)]
    Allowlist(AllowlistCmd),
    /// Factory stations: the credentials that enroll allow-listed serials over EST.
    #[command(subcommand)]
    Station(StationCmd),
    /// Operator accounts of the API, console and CLI, each with a role (admin only).
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// Enrollment groups: what field provisioning gives a device (hub, policy, group, ACL).
    #[command(subcommand, name = "enrollment-group")]
    EnrollmentGroup(EnrollmentGroupCmd),
    /// Print a CA's current CRL (PEM).
    Crl {
        /// The CA (default: the device CA).
        #[arg(long, default_value = "devices")]
        ca: String,
    },
    /// Print the audit log, newest first; `moat audit posture` runs the security posture audit.
    Audit {
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(subcommand)]
        what: Option<AuditCmd>,
    },
}

/// `moat serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration (default: DATA_DIR/moat.toml if present, else built-in defaults).
    #[arg(long, env = "MOAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Registry URL (sqlite://PATH or postgres://…); overrides the config.
    #[arg(long, env = "MOAT_DATABASE")]
    pub database: Option<String>,
    /// Admin API listen address; overrides the config.
    #[arg(long)]
    pub api_listen: Option<std::net::SocketAddr>,
    /// CRL endpoint listen address; overrides the config.
    #[arg(long)]
    pub crl_listen: Option<std::net::SocketAddr>,
    /// MQTT TLS listen address (mutual TLS and server TLS); overrides the config.
    #[arg(long)]
    pub mqtt_listen: Option<std::net::SocketAddr>,
    /// MQTT plain TCP listen address; overrides the config.
    #[arg(long)]
    pub mqtt_plain_listen: Option<std::net::SocketAddr>,
    /// Firmware download listen address (mutual TLS); overrides the config.
    #[arg(long)]
    pub ota_listen: Option<std::net::SocketAddr>,
    /// Do not listen for plain TCP MQTT.
    #[arg(long)]
    pub no_mqtt_plain: bool,
    /// Metrics and health listen address (/metrics, /healthz, /readyz); overrides the config.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Master key source (file, passphrase, pkcs11); overrides the config.
    #[arg(long)]
    pub vault: Option<String>,
}

/// `moat config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the commented default configuration.
    Default,
}

/// `moat ca …`.
#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Print the PEM bundle devices install to trust the hub.
    Bundle,
    /// Print a one-time code for registering a CA (put it in a verification certificate's CN).
    RegistrationCode,
    /// Register a third-party CA after proof of possession of its key.
    Register {
        /// The CA certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// A certificate with CN = registration code, signed by the CA's key (PEM).
        #[arg(long)]
        verification_cert: PathBuf,
        /// Where device identities are read from: cn, san-dns or san-uri.
        #[arg(long, default_value = "cn", value_parser = ["cn", "san-dns", "san-uri"])]
        identity: String,
        /// Create devices on first sight of a valid certificate from this CA.
        #[arg(long)]
        auto_register: bool,
        /// Registry name (default: ca- + fingerprint prefix).
        #[arg(long)]
        name: Option<String>,
    },
    /// List CAs.
    List,
    /// Remove a registered CA.
    Remove {
        /// Its name.
        name: String,
    },
}

/// `moat device …`.
#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Create a device: hub-generated key (--out), CSR (--csr) or a registered CA's certificate (--cert).
    Create {
        /// Device id.
        id: String,
        /// Directory to write ID.crt, ID.key (hub-generated key) and ID.token into.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Issue on this CSR (PEM or DER); the key never leaves the device.
        #[arg(long, conflicts_with = "cert")]
        csr: Option<PathBuf>,
        /// Bind this certificate (PEM) from a registered CA.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Allow server-TLS and plain connections with a device token (printed once).
        #[arg(long)]
        allow_insecure: bool,
        /// Put the device in this group ({device.group} in policies; the group's policy).
        #[arg(long)]
        group: Option<String>,
    },
    /// Move a device to a group ("" removes it from its group); its sessions reconnect.
    SetGroup {
        /// Device id.
        id: String,
        /// Group name.
        group: String,
    },
    /// Set the model `--target model:M` campaigns know a device by, before it reports one
    /// (what the device reports wins; EST-enrolled devices have the allow-list's).
    SetModel {
        /// Device id.
        id: String,
        /// Model name (as `moat fw upload --model`).
        model: String,
    },
    /// List devices.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this id.
        #[arg(long)]
        after: Option<String>,
        /// Only devices this organisation owns.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show a device and its certificates.
    Show {
        /// Device id.
        id: String,
    },
    /// Refuse a device's connections until enabled.
    Disable {
        /// Device id.
        id: String,
    },
    /// Enable a disabled device.
    Enable {
        /// Device id.
        id: String,
    },
    /// Delete a device (its certificates are revoked).
    Delete {
        /// Device id.
        id: String,
    },
    /// Revoke a device and all its certificates.
    Revoke {
        /// Device id.
        id: String,
        /// RFC 5280 reason (unspecified, key_compromise, superseded, cessation_of_operation, …).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Claim an unowned device for an organisation (refused if another owner holds it).
    Claim {
        /// Device id.
        id: String,
        /// The owning organisation.
        #[arg(long)]
        owner: String,
    },
    /// Transfer a device to another owner.
    Transfer {
        /// Device id.
        id: String,
        /// The new owner.
        #[arg(long)]
        to: String,
        /// Only if this is the current owner.
        #[arg(long)]
        from: Option<String>,
    },
    /// Suspend a device (e.g. reported stolen): connections refused, sessions closed,
    /// certificates kept. Same state as `disable`, with a reason.
    Suspend {
        /// Device id.
        id: String,
        /// Why (recorded on the device and in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Resume a suspended device.
    Resume {
        /// Device id.
        id: String,
        /// Why (audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Decommission a device for good: every certificate revoked, its factory serial can
    /// never enroll again, every connection refused.
    Decommission {
        /// Device id.
        id: String,
        /// Why (recorded on the device and in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Issue a fresh certificate and key for a hub-keyed device; the previous certificates
    /// retire after the rotation overlap ([enrollment] rotation_overlap).
    Rotate {
        /// Device id.
        id: String,
        /// Directory to write ID.crt and ID.key into (the hub does not keep the key).
        #[arg(long)]
        out: PathBuf,
    },
    /// List a device's live certificates (unrevoked, unexpired; retiring ones with their
    /// retire time).
    Certs {
        /// Device id.
        id: String,
    },
}

/// `moat cert …`.
#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// List certificates, newest first.
    List {
        /// Only this device's.
        #[arg(long, conflicts_with = "expiring_within")]
        device: Option<String>,
        /// Only live device certificates that expire within this many days (soonest first):
        /// the ones to renew.
        #[arg(long, value_name = "DAYS")]
        expiring_within: Option<u32>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one certificate.
    Show {
        /// Serial (hex).
        serial: String,
    },
    /// Revoke one certificate.
    Revoke {
        /// Serial (hex).
        serial: String,
        /// RFC 5280 reason.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Would the hub accept this certificate? Names the failing validation step if not.
    Explain {
        /// Certificate (PEM, optionally with its chain).
        file: PathBuf,
    },
}

/// `moat cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// The nodes: up or down, sessions, events applied, NATS; as the registry records them.
    Status,
    /// Forget a node removed for good (its row in `status`); refused while it is up.
    Forget {
        /// The node's name.
        name: String,
    },
}

/// `moat session …`.
#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// One line per live session: client id, identity, mode, peer address.
    List,
    /// Close a live session (the device may reconnect unless it is disabled or revoked).
    Kick {
        /// MQTT client id.
        client_id: String,
    },
}

/// `moat fw …`.
#[derive(Debug, Subcommand)]
pub enum FwCmd {
    /// Verify a signed image as a device would (moat-image): prints its version, security
    /// counter and signing key, or why it is refused (exit status 3).
    Verify {
        /// The image (e.g. signed by `imgtool sign`).
        file: PathBuf,
        /// Trusted public key, PEM (e.g. from `imgtool getpub -e pem`); repeatable.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Lowest acceptable security counter (the device's anti-rollback value).
        #[arg(long, default_value_t = 0)]
        min_counter: u32,
    },
    /// Firmware signing keys: images are published only if signed by one of them.
    #[command(subcommand)]
    Key(FwKeyCmd),
    /// Sign a payload into an MCUboot image with a hub-held key (`imgtool verify` accepts it).
    #[command(disable_version_flag = true)]
    Sign {
        /// The hub-held key (made by `moat fw key generate`).
        #[arg(long)]
        key: String,
        /// Image version, MAJOR.MINOR.REVISION[+BUILD].
        #[arg(long = "version", id = "image_version")]
        version: String,
        /// Security counter (anti-rollback).
        #[arg(long, default_value_t = 0)]
        security_counter: u32,
        /// Header size in bytes (imgtool --header-size, padded).
        #[arg(long, default_value = "0x200", value_parser = parse_u16)]
        header_size: u16,
        /// The payload (raw binary).
        input: PathBuf,
        /// Where to write the signed image.
        output: PathBuf,
    },
    /// Publish a signed image for a device model.
    Upload {
        /// The signed image.
        file: PathBuf,
        /// The device model it is for.
        #[arg(long)]
        model: String,
    },
    /// List published images.
    List,
    /// Print the hub's update key (PEM): devices verify manifests with it.
    UpdateKey,
}

/// `moat fw key …`.
#[derive(Debug, Subcommand)]
pub enum FwKeyCmd {
    /// Register a public key (PEM, P-256 or Ed25519; e.g. `imgtool getpub -e pem`).
    Add {
        /// Key name.
        #[arg(long)]
        name: String,
        /// The public key file.
        public_key: PathBuf,
    },
    /// Generate a P-256 key held by the hub (sealed, or in the PKCS#11 token); prints its
    /// public key (PEM).
    Generate {
        /// Key name.
        #[arg(long)]
        name: String,
    },
    /// List keys.
    List,
}

/// `moat campaign …`.
#[derive(Debug, Subcommand)]
pub enum CampaignCmd {
    /// Start rolling an image out, wave by wave.
    Create {
        /// The image (catalogue id from `moat fw list`).
        #[arg(long)]
        firmware: String,
        /// group:GROUP, model:MODEL or devices:ID,ID,…
        #[arg(long)]
        target: String,
        /// Waves: cumulative percentages (10%,50%,100%) or sizes (5,20,75).
        #[arg(long)]
        waves: Option<String>,
        /// Share of a wave that must confirm before the next starts.
        #[arg(long, default_value = "100%", value_parser = parse_percent)]
        success_threshold: u32,
        /// Share of notified devices that may fail before the campaign aborts.
        #[arg(long, default_value = "10%", value_parser = parse_percent)]
        abort_threshold: u32,
    },
    /// List campaigns.
    List,
    /// Per-wave progress: notified, downloading, installed, confirmed, failed, rolled back.
    Show {
        /// Campaign id.
        id: String,
        /// Also list every device with its state and reason.
        #[arg(long)]
        devices: bool,
    },
    /// Stop starting new waves (notified devices go on).
    Pause {
        /// Campaign id.
        id: String,
    },
    /// Resume a paused campaign.
    Resume {
        /// Campaign id.
        id: String,
    },
    /// Stop a campaign for good.
    Cancel {
        /// Campaign id.
        id: String,
    },
}

/// `90%` or `90` → 90 (0 to 100).
fn parse_percent(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 90%)"))?;
    if n > 100 {
        return Err(format!("{s:?} is over 100%"));
    }
    Ok(n)
}

/// `512` or `0x200`.
fn parse_u16(s: &str) -> Result<u16, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a number from 0 to 65535 (decimal or 0x hex)"))
}

/// `moat server …`.
#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// Replace the server certificate and key now; listeners serve the new one to new
    /// connections without a restart, and established connections stay up.
    Rotate,
}

/// `moat acl …`.
#[derive(Debug, Subcommand)]
pub enum AclCmd {
    /// List policies.
    List,
    /// Create or replace a policy.
    Create {
        /// Policy name.
        name: String,
        /// Filter template it may publish to (repeatable), e.g. 'devices/{device.id}/#'.
        #[arg(long)]
        publish: Vec<String>,
        /// Filter template it may subscribe to (repeatable).
        #[arg(long)]
        subscribe: Vec<String>,
    },
    /// Delete a policy.
    Delete {
        /// Policy name.
        name: String,
    },
    /// Assign a policy to one device or application, or to a group.
    Assign {
        /// Policy name ("default" for the built-in one).
        policy: String,
        /// The device or application.
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        device: Option<String>,
        /// The group.
        #[arg(long)]
        group: Option<String>,
    },
}

/// `moat app …`.
#[derive(Debug, Subcommand)]
pub enum AppCmd {
    /// Create an application identity: a key and certificate written to --out, or a token.
    Create {
        /// Application name (its identity and MQTT client id).
        name: String,
        /// Directory to write NAME.crt, NAME.key (and NAME.token) into.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Also issue a token (for server-TLS connections with username NAME).
        #[arg(long)]
        token: bool,
        /// Filter template it may publish to (repeatable), e.g. 'devices/+/commands/#'.
        #[arg(long)]
        publish: Vec<String>,
        /// Filter template it may subscribe to (repeatable), e.g. 'devices/+/telemetry'.
        #[arg(long)]
        subscribe: Vec<String>,
    },
}

/// `moat gateway …`.
#[derive(Debug, Subcommand)]
pub enum GatewayCmd {
    /// Create a gateway: a mutual-TLS identity (hub-generated key written to --out, a CSR, or
    /// a registered CA's certificate) that may publish and subscribe under gateways/NAME/#.
    Create {
        /// Gateway name (its identity and MQTT client id).
        name: String,
        /// Directory to write NAME.crt and NAME.key (hub-generated key) into.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Issue on this CSR (PEM); the key never leaves the gateway.
        #[arg(long, conflicts_with = "cert")]
        csr: Option<PathBuf>,
        /// Bind this certificate (PEM) from a registered CA.
        #[arg(long)]
        cert: Option<PathBuf>,
    },
    /// Let a gateway relay for a device, the devices of an MQTT group, or the devices an
    /// enrollment group provisioned.
    Allow {
        /// Gateway name.
        name: String,
        #[command(flatten)]
        target: AllowTarget,
    },
    /// Withdraw what `allow` gave.
    Disallow {
        /// Gateway name.
        name: String,
        #[command(flatten)]
        target: AllowTarget,
    },
    /// List gateways and what each may relay for.
    List,
    /// Show a gateway and what it may relay for.
    Show {
        /// Gateway name.
        name: String,
    },
    /// Revoke a gateway and its certificates: its sessions close and it cannot connect again.
    /// The devices it relayed for are untouched (disable it instead with `moat device disable
    /// NAME`).
    Revoke {
        /// Gateway name.
        name: String,
        /// RFC 5280 reason (unspecified, key_compromise, cessation_of_operation, …).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// What `moat gateway allow|disallow` names: exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct AllowTarget {
    /// A device id.
    #[arg(long)]
    pub device: Option<String>,
    /// An MQTT group ({device.group}).
    #[arg(long)]
    pub group: Option<String>,
    /// An enrollment group (the devices field provisioning gave it).
    #[arg(long)]
    pub enrollment_group: Option<String>,
}

/// `moat allowlist …`.
#[derive(Debug, Subcommand)]
pub enum AllowlistCmd {
    /// Add the serials of a CSV file (serial[,mac[,model]] per line, optional header line).
    /// Any bad line refuses the whole file; nothing is stored then.
    Add {
        /// The CSV file.
        #[arg(long)]
        file: PathBuf,
    },
    /// List the allow-list and what enrolled.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this serial.
        #[arg(long)]
        after: Option<String>,
    },
    /// Let an enrolled serial enroll once more.
    Reset {
        /// The serial.
        serial: String,
    },
}

/// `moat station …`.
#[derive(Debug, Subcommand)]
pub enum StationCmd {
    /// Create a station: a certificate and key written to --out, or (--token) an HTTP Basic token.
    Create {
        /// Station name (certificate CN, or HTTP Basic user name).
        name: String,
        /// Directory to write NAME.crt and NAME.key (or NAME.token) into.
        #[arg(long, required_unless_present = "token")]
        out: Option<PathBuf>,
        /// Authenticate with HTTP Basic NAME:TOKEN instead of a certificate (token printed once).
        #[arg(long)]
        token: bool,
    },
    /// List stations.
    List,
    /// Delete a station (its certificate is revoked; it can no longer enroll).
    Delete {
        /// Station name.
        name: String,
    },
}

/// `moat operator …`.
#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Create an account; its token is printed once (use it with --token-file).
    Create {
        /// Login name.
        name: String,
        /// read-only (look), operator (run the fleet) or admin (also CAs, stations, keys,
        /// accounts, the server certificate).
        #[arg(long, value_parser = ["read-only", "operator", "admin"])]
        role: String,
    },
    /// List accounts.
    List,
    /// Delete an account (its token stops working at once).
    Delete {
        /// Login name.
        name: String,
    },
}

/// `moat audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Security posture: insecure devices and connections, expiring certificates and CAs,
    /// revoked certificates still presented, possible clones, outdated firmware, weak CA keys,
    /// shared key pairs. Each finding has a severity and what to do.
    Posture {
        /// Certificates and CAs expiring within this many days are findings (default: config).
        #[arg(long)]
        within_days: Option<u32>,
        /// Exit with status 3 when a finding is at least this severe (for cron and CI).
        #[arg(long, value_parser = ["low", "medium", "high", "critical"])]
        fail_on: Option<String>,
    },
}

/// `moat enrollment-group …`.
#[derive(Debug, Subcommand)]
pub enum EnrollmentGroupCmd {
    /// Create a group. A device provisioning matches the most specific group by the CA of its
    /// certificate and its factory model.
    Create {
        /// Group name.
        name: String,
        /// Only devices whose certificate this CA issued (`devices` = the hub's device CA, or a
        /// registered CA's name).
        #[arg(long)]
        ca: Option<String>,
        /// Only devices of this factory model (from the allow-list).
        #[arg(long)]
        model: Option<String>,
        /// `fixed` (one hub) or `hashed` (spread over [provisioning] hubs).
        #[arg(long, default_value = "fixed", value_parser = ["fixed", "hashed"])]
        allocation: String,
        /// The MQTT endpoint of a fixed allocation, mqtts://HOST:PORT (default: the first of
        /// [provisioning] hubs).
        #[arg(long)]
        endpoint: Option<String>,
        /// Let provisioned devices also use a token over server TLS or plain TCP.
        #[arg(long)]
        allow_insecure: bool,
        /// MQTT group provisioned devices join.
        #[arg(long)]
        group: Option<String>,
        /// ACL policy provisioned devices get as their own.
        #[arg(long)]
        acl_policy: Option<String>,
    },
    /// List groups.
    List,
    /// Delete a group (devices it provisioned keep what they got).
    Delete {
        /// Group name.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Clap's own consistency checks (duplicate names, flags clashing with --version, …).
    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn percentages_and_sizes() {
        assert_eq!(parse_percent("90%"), Ok(90));
        assert_eq!(parse_percent("0"), Ok(0));
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("x").is_err());
        assert_eq!(parse_u16("0x200"), Ok(512));
        assert_eq!(parse_u16("32"), Ok(32));
        assert!(parse_u16("0x10000").is_err());
    }
}
