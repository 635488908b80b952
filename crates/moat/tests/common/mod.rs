//! Test harness: runs the real `moat` binary (hub and CLI) in a temporary data dir, with
//! loopback listeners on ephemeral ports, and real peers (openssl, curl).
// Each test binary uses a part of this module and of what it re-exports.
#![allow(dead_code, unused_imports)]

pub mod download;
pub mod pki;

pub use moat_testkit::openssl::{make_csr, openssl, openssl_verify};
pub use moat_testkit::paho::Paho;
pub use moat_testkit::peer;
pub use moat_testkit::process::{run, run_bounded};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// Runs a shell pipeline in `dir`; requires success; returns stdout.
pub fn sh(dir: &Path, script: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A running hub: a `moat_node::Node` in this test process (`TestHub::start`), or a `moat
/// serve` process when the test needs its flags, environment or process (`start_with`).
/// Stopped on drop (a process is killed).
pub struct TestHub {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    child: Option<Child>,
    /// In this process, rather than a `moat serve` child.
    in_process: bool,
    node: Option<InProcess>,
    pub admin_url: String,
    pub crl_url: String,
    /// MQTT TLS `host:port`.
    pub mqtt_tls: String,
    /// MQTT plain `host:port`.
    pub mqtt_plain: String,
    /// Metrics and health base URL.
    pub metrics_url: String,
    /// Firmware downloads (mutual TLS) `host:port`.
    pub ota_download: String,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
    /// The MQTT TLS address a restart binds again (see [`TestHub::keep_mqtt_address`]).
    pinned_mqtt: Option<String>,
    /// Changes to an in-process node's configuration (see [`TestHub::start_node`]).
    configure: Option<Configure>,
}

/// A change to an in-process node's configuration, applied at every (re)start.
pub type Configure = Arc<dyn Fn(&mut moat_node::Config) + Send + Sync>;

impl TestHub {
    /// Starts a hub with default (file) vault and SQLite, in this process (the hub as a
    /// library: `moat_node::Node`, every listener on 127.0.0.1:0).
    pub fn start() -> TestHub {
        Self::new(&[], &[], true)
    }

    /// Starts an in-process node whose configuration (the loopback defaults, data in the
    /// test's directory) `configure` changes first, at this start and every restart.
    /// Err(why) if it does not start.
    pub fn start_node(
        configure: impl Fn(&mut moat_node::Config) + Send + Sync + 'static,
    ) -> Result<TestHub, String> {
        let mut hub = Self::unstarted(&[], &[], true);
        hub.configure = Some(Arc::new(configure));
        hub.spawn()?;
        Ok(hub)
    }

    /// Starts a `moat serve` process with extra arguments and environment.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> TestHub {
        Self::new(args, envs, false)
    }

    fn new(args: &[&str], envs: &[(&str, &str)], in_process: bool) -> TestHub {
        let mut hub = Self::unstarted(args, envs, in_process);
        hub.spawn().expect("hub starts");
        hub
    }

    /// A `moat serve` process hub with extra arguments and environment, not started yet
    /// (prepare its data dir, then [`Self::spawn`]).
    pub fn unstarted_process(args: &[&str], envs: &[(&str, &str)]) -> TestHub {
        Self::unstarted(args, envs, false)
    }

    fn unstarted(args: &[&str], envs: &[(&str, &str)], in_process: bool) -> TestHub {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        TestHub {
            dir,
            data,
            child: None,
            in_process,
            node: None,
            admin_url: String::new(),
            crl_url: String::new(),
            mqtt_tls: String::new(),
            mqtt_plain: String::new(),
            metrics_url: String::new(),
            ota_download: String::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pinned_mqtt: None,
            configure: None,
        }
    }

    /// (Re)starts the hub; Err(why) if it fails before it is up.
    pub fn spawn(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.data.join("hub.json"));
        if self.in_process {
            self.node = Some(InProcess::start(&self.data, self.configure.clone())?);
            return self.read_hub_file();
        }
        let log = std::fs::File::create(self.dir.path().join("hub.log")).expect("log");
        let mut cmd = Command::new(MOAT);
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args([
                "serve",
                "--api-listen",
                "127.0.0.1:0",
                "--crl-listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                self.pinned_mqtt.as_deref().unwrap_or("127.0.0.1:0"),
                "--mqtt-plain-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--ota-listen",
                "127.0.0.1:0",
            ])
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn moat serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.data.join("hub.json").exists() {
                self.child = Some(child);
                return self.read_hub_file();
            }
            if let Ok(Some(_)) = child.try_wait() {
                return Err(self.log());
            }
            assert!(
                Instant::now() < deadline,
                "hub did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the running hub listens, from the `hub.json` it wrote.
    fn read_hub_file(&mut self) -> Result<(), String> {
        let text = std::fs::read_to_string(self.data.join("hub.json"))
            .map_err(|e| format!("hub.json: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&text).expect("hub.json");
        self.admin_url = v["admin_url"].as_str().expect("admin_url").to_string();
        self.crl_url = v["crl_url"].as_str().expect("crl_url").to_string();
        self.mqtt_tls = v["mqtt_tls"].as_str().expect("mqtt_tls").to_string();
        self.mqtt_plain = v["mqtt_plain"].as_str().unwrap_or_default().to_string();
        self.metrics_url = v["metrics_url"].as_str().unwrap_or_default().to_string();
        self.ota_download = v["ota_download"].as_str().unwrap_or_default().to_string();
        Ok(())
    }

    /// Stops the hub (an in-process node shuts down; a process gets SIGTERM, then is waited
    /// for).
    pub fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop();
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts of this `moat serve` process listen for MQTT over TLS on the address it has
    /// now, as a hub behind a fixed address does: devices reconnect to where they were.
    pub fn keep_mqtt_address(&mut self) {
        self.pinned_mqtt = Some(self.mqtt_tls.clone());
    }

    /// The `moat serve` process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills a `moat serve` process with SIGKILL (no shutdown, no final writes), as a
    /// power cut would.
    pub fn kill(&mut self) {
        let mut child = self
            .child
            .take()
            .expect("kill: a moat serve process (start_with)");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The hub's log so far (a process's; an in-process hub logs into the test's output).
    pub fn log(&self) -> String {
        if self.in_process {
            return "(in-process hub: its log is in the test's output)".into();
        }
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }

    /// Runs the CLI against this hub.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(MOAT)
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run moat")
    }

    /// Runs the CLI and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "moat {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// Runs the CLI with `--json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// Runs the CLI, requires failure with a one-line error; returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "moat {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        one_line_error(&out)
    }

    /// A path in the test's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA bundle path.
    pub fn bundle(&self) -> PathBuf {
        self.data.join("ca-bundle.pem")
    }

    /// The simulated fleet's MQTT target: this hub's mutual-TLS listener, `version`, clean
    /// sessions.
    pub fn fleet_target(
        &self,
        version: moat_broker::codec::Version,
    ) -> moat_device::load::client::Target {
        moat_device::load::client::Target {
            addr: self.mqtt_tls.parse().expect("addr"),
            server_name: rustls_pki_types::ServerName::try_from("localhost").expect("name"),
            version,
            keep_alive: 0,
            timeout: std::time::Duration::from_secs(30),
            session_expiry: None,
        }
    }

    /// Starts `mosquitto_sub -i ID` over mutual TLS (this hub's bundle, `cert` and `key`)
    /// with `args` (protocol version, topics, QoS, `-C`/`-W`), and waits until the hub lists
    /// its session, or the client has already ended (a retained message can complete it).
    pub fn mqtt_sub(&self, id: &str, cert: &Path, key: &Path, args: &[&str]) -> Child {
        let mut child = self.mqtt_sub_nowait(id, cert, key, args);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self
            .json(&["session", "list"])
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["client_id"] == id))
            && !matches!(child.try_wait(), Ok(Some(_)))
        {
            assert!(
                Instant::now() < deadline,
                "{id} never connected: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        child
    }

    /// Starts `mosquitto_sub` as [`Self::mqtt_sub`] does, without waiting for it to connect.
    pub fn mqtt_sub_nowait(&self, id: &str, cert: &Path, key: &Path, args: &[&str]) -> Child {
        let (host, port) = self.mqtt_tls.rsplit_once(':').expect("addr");
        Command::new("mosquitto_sub")
            .args(["-h", host, "-p", port, "-i", id])
            .args(args)
            .arg("--cafile")
            .arg(self.bundle())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub")
    }

    /// Runs `mosquitto_pub -i ID` over mutual TLS (this hub's bundle, `cert` and `key`) with
    /// `args` to completion (at most 15 s); returns its output.
    pub fn mqtt_pub(&self, id: &str, cert: &Path, key: &Path, args: &[&str]) -> Output {
        let (host, port) = self.mqtt_tls.rsplit_once(':').expect("addr");
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(["-h", host, "-p", port, "-i", id])
            .args(args)
            .arg("--cafile")
            .arg(self.bundle())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key);
        moat_testkit::process::run_bounded(cmd, Duration::from_secs(15))
    }

    /// Number of devices the hub lists.
    pub fn device_count(&self) -> usize {
        self.json(&["device", "list", "--limit", "1000"])
            .as_array()
            .expect("array")
            .len()
    }
}

/// A `moat_node::Node` on a runtime (and thread) of its own, so that synchronous tests can
/// drive it with real clients.
struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Starts a node with the defaults, its data in `data`, every listener on 127.0.0.1:0
    /// (what `moat serve` would run with the same flags); returns once it is up.
    fn start(data: &Path, configure: Option<Configure>) -> Result<InProcess, String> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        // MOAT_TEST_LOG=debug (a filter) shows in-process nodes' logs in the test's output.
        if let Ok(filter) = std::env::var("MOAT_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let mut cfg = moat_node::Config::loopback(data);
        if let Some(configure) = configure {
            configure(&mut cfg);
        }
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                match moat_node::Node::start(cfg).await {
                    Ok(node) => {
                        let _ = ready.send(Ok(()));
                        let _ = stopped.await;
                        node.shutdown().await;
                    }
                    Err(e) => {
                        let mut why = e.to_string();
                        let mut source = std::error::Error::source(&e);
                        while let Some(s) = source {
                            why.push_str(&format!(": {s}"));
                            source = s.source();
                        }
                        let _ = ready.send(Err(why));
                    }
                }
            });
        });
        match started.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => Ok(InProcess {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(why)) => Err(why),
            Err(e) => Err(format!("the in-process hub did not start: {e}")),
        }
    }

    /// Shuts the node down and waits for it.
    fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shut();
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.node.take();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Checks a failed command printed exactly one line on stderr starting with "error:".
pub fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err:?}");
    assert!(lines[0].starts_with("error:"), "error line: {err:?}");
    lines[0].to_string()
}

