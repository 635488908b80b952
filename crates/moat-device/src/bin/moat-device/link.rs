//! Devices without IP on a simulated link: UDP datagrams of at most 222 bytes (a LoRaWAN
//! frame) stand for the radio. `gateway` bridges the link to the hub over MQTT (mutual TLS,
//! MQTT 5), relaying frames unchanged both ways; `cose-send` plays the constrained device
//! (signs one message with its key and counter file, sends it; `--encrypt-to` encrypts the
//! payload to the application first); `cose-receive` is its
//! downlink side (verifies each frame with the signer certificates it trusts and its replay
//! window file). Each prints one JSON object per event on stdout (`cose-send`: one, at the
//! end).
//!
//! ```text
//!  cose-send ──UDP──▶ gateway ──MQTT gateways/GW/up/DEVICE/SUFFIX──▶ hub (verifies) ──▶ app
//!  cose-receive ◀──UDP── gateway ◀──MQTT gateways/GW/down/DEVICE/…── hub ◀── app (signs)
//! ```

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use moat_device::files;
use moat_device::identity::{pem_client_config, roots_from_file};
use moat_device::relay::{
    CounterFile, DownlinkCheck, MAX_FRAME, application_key, sign_frame, sign_sealed_frame,
};
use p256::pkcs8::DecodePrivateKey;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

fn say(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// `moat-device gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The hub's MQTT endpoint, mqtts://HOST:PORT.
    #[arg(long)]
    pub mqtt: String,
    /// CA bundle that signs the hub's certificate (PEM).
    #[arg(long)]
    pub ca: PathBuf,
    /// The gateway's certificate (PEM, from `moat gateway create --out`).
    #[arg(long)]
    pub cert: PathBuf,
    /// The gateway's key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// The gateway's name (its identity and client id).
    #[arg(long)]
    pub name: String,
    /// UDP address of the link.
    #[arg(long)]
    pub listen: SocketAddr,
    /// A device on the link: ID=HOST:PORT, the address its frames come from and downlinks go
    /// to (repeatable).
    #[arg(long = "device", value_parser = parse_device)]
    pub devices: Vec<(String, SocketAddr)>,
    /// Topic suffix of uplinks: gateways/NAME/up/DEVICE/SUFFIX.
    #[arg(long, default_value = "telemetry")]
    pub suffix: String,
}

fn parse_device(s: &str) -> Result<(String, SocketAddr), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=HOST:PORT"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{s:?}: {addr:?} is not HOST:PORT ({e})"))?;
    if id.is_empty() || id.contains(['/', '+', '#']) {
        return Err(format!("{s:?}: {id:?} is not a device id"));
    }
    Ok((id.to_string(), addr))
}

/// Relays frames between the link and the hub until stopped.
pub async fn gateway(args: GatewayArgs) -> anyhow::Result<Value> {
    let roots = roots_from_file(&args.ca)?;
    let tls = pem_client_config(roots, &args.cert, &args.key)?;
    let hostport = args
        .mqtt
        .strip_prefix("mqtts://")
        .context("--mqtt must be mqtts://HOST:PORT (mutual TLS only)")?;
    let (host, port) = hostport
        .rsplit_once(':')
        .context("--mqtt must be mqtts://HOST:PORT")?;
    let port: u16 = port.parse().context("--mqtt: the port is not a number")?;
    let mut options = MqttOptions::new(&args.name, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(true)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut events) = AsyncClient::new(options, 64);
    let link = UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("binding the link at {}", args.listen))?;
    let by_addr: HashMap<SocketAddr, String> = args
        .devices
        .iter()
        .map(|(id, a)| (*a, id.clone()))
        .collect();
    let by_id: HashMap<String, SocketAddr> = args.devices.iter().cloned().collect();
    let down_prefix = format!("gateways/{}/down/", args.name);
    let mut buf = [0u8; MAX_FRAME + 1];
    loop {
        tokio::select! {
            r = link.recv_from(&mut buf) => {
                let (n, from) = r.context("reading the link")?;
                let Some(device) = by_addr.get(&from) else {
                    say(json!({"event": "dropped", "why": format!("frame from unknown address {from}")}));
                    continue;
                };
                if n > MAX_FRAME {
                    say(json!({"event": "dropped", "device": device, "why": format!("frame over {MAX_FRAME} bytes")}));
                    continue;
                }
                let topic = format!("gateways/{}/up/{device}/{}", args.name, args.suffix);
                match client.try_publish(topic, QoS::AtLeastOnce, false, buf[..n].to_vec()) {
                    Ok(()) => say(json!({"event": "up", "device": device, "bytes": n})),
                    Err(e) => say(json!({"event": "dropped", "device": device, "why": e.to_string()})),
                }
            }
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    say(json!({"event": "connected"}));
                    client
                        .try_subscribe(format!("{down_prefix}#"), QoS::AtLeastOnce)
                        .context("subscribing to downlinks")?;
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    say(json!({"event": "puback", "pkid": ack.pkid, "reason": format!("{:?}", ack.reason)}));
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).to_string();
                    let device = topic
                        .strip_prefix(&down_prefix)
                        .and_then(|rest| rest.split('/').next())
                        .unwrap_or_default()
                        .to_string();
                    match by_id.get(&device) {
                        Some(addr) if p.payload.len() <= MAX_FRAME => {
                            link.send_to(&p.payload, addr).await.context("writing the link")?;
                            say(json!({"event": "down", "device": device, "bytes": p.payload.len()}));
                        }
                        Some(_) => say(json!({"event": "dropped", "device": device, "why": format!("downlink over {MAX_FRAME} bytes")})),
                        None => say(json!({"event": "dropped", "why": format!("downlink for unknown device {device:?}")})),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    say(json!({"event": "disconnected", "why": e.to_string()}));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(json!({"event": "stopped"})),
        }
    }
}

