//! A TLS client with a client certificate that can resume its session: `tls_peer.py` (next
//! to this crate's Cargo.toml; Python's ssl module, i.e. OpenSSL), kept running between attempts so the test can change
//! the hub's state (revoke, suspend, let the certificate expire) between a full handshake and
//! a resumed one.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// What one attempt got.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Answer {
    /// The TLS session was resumed.
    pub resumed: bool,
    /// The TLS error, when the hub refused at the handshake (an alert).
    pub alert: Option<String>,
    /// MQTT 3.1.1 CONNACK return code.
    pub connack: Option<u8>,
    /// HTTP status.
    pub status: Option<u16>,
    /// HTTP body.
    pub body: Option<String>,
}

impl Answer {
    /// The `detail` of an HTTP problem document, or "".
    pub fn detail(&self) -> String {
        self.body
            .as_deref()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// What the peer speaks once the TLS session is up.
#[derive(Clone, Copy, Debug)]
pub enum Proto<'a> {
    /// MQTT 3.1.1 CONNECT with this client id.
    Mqtt {
        /// The client id.
        client_id: &'a str,
    },
    /// One HTTP/1.1 request.
    Http {
        /// GET, POST, …
        method: &'a str,
        /// Path and query.
        path: &'a str,
        /// Content-Type of the body.
        content_type: &'a str,
        /// File holding the body.
        body: &'a Path,
    },
}

/// A running peer; killed on drop.
#[derive(Debug)]
pub struct TlsPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for TlsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsPeer {
    /// A peer for `addr` (`host:port`) trusting `ca`, presenting `cert` with `key`.
    pub fn new(addr: &str, ca: &Path, cert: &Path, key: &Path, proto: Proto<'_>) -> TlsPeer {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tls_peer.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).args([host, port]).args([ca, cert, key]);
        match proto {
            Proto::Mqtt { client_id } => cmd.args(["mqtt", client_id]),
            Proto::Http {
                method,
                path,
                content_type,
                body,
            } => cmd.args(["http", method, path, content_type]).arg(body),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        TlsPeer {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, cmd: &str) -> Answer {
        writeln!(self.stdin, "{cmd}").expect("write to tls_peer.py");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read tls_peer.py");
        serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("tls_peer.py answered {line:?}: {e}"))
    }

    /// A new connection with a full handshake (its session is kept for [`Self::resume`]).
    pub fn full(&mut self) -> Answer {
        self.ask("full")
    }

    /// A new connection resuming the session of the last full handshake.
    pub fn resume(&mut self) -> Answer {
        self.ask("resume")
    }
}
