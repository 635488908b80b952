//! Test harness: a static `Authority`, a test PKI made with rcgen, a broker on
//! 127.0.0.1:0 (plain and TLS), a raw MQTT client for exact wire checks, and helpers to run
//! mosquitto's clients and paho-mqtt.
#![allow(dead_code, clippy::unwrap_used)]

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Buf, BufMut, BytesMut};
use moat_broker::codec::{self, Connect, LastWill, Properties, Version};
use moat_broker::{
    Acl, Authority, Broker, BrokerConfig, ConnectRequest, Principal, Refusal, SecurityEvent,
    Transport,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

pub const T: Duration = Duration::from_secs(10);

/// identity → (token, acl). mTLS: the leaf CN is the identity.
#[derive(Debug, Default)]
pub struct TestAuthority {
    pub devices: Mutex<HashMap<String, (String, Acl)>>,
    pub events: Mutex<Vec<SecurityEvent>>,
}

impl TestAuthority {
    pub fn add(&self, id: &str, token: &str, publish: &[&str], subscribe: &[&str]) {
        let acl = Acl {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        };
        self.devices
            .lock()
            .unwrap()
            .insert(id.into(), (token.into(), acl));
    }
    pub fn remove(&self, id: &str) {
        self.devices.lock().unwrap().remove(id);
    }
    pub fn events(&self) -> Vec<SecurityEvent> {
        self.events.lock().unwrap().clone()
    }
}

fn leaf_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[async_trait]
impl Authority for TestAuthority {
    async fn authenticate(&self, req: ConnectRequest<'_>) -> Result<Principal, Refusal> {
        let devices = self.devices.lock().unwrap();
        let identity = match req.transport {
            Transport::MutualTls { chain, .. } => {
                leaf_cn(chain.first().ok_or(Refusal::NotAuthorized)?)
                    .ok_or(Refusal::NotAuthorized)?
            }
            Transport::ServerTls | Transport::Plain => {
                let user = req.username.ok_or(Refusal::BadCredentials)?;
                let pass = req.password.ok_or(Refusal::BadCredentials)?;
                let (token, _) = devices.get(user).ok_or(Refusal::NotAuthorized)?;
                if token.as_bytes() != pass {
                    return Err(Refusal::NotAuthorized);
                }
                user.to_owned()
            }
        };
        let (_, acl) = devices.get(&identity).ok_or(Refusal::NotAuthorized)?;
        Ok(Principal {
            identity,
            acl: Arc::new(acl.clone()),
        })
    }

    fn security_event(&self, event: SecurityEvent) {
        self.events.lock().unwrap().push(event);
    }
}

/// Test PKI: a CA, a server certificate for 127.0.0.1/localhost, client certificates.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca_pem: String,
    pub server_cert: rcgen::Certificate,
    pub server_key: rcgen::KeyPair,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Moat test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca_pem = ca_cert.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        let ca = rcgen::Issuer::new(params, ca_key);
        let mut sp =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        sp.distinguished_name
            .push(rcgen::DnType::CommonName, "moat hub");
        sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_cert = sp.signed_by(&server_key, &ca).unwrap();
        Pki {
            dir,
            ca,
            ca_pem,
            server_cert,
            server_key,
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes `NAME.crt` / `NAME.key` for a client with CN = `cn`; returns their paths.
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        let c = self.dir.path().join(format!("{cn}.crt"));
        let k = self.dir.path().join(format!("{cn}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    pub fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(self.ca_pem.as_bytes());
        roots.add(ca_der.unwrap()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .unwrap();
        let key =
            rustls_pki_types::PrivateKeyDer::try_from(self.server_key.serialize_der()).unwrap();
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server_cert.der().clone()], key)
            .unwrap()
    }
}

use rustls_pki_types::pem::PemObject;

/// A running broker with a plain and a TLS listener.
pub struct Hub {
    pub broker: Arc<Broker>,
    pub auth: Arc<TestAuthority>,
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub pki: Pki,
    pub shutdown: CancellationToken,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Hub {
    pub async fn start() -> Hub {
        Hub::start_with(BrokerConfig::default()).await
    }

    pub async fn start_with(cfg: BrokerConfig) -> Hub {
        let auth = Arc::new(TestAuthority::default());
        let broker = Broker::new(cfg, auth.clone());
        Hub::start_broker(broker, auth).await
    }

    pub async fn start_broker(broker: Arc<Broker>, auth: Arc<TestAuthority>) -> Hub {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let pki = Pki::new();
        let tls_cfg = Arc::new(ArcSwap::from_pointee(pki.server_config()));
        let shutdown = CancellationToken::new();
        let plain_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = plain_l.local_addr().unwrap();
        let tls = tls_l.local_addr().unwrap();
        let tasks = vec![
            tokio::spawn(broker.clone().serve_plain(plain_l, shutdown.clone())),
            tokio::spawn(broker.clone().serve_tls(tls_l, tls_cfg, shutdown.clone())),
        ];
        Hub {
            broker,
            auth,
            plain,
            tls,
            pki,
            shutdown,
            tasks,
        }
    }

    /// Waits until the broker holds at least `n` subscriptions.
    pub async fn wait_subscriptions(&self, n: u64) {
        wait_for(|| self.broker.metrics().subscriptions >= n).await;
    }
}

/// Polls `f` every 5 ms until true, panicking after `T`.
pub async fn wait_for(mut f: impl FnMut() -> bool) {
    tokio::time::timeout(T, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}

/// A packet from the server: first byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    pub first: u8,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
    /// (topic, payload) of a PUBLISH.
    pub fn publish(&self, v: Version) -> (String, Vec<u8>) {
        assert_eq!(self.kind(), 3, "not a PUBLISH: {self:?}");
        let mut b = &self.body[..];
        let n = b.get_u16() as usize;
        let topic = String::from_utf8(b[..n].to_vec()).unwrap();
        b.advance(n);
        if (self.first >> 1) & 3 > 0 {
            b.advance(2);
        }
        if v == Version::V5 {
            let (len, used) = varint(b);
            b.advance(used + len);
        }
        (topic, b.to_vec())
    }
    pub fn pid(&self) -> u16 {
        let mut b = &self.body[..];
        if self.kind() == 3 {
            let n = b.get_u16() as usize;
            b.advance(n);
        }
        b.get_u16()
    }
}

fn varint(b: &[u8]) -> (usize, usize) {
    let mut v = 0usize;
    for (i, x) in b.iter().enumerate().take(4) {
        v |= ((x & 0x7f) as usize) << (7 * i);
        if x & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    panic!("bad varint")
}

/// A minimal MQTT client speaking raw bytes, for exact wire assertions.
pub struct RawClient {
    pub s: TcpStream,
    pub v: Version,
    buf: BytesMut,
}

pub fn connect_packet(v: Version, id: &str, user: Option<(&str, &str)>) -> Connect {
    Connect {
        version: v,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: id.into(),
        will: None,
        username: user.map(|u| u.0.into()),
        password: user.map(|u| u.1.as_bytes().to_vec().into()),
    }
}

pub fn will(topic: &str, payload: &str, delay: Option<u32>) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec().into(),
        qos: 1,
        retain: false,
        properties: Properties {
            will_delay: delay,
            ..Properties::default()
        },
    }
}

impl RawClient {
    pub async fn tcp(addr: SocketAddr, v: Version) -> RawClient {
        RawClient::tcp_from(addr, v, "127.0.0.1").await
    }

    pub async fn tcp_from(addr: SocketAddr, v: Version, source: &str) -> RawClient {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let s = sock.connect(addr).await.unwrap();
        RawClient {
            s,
            v,
            buf: BytesMut::new(),
        }
    }

    /// Connects with `c`; returns the CONNACK code.
    pub async fn connect(addr: SocketAddr, c: Connect) -> (RawClient, u8) {
        let mut cl = RawClient::tcp(addr, c.version).await;
        let code = cl.handshake(c).await;
        (cl, code)
    }

    pub async fn handshake(&mut self, c: Connect) -> u8 {
        self.send(&codec::encode_connect(&c)).await;
        let ack = self.recv().await.expect("CONNACK");
        assert_eq!(ack.kind(), 2, "expected CONNACK, got {ack:?}");
        ack.body[1]
    }

    pub async fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }

    /// Next packet, or `None` on EOF/reset. Panics after `T`.
    pub async fn recv(&mut self) -> Option<Raw> {
        tokio::time::timeout(T, self.recv_inner())
            .await
            .expect("no packet in time")
    }

    /// Next packet within `d`, `Err(())` if none arrived in time.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<Raw>, ()> {
        tokio::time::timeout(d, self.recv_inner())
            .await
            .map_err(|_| ())
    }

    async fn recv_inner(&mut self) -> Option<Raw> {
        loop {
            if self.buf.len() >= 2 {
                let (len, used) = {
                    let b = &self.buf[1..];
                    let mut v = 0usize;
                    let mut done = None;
                    for (i, x) in b.iter().enumerate().take(4) {
                        v |= ((x & 0x7f) as usize) << (7 * i);
                        if x & 0x80 == 0 {
                            done = Some(i + 1);
                            break;
                        }
                    }
                    (v, done)
                };
                if let Some(used) = used
                    && self.buf.len() >= 1 + used + len
                {
                    let first = self.buf[0];
                    self.buf.advance(1 + used);
                    let body = self.buf.split_to(len).to_vec();
                    return Some(Raw { first, body });
                }
            }
            match self.s.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    pub async fn subscribe(&mut self, pid: u16, filter: &str, opts: u8) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_u16(pid);
        if self.v == Version::V5 {
            body.put_u8(0);
        }
        body.put_u16(filter.len() as u16);
        body.put_slice(filter.as_bytes());
        body.put_u8(opts);
        self.send(&frame(0x82, &body)).await;
        let ack = self.recv().await.expect("SUBACK");
        assert_eq!(ack.kind(), 9, "expected SUBACK, got {ack:?}");
        let skip = if self.v == Version::V5 { 3 } else { 2 };
        ack.body[skip..].to_vec()
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool, pid: u16) {
        let mut body = BytesMut::new();
        body.put_u16(topic.len() as u16);
        body.put_slice(topic.as_bytes());
        if qos > 0 {
            body.put_u16(pid);
        }
        if self.v == Version::V5 {
            body.put_u8(0);
        }
        body.put_slice(payload);
        self.send(&frame(0x30 | (qos << 1) | u8::from(retain), &body))
            .await;
    }

    pub async fn puback(&mut self, pid: u16) {
        let mut body = BytesMut::new();
        body.put_u16(pid);
        self.send(&frame(0x40, &body)).await;
    }

    pub async fn disconnect(&mut self) {
        let body: &[u8] = if self.v == Version::V5 { &[0, 0] } else { &[] };
        self.send(&frame(0xe0, body)).await;
    }
}

pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n & 0x7f) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// Fails under CI (and skips otherwise) when a peer tool is missing.
pub fn have(tool: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{tool} is required under CI (apt-get install mosquitto-clients / pip install paho-mqtt)"
            );
        }
        eprintln!("skipping: {tool} not installed");
    }
    ok
}

pub fn have_paho() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("paho-mqtt is required under CI (pip install paho-mqtt)");
        }
        eprintln!("skipping: paho-mqtt not installed");
    }
    ok
}