/// `moat-device cose-send`.
#[derive(Debug, Args)]
pub struct CoseSendArgs {
    /// The device's key (PKCS#8 PEM, e.g. from `moat device create --out`).
    #[arg(long)]
    pub key: PathBuf,
    /// The device's certificate (PEM; its x5t names it).
    #[arg(long)]
    pub cert: PathBuf,
    /// The file holding the next message counter (created at 0).
    #[arg(long)]
    pub counter_file: PathBuf,
    /// The gateway's link address.
    #[arg(long)]
    pub gateway: SocketAddr,
    /// This device's link address (where the gateway knows it from).
    #[arg(long)]
    pub bind: SocketAddr,
    /// The payload (text).
    #[arg(long)]
    pub payload: String,
    /// Encrypt the payload to this application key first (PEM: a P-256 PUBLIC KEY or a
    /// certificate): the gateway and the hub relay only ciphertext. 14 bytes fit a frame.
    #[arg(long, value_name = "PEM")]
    pub encrypt_to: Option<PathBuf>,
}

/// Signs one message with the next counter and sends it.
pub async fn cose_send(args: CoseSendArgs) -> anyhow::Result<Value> {
    let pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PKCS#8 P-256 key: {e}", args.key.display()))?;
    let chain = files::read_certs(&args.cert)?;
    let Some(leaf) = chain.first() else {
        bail!("{} holds no certificate", args.cert.display());
    };
    let application = args
        .encrypt_to
        .as_deref()
        .map(application_key)
        .transpose()?;
    let counter = CounterFile::new(&args.counter_file).take()?;
    let frame = match &application {
        Some(app) => sign_sealed_frame(&key, leaf, counter, args.payload.as_bytes(), app)?,
        None => sign_frame(&key, leaf, counter, args.payload.as_bytes())?,
    };
    let link = UdpSocket::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    link.send_to(&frame, args.gateway)
        .await
        .context("sending the frame")?;
    Ok(json!({
        "counter": counter,
        "bytes": frame.len(),
        "sealed": application.is_some(),
        "frame": hex::encode(&frame),
    }))
}

/// `moat-device cose-receive`.
#[derive(Debug, Args)]
pub struct CoseReceiveArgs {
    /// This device's link address.
    #[arg(long)]
    pub bind: SocketAddr,
    /// Certificate of a signer the device trusts (PEM; repeatable).
    #[arg(long = "trust", required = true)]
    pub trusted: Vec<PathBuf>,
    /// The file holding the downlink replay window.
    #[arg(long)]
    pub window_file: PathBuf,
    /// Stop after this many frames.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Stop after this many seconds without a frame.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// Receives downlinks and checks each one.
pub async fn cose_receive(args: CoseReceiveArgs) -> anyhow::Result<Value> {
    let mut certs = Vec::new();
    for path in &args.trusted {
        let chain = files::read_certs(path)?;
        let Some(leaf) = chain.into_iter().next() else {
            bail!("{} holds no certificate", path.display());
        };
        certs.push(leaf.to_vec());
    }
    let check = DownlinkCheck::new(&certs, &args.window_file)?;
    let link = UdpSocket::bind(args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    say(json!({"event": "listening"}));
    let mut buf = [0u8; MAX_FRAME + 1];
    for _ in 0..args.count {
        let (n, _) =
            tokio::time::timeout(Duration::from_secs(args.timeout), link.recv_from(&mut buf))
                .await
                .context("no frame in time")?
                .context("reading the link")?;
        if n > MAX_FRAME {
            say(json!({"accepted": false, "reason": format!("frame over {MAX_FRAME} bytes")}));
            continue;
        }
        match check.accept(&buf[..n]) {
            Ok(a) => say(json!({
                "accepted": true,
                "counter": a.counter,
                "payload": String::from_utf8_lossy(&a.payload),
            })),
            Err(e) => say(json!({"accepted": false, "reason": e.to_string()})),
        }
    }
    Ok(json!({"frames": args.count}))
}
