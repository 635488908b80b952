//! The SDK subcommands: what a factory station or a device runs (`key`, `cacerts`,
//! `est-enroll`, `reenroll`, `provision`, `run`). Each prints one JSON object on stdout and
//! its progress on stderr.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use moat_device::est::{EstClient, StationAuth};
use moat_device::files;
use moat_device::identity::{Identity, RenewPolicy, roots_from_file};
use moat_device::keystore::{DeviceKey, KeyStore, StoreSpec};
use moat_device::provision::{AssignmentFile, ProvisioningClient};
use moat_device::session::{Renewal, Session, SessionConfig, SessionEvent};
use moat_vault::Secret;
use serde_json::{Value, json};

/// Which key, in which store.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Key store: file:DIR (sealed under a passphrase) or an RFC 7512 PKCS#11 URI,
    /// pkcs11:token=LABEL;object=KEY?module-path=/usr/lib/softhsm/libsofthsm2.so
    #[arg(long, env = "MOAT_DEVICE_STORE")]
    pub store: String,
    /// Key label (default: the URI's object=, else "device").
    #[arg(long)]
    pub label: Option<String>,
    /// File holding the file store's passphrase (else MOAT_DEVICE_PASSPHRASE).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the token PIN (else the URI's pin-source/pin-value, else MOAT_DEVICE_PIN).
    #[arg(long)]
    pub pin_file: Option<PathBuf>,
}

