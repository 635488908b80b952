//! HAProxy (Debian's) as the TCP load balancer in front of several hub nodes: one frontend
//! on a free loopback port, round-robin over the backends, quick health checks, and a
//! retry on another backend when a connection to one fails (a node that died). Killed on
//! drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running HAProxy.
#[derive(Debug)]
pub struct Haproxy {
    port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The haproxy binary (Debian installs it in /usr/sbin).
fn binary() -> Option<String> {
    ["haproxy", "/usr/sbin/haproxy"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_owned)
}

impl Haproxy {
    /// Whether HAProxy can be run here. Without it a test skips, or fails when the `CI`
    /// variable is set (`scripts/test` installs it).
    pub fn available() -> bool {
        let found = binary().is_some();
        assert!(
            found || std::env::var_os("CI").is_none(),
            "CI is set but haproxy is not installed (scripts/test installs it)"
        );
        if !found {
            eprintln!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
        }
        found
    }

    /// Balances TCP connections on a free loopback port over `backends` (`host:port`).
    pub fn start(backends: &[String]) -> Haproxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = String::from(
            "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 2s\n  \
             timeout client 1h\n  timeout server 1h\n  retries 3\n  option redispatch\n",
        );
        cfg.push_str(&format!(
            "frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\nbackend be\n  balance roundrobin\n"
        ));
        for (i, b) in backends.iter().enumerate() {
            cfg.push_str(&format!(
                "  server n{i} {b} check inter 200ms fall 1 rise 1\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        let child = Command::new(binary().expect("haproxy installed"))
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("haproxy");
        let h = Haproxy {
            port,
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not start: {}",
                std::fs::read_to_string(&h.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        h
    }

    /// The frontend's port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