/// Whether any file under `dir` contains `needle`.
pub fn grep_dir(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

/// A third-party CA made with openssl (a secure-element vendor).
pub struct Vendor {
    cert: std::path::PathBuf,
    cert_str: String,
    key: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Vendor {
    pub fn new(dir: &std::path::Path, name: &str) -> Vendor {
        let key = dir.join(format!("{name}-ca.key"));
        let cert = dir.join(format!("{name}-ca.pem"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/O={name}/CN={name} Root"),
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            key.to_str().expect("p"),
            "-out",
            cert.to_str().expect("p"),
        ]);
        Vendor {
            cert_str: cert.to_str().expect("p").to_string(),
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    pub fn cert_s(&self) -> &str {
        &self.cert_str
    }

    /// The CA's private key (PEM file).
    pub fn key_path(&self) -> &std::path::Path {
        &self.key
    }

    /// Issues a certificate with CN = `cn`; `-extfile_client` adds clientAuth EKU.
    pub fn issue(&self, dir: &std::path::Path, cn: &str, opts: &[&str]) -> std::path::PathBuf {
        let stem = format!(
            "{}-{cn}",
            self.cert
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("stem")
        );
        let csr = make_csr(dir, &stem, "p256", &[]);
        let out = dir.join(format!("{stem}.pem"));
        let ext = self.dir.join(format!("{stem}.ext"));
        let mut body =
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n".to_string();
        if opts.contains(&"-extfile_client") {
            body.push_str("extendedKeyUsage=clientAuth\n");
        }
        std::fs::write(&ext, body).expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().expect("p"),
            "-CA",
            self.cert.to_str().expect("p"),
            "-CAkey",
            self.key.to_str().expect("p"),
            "-set_serial",
            &format!("0x{:016x}", rand_u64()),
            "-days",
            "10",
            "-subj",
            &format!("/CN={cn}"),
            "-extfile",
            ext.to_str().expect("p"),
            "-out",
            out.to_str().expect("p"),
        ]);
        out
    }

    /// Registers this CA with `hub` as `name` (a fresh registration code, the proof of
    /// possession issued in `dir`), with `extra` `ca register` flags (`--auto-register`).
    pub fn register(&self, hub: &TestHub, dir: &Path, name: &str, extra: &[&str]) {
        let code = hub.ok(&["ca", "registration-code"]).trim().to_string();
        let proof = self.issue(dir, &code, &[]);
        let mut args = vec![
            "ca",
            "register",
            "--cert",
            self.cert_s(),
            "--verification-cert",
            proof.to_str().expect("p"),
            "--name",
            name,
        ];
        args.extend_from_slice(extra);
        hub.ok(&args);
    }
}

/// A firmware release published on a hub: a hub-held signing key (`release`), an image of
/// `payload_len` bytes signed with it, uploaded for a model.
pub struct Release {
    /// The firmware key's public key (PEM), which devices trust.
    pub fw_pub: String,
    /// The hub's update key (PEM), which signs manifests.
    pub update_pem: String,
    /// The image's catalogue id.
    pub fw_id: String,
    /// Its SHA-256 (hex), as the download URL names it.
    pub digest: String,
    /// The signed image (MCUboot format).
    pub image: PathBuf,
}

/// Generates the key, signs `version` with `counter` and uploads it for `model` (files
/// under `dir`).
pub fn publish_release(
    hub: &TestHub,
    dir: &Path,
    model: &str,
    version: &str,
    counter: u32,
    payload_len: usize,
) -> Release {
    let fw_pub = hub.ok(&["fw", "key", "generate", "--name", "release"]);
    let update_pem = hub.ok(&["fw", "update-key"]);
    let app = dir.join("app.bin");
    std::fs::write(
        &app,
        (0..payload_len)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .expect("payload");
    let image = dir.join("app.signed");
    let p = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    hub.ok(&[
        "fw",
        "sign",
        "--key",
        "release",
        "--version",
        version,
        "--security-counter",
        &counter.to_string(),
        &p(&app),
        &p(&image),
    ]);
    let fw = hub.json(&["fw", "upload", &p(&image), "--model", model]);
    Release {
        fw_pub,
        update_pem,
        fw_id: fw["id"].as_str().expect("id").to_owned(),
        digest: fw["digest"].as_str().expect("digest").to_owned(),
        image,
    }
}

/// Creates `count` devices `{prefix}000000…` through the hub's admin API with hub-made keys,
/// their credentials written to `out` as `moat-device fleet` reads them.
pub fn enroll_fleet(hub: &TestHub, out: &Path, count: usize, prefix: &str) {
    let bin = Path::new(MOAT).with_file_name("moat-device");
    assert!(
        bin.exists(),
        "build it first: cargo build -p moat-device ({})",
        bin.display()
    );
    let p = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let done = Command::new(&bin)
        .args(["enroll", "--hub-data-dir", &p(&hub.data), "--count"])
        .arg(count.to_string())
        .args(["--prefix", prefix, "--out", &p(out)])
        .output()
        .expect("moat-device enroll");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() >> 1
}

/// The serial (lowercase hex, no leading zeros) of the TLS server certificate `addr`
/// (`host:port`) serves, as openssl reads it.
pub fn served_serial(addr: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_start_matches("serial=")
        .to_lowercase()
        .trim_start_matches('0')
        .to_string()
}
