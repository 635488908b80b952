//! A NATS server of the test's own (Debian's `nats-server`), on loopback, on a port that
//! stays the same across [`NatsServer::stop`] and [`NatsServer::start`] (nodes reconnect to
//! where it was). Killed on drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `nats-server`.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Whether `nats-server` can be run here. Without it a test skips, or fails when the
    /// `CI` variable is set (`scripts/test` installs it).
    pub fn available() -> bool {
        let found = Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found || std::env::var_os("CI").is_none(),
            "CI is set but nats-server is not installed (scripts/test installs it)"
        );
        if !found {
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
        }
        found
    }

    /// Starts a server on a free loopback port; returns once it accepts connections.
    pub fn start_new() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = NatsServer {
            port,
            child: None,
            log: dir.path().join("nats.log"),
            _dir: dir,
        };
        s.start();
        s
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "nats-server is running already");
        let log = std::fs::File::create(&self.log).expect("log");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (killed: clients see the connection drop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