impl KeyArgs {
    fn open(&self) -> anyhow::Result<(Box<dyn KeyStore>, String)> {
        let spec = StoreSpec::parse(&self.store)?;
        let label = self
            .label
            .clone()
            .or_else(|| spec.key_label().map(str::to_owned))
            .unwrap_or_else(|| "device".to_owned());
        let (file, var) = match spec {
            StoreSpec::File(_) => (&self.passphrase_file, "MOAT_DEVICE_PASSPHRASE"),
            StoreSpec::Pkcs11(_) => (&self.pin_file, "MOAT_DEVICE_PIN"),
        };
        let secret = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Some(Secret::new(text.trim_end_matches(['\r', '\n'])))
            }
            None => std::env::var(var).ok().map(Secret::new),
        };
        Ok((spec.open(secret)?, label))
    }

    fn load(&self) -> anyhow::Result<DeviceKey> {
        let (store, label) = self.open()?;
        Ok(store.load(&label)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Generate a P-256 key in the store (inside the token for PKCS#11); print its public key.
    Generate(KeyArgs),
    /// Print the public key of an existing key.
    Show(KeyArgs),
}

fn key_json(key: &DeviceKey) -> Value {
    json!({
        "label": key.label(),
        "backend": key.backend(),
        "public_key_pem": key.public_key_pem(),
    })
}

pub fn key(cmd: KeyCmd) -> anyhow::Result<Value> {
    match cmd {
        KeyCmd::Generate(a) => {
            let (store, label) = a.open()?;
            let key = store.generate(&label)?;
            eprintln!(
                "moat-device: generated P-256 key {label:?} in {}",
                store.describe()
            );
            Ok(key_json(&key))
        }
        KeyCmd::Show(a) => Ok(key_json(&a.load()?)),
    }
}

/// The hub's EST service.
#[derive(Debug, Args)]
pub struct EstArgs {
    /// The hub's HTTPS base, e.g. https://hub.example:8443.
    #[arg(long)]
    pub est: String,
    /// PEM CA bundle that verifies the hub's HTTPS certificate (the hub's ca-bundle.pem).
    #[arg(long)]
    pub ca: PathBuf,
}

impl EstArgs {
    fn client(&self) -> anyhow::Result<EstClient> {
        let roots = roots_from_file(&self.ca).context("--ca")?;
        Ok(EstClient::new(&self.est, roots)?)
    }
}

#[derive(Debug, Args)]
pub struct CacertsArgs {
    #[command(flatten)]
    pub est: EstArgs,
    /// Write the CA certificates here (PEM); else print them.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn cacerts(a: CacertsArgs) -> anyhow::Result<Value> {
    let certs = a.est.client()?.cacerts().await?;
    let pem = files::certs_to_pem(&certs);
    if let Some(out) = &a.out {
        files::write_atomic(out, pem.as_bytes())?;
    }
    let subjects: Vec<String> = certs
        .iter()
        .filter_map(|c| moat_pki::cert_info(c).ok().map(|i| i.subject))
        .collect();
    Ok(json!({ "kind": "cacerts", "subjects": subjects, "pem": a.out.is_none().then_some(pem) }))
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub est: EstArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The device's serial, as on the hub's allow-list (the CSR's CN).
    #[arg(long)]
    pub serial: String,
    /// Factory station certificate (PEM), for mutual TLS.
    #[arg(long, requires = "station_key", conflicts_with = "station_token")]
    pub station_cert: Option<PathBuf>,
    /// Factory station private key (PEM).
    #[arg(long, requires = "station_cert")]
    pub station_key: Option<PathBuf>,
    /// Station token as NAME:TOKEN, for HTTP Basic.
    #[arg(long, env = "MOAT_STATION_TOKEN", hide_env_values = true)]
    pub station_token: Option<String>,
    /// Where to write the issued certificate (PEM).
    #[arg(long)]
    pub out: PathBuf,
}

pub async fn est_enroll(a: EnrollArgs) -> anyhow::Result<Value> {
    let client = a.est.client()?;
    let station = match (&a.station_cert, &a.station_key, &a.station_token) {
        (Some(c), Some(k), None) => StationAuth::from_pem_files(client.roots().clone(), c, k)?,
        (None, None, Some(t)) => {
            let Some((name, token)) = t.split_once(':') else {
                bail!(
                    "--station-token must be NAME:TOKEN (as `moat station create NAME --token` printed)"
                );
            };
            StationAuth::Basic {
                name: name.to_owned(),
                token: Secret::new(token),
            }
        }
        _ => bail!(
            "give the station's credential: --station-cert FILE --station-key FILE, or --station-token NAME:TOKEN"
        ),
    };
    if a.out.exists() {
        bail!(
            "{} exists: refusing to overwrite a certificate (use reenroll to renew it)",
            a.out.display()
        );
    }
    let key = a.key.load()?;
    let cert = client.enroll(&key, &a.serial, &station).await?;
    files::write_certs(&a.out, std::slice::from_ref(&cert))?;
    let info = moat_pki::cert_info(&cert)?;
    eprintln!(
        "moat-device: enrolled {} ({}), certificate {} valid until {}",
        a.serial,
        info.subject,
        a.out.display(),
        info.not_after
    );
    Ok(json!({
        "kind": "enroll",
        "subject": info.subject,
        "serial": info.serial,
        "not_after": info.not_after.to_string(),
        "certificate": a.out,
    }))
}

#[derive(Debug, Args)]
pub struct ReenrollArgs {
    #[command(flatten)]
    pub est: EstArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The current certificate (PEM); replaced by the renewed one.
    #[arg(long)]
    pub cert: PathBuf,
}

pub async fn reenroll(a: ReenrollArgs) -> anyhow::Result<Value> {
    let client = a.est.client()?;
    let key = a.key.load()?;
    let current = Identity::from_pem_file(&a.cert, key.clone())?;
    let new = client.reenroll(&current, &key).await?;
    files::write_certs(&a.cert, &new.chain)?;
    let info = new.info()?;
    eprintln!(
        "moat-device: renewed {}, serial {}, valid until {}",
        info.subject, info.serial, info.not_after
    );
    Ok(json!({
        "kind": "reenroll",
        "subject": info.subject,
        "serial": info.serial,
        "not_after": info.not_after.to_string(),
    }))
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The hub's HTTPS base, e.g. https://hub.example:8443.
    #[arg(long)]
    pub url: String,
    /// PEM CA bundle that verifies the hub's HTTPS certificate.
    #[arg(long)]
    pub ca: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The factory certificate (PEM), from est-enroll.
    #[arg(long)]
    pub cert: PathBuf,
    /// Label of the operational key (default: the factory key itself).
    #[arg(long)]
    pub operational_label: Option<String>,
    /// Directory for device.pem, mqtt-ca.pem and assignment.json.
    #[arg(long)]
    pub out: PathBuf,
}

pub async fn provision(a: ProvisionArgs) -> anyhow::Result<Value> {
    let roots = roots_from_file(&a.ca).context("--ca")?;
    let client = ProvisioningClient::new(&a.url, roots)?;
    let (store, label) = a.key.open()?;
    let factory = Identity::from_pem_file(&a.cert, store.load(&label)?)?;
    let op_key = match &a.operational_label {
        Some(l) => store.load(l)?,
        None => factory.key.clone(),
    };
    let assignment = client.register(&factory, &op_key).await?;
    assignment.save(&a.out)?;
    eprintln!(
        "moat-device: provisioned as {} → {}; files in {}",
        assignment.device_id,
        assignment.mqtt.url,
        a.out.display()
    );
    Ok(json!({
        "kind": "provision",
        "device_id": assignment.device_id,
        "mqtt": assignment.mqtt.url,
        "enrollment_group": assignment.enrollment_group,
        "policy": assignment.policy,
        "out": a.out,
    }))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// The device certificate (PEM); renewals replace it.
    #[arg(long)]
    pub cert: PathBuf,
    /// assignment.json written by `provision` (MQTT endpoint, client id, CA bundle).
    #[arg(long, conflicts_with_all = ["mqtt", "mqtt_ca", "client_id"])]
    pub assignment: Option<PathBuf>,
    /// MQTT endpoint, mqtts://HOST:PORT (without --assignment).
    #[arg(long, requires_all = ["mqtt_ca", "client_id"])]
    pub mqtt: Option<String>,
    /// PEM CAs that sign the MQTT server's certificate (without --assignment).
    #[arg(long)]
    pub mqtt_ca: Option<PathBuf>,
    /// MQTT client id: the device id (without --assignment).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Topic to publish to (default devices/ID/up).
    #[arg(long)]
    pub topic: Option<String>,
    /// Payload of each message.
    #[arg(long, default_value = "hello")]
    pub message: String,
    /// Messages to publish (QoS 1) before leaving; 0 = run until interrupted.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Seconds between messages.
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
    /// Seconds to wait for the first CONNACK before giving up.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// The hub's HTTPS base for renewal (simplereenroll); no renewal without it.
    #[arg(long)]
    pub est: Option<String>,
    /// PEM CA bundle that verifies the hub's HTTPS certificate (with --est).
    #[arg(long, requires = "est")]
    pub ca: Option<PathBuf>,
    /// Renew when less than this fraction of the certificate's lifetime is left.
    #[arg(long, default_value_t = 1.0 / 3.0)]
    pub renew_fraction: f64,
    /// Renew when less than this many seconds are left.
    #[arg(long, default_value_t = 86_400)]
    pub renew_before: u64,
    /// Seconds between renewal checks (the first check is at start).
    #[arg(long, default_value_t = 3_600)]
    pub renew_check: u64,
}

fn secs(what: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("--{what} must be a number of seconds ≥ 0"))
}

pub async fn run(a: RunArgs) -> anyhow::Result<Value> {
    let key = a.key.load()?;
    let identity = Identity::from_pem_file(&a.cert, key)?;
    let mut config = match (&a.assignment, &a.mqtt, &a.mqtt_ca, &a.client_id) {
        (Some(path), ..) => {
            let file = AssignmentFile::load(path)?;
            let roots = moat_device::identity::roots_from_certs(
                "assignment mqtt.ca_bundle",
                files::certs_from_pem("assignment mqtt.ca_bundle", file.mqtt.ca_bundle.as_bytes())?,
            )?;
            let mut c = SessionConfig::from_url(&file.mqtt.url, &file.device_id, roots)?;
            c.host = file.mqtt.host.clone();
            c.port = file.mqtt.port;
            c
        }
        (None, Some(url), Some(ca), Some(id)) => {
            SessionConfig::from_url(url, id, roots_from_file(ca).context("--mqtt-ca")?)?
        }
        _ => bail!(
            "give --assignment FILE (from provision), or --mqtt URL --mqtt-ca FILE --client-id ID"
        ),
    };
    if let Some(est) = &a.est {
        let Some(ca) = &a.ca else {
            bail!("--est needs --ca (the CA bundle that verifies the hub's HTTPS certificate)")
        };
        if !(0.0..=1.0).contains(&a.renew_fraction) {
            bail!("--renew-fraction must be between 0 and 1");
        }
        config.renewal = Some(Renewal {
            est: EstClient::new(est, roots_from_file(ca).context("--ca")?)?,
            policy: RenewPolicy {
                fraction_left: a.renew_fraction,
                min_left: Duration::from_secs(a.renew_before),
            },
            check_every: Duration::from_secs(a.renew_check.max(1)),
            retry_after: Duration::from_secs(60),
            cert_path: Some(a.cert.clone()),
        });
    }
    let topic = a
        .topic
        .clone()
        .unwrap_or_else(|| format!("devices/{}/up", config.client_id));
    let interval = secs("interval", a.interval)?;
    let connect_timeout = secs("connect-timeout", a.connect_timeout)?;
    let mut session = Session::start(config, identity)?;

    let mut connected = 0u64;
    let mut renewed = Vec::new();
    let (mut published, mut acked) = (0u64, 0u64);
    let first = tokio::time::timeout(connect_timeout, async {
        while let Some(ev) = session.next_event().await {
            match ev {
                SessionEvent::Connected { serial } => {
                    eprintln!("moat-device: connected (certificate serial {serial})");
                    return Ok(());
                }
                SessionEvent::Disconnected { reason } => {
                    eprintln!("moat-device: connection failed: {reason} (retrying)");
                }
                SessionEvent::Renewed { serial, not_after } => {
                    eprintln!(
                        "moat-device: certificate renewed: serial {serial}, until {not_after}"
                    );
                    renewed.push(serial);
                }
                other => eprintln!("moat-device: {other:?}"),
            }
        }
        bail!("the MQTT session stopped")
    })
    .await;
    match first {
        Ok(r) => r?,
        Err(_) => bail!(
            "no CONNACK within {:.0}s (check the endpoint, the CA bundle and that the hub knows this certificate)",
            connect_timeout.as_secs_f64()
        ),
    }
    connected += 1;
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    // After the last publication, how long to wait for the outstanding acknowledgements.
    let ack_wait = Duration::from_secs(30);
    let mut ack_deadline = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        tokio::select! {
            _ = ticker.tick(), if a.count == 0 || published < a.count => {
                session.publish(&topic, a.message.clone(), rumqttc::QoS::AtLeastOnce).await?;
                published += 1;
                if a.count != 0 && published == a.count {
                    ack_deadline = tokio::time::Instant::now() + ack_wait;
                }
            }
            () = tokio::time::sleep_until(ack_deadline), if a.count != 0 && published >= a.count => {
                bail!(
                    "{} of {published} publications not acknowledged within {}s of the last one",
                    published - acked.min(published),
                    ack_wait.as_secs()
                );
            }
            ev = session.next_event() => match ev {
                Some(SessionEvent::Acked { .. }) => {
                    acked += 1;
                    if a.count != 0 && acked >= a.count { break; }
                }
                Some(SessionEvent::Connected { serial }) => {
                    connected += 1;
                    eprintln!("moat-device: reconnected (certificate serial {serial})");
                }
                Some(SessionEvent::Renewed { serial, not_after }) => {
                    eprintln!("moat-device: certificate renewed: serial {serial}, until {not_after}; stored in {}", a.cert.display());
                    renewed.push(serial);
                }
                Some(SessionEvent::RenewalFailed { reason }) => eprintln!("moat-device: renewal failed: {reason}"),
                Some(SessionEvent::Disconnected { reason }) => eprintln!("moat-device: disconnected: {reason}"),
                Some(SessionEvent::Message { topic, payload }) => eprintln!("moat-device: message on {topic}: {} bytes", payload.len()),
                None => bail!("the MQTT session stopped"),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let serial = session.identity().info()?.serial;
    session.close(Duration::from_secs(2)).await;
    Ok(json!({
        "kind": "run",
        "topic": topic,
        "published": published,
        "acked": acked,
        "connections": connected,
        "renewed": renewed,
        "serial": serial,
    }))
}
