//! paho-mqtt as a real MQTT peer: `paho_hub.py` (in this crate) connects once and reports
//! (`attempt`), runs a whole flow (`flow`), or is driven line by line (`client`, [`Paho`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The script (`paho_hub.py`); see its docstring for the modes.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("paho_hub.py")
}

/// One paho-mqtt connection driven line by line (`paho_hub.py client`), for tests that act
/// between packets: a real MQTT peer whose every answer (CONNACK, SUBACK, PUBACK reason,
/// connection loss) the test reads as a line.
#[derive(Debug)]
pub struct Paho {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    /// Lines read while waiting for another.
    backlog: std::collections::VecDeque<String>,
}

impl Paho {
    /// Connects `id` to `addr` (`host:port`, plain TCP) with MQTT `version` ("5" or "311")
    /// and a username/password; `persistent`: clean start 0 (v5 session expiry 1 h).
    /// Returns the client and its first line ("connack N" or "closed: …").
    pub fn connect(
        addr: &str,
        version: &str,
        id: &str,
        login: (&str, &str),
        persistent: bool,
    ) -> (Paho, String) {
        let mut args = vec!["-u", login.0, "-P", login.1];
        if persistent {
            args.push("--persistent");
        }
        Self::connect_with(addr, version, id, &args)
    }

    /// Connects `id` to `addr` (`host:port`, the hub's TLS listener) with MQTT `version`,
    /// trusting `cafile` and presenting the client certificate `cert` with its `key`.
    pub fn connect_tls(
        addr: &str,
        version: &str,
        id: &str,
        cafile: &Path,
        cert: &Path,
        key: &Path,
    ) -> (Paho, String) {
        let p = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let (ca, c, k) = (p(cafile), p(cert), p(key));
        Self::connect_with(
            addr,
            version,
            id,
            &["--cafile", &ca, "--cert", &c, "--key", &k],
        )
    }

    /// As [`Paho::connect_tls`], with clean start 0 (v5 session expiry 1 h): the hub keeps
    /// the subscriptions and queues messages while the client is away.
    pub fn connect_tls_persistent(
        addr: &str,
        version: &str,
        id: &str,
        cafile: &Path,
        cert: &Path,
        key: &Path,
    ) -> (Paho, String) {
        let p = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let (ca, c, k) = (p(cafile), p(cert), p(key));
        Self::connect_with(
            addr,
            version,
            id,
            &["--cafile", &ca, "--cert", &c, "--key", &k, "--persistent"],
        )
    }

    /// Connects with `paho_hub.py client HOST PORT VERSION ID` and `args`.
    fn connect_with(addr: &str, version: &str, id: &str, args: &[&str]) -> (Paho, String) {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let script = script();
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["client", host, port, version, id])
            .args(args);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (pip install paho-mqtt)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Paho {
            child,
            stdin,
            lines,
            backlog: Default::default(),
        };
        let first = p
            .next_line(
                |l| l.starts_with("connack") || l.starts_with("closed"),
                Duration::from_secs(15),
            )
            .expect("paho_hub.py client printed nothing");
        (p, first)
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").expect("paho_hub.py client stdin");
        self.stdin.flush().expect("flush");
    }

    /// The next line that `want` accepts within `within` (other lines are kept for later).
    pub fn next_line(&mut self, want: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        if let Some(i) = self.backlog.iter().position(|l| want(l)) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return Some(l),
                Ok(l) => self.backlog.push_back(l),
                Err(_) => return None,
            }
        }
    }

    /// Publishes; returns the message id paho gave it.
    pub fn publish(&mut self, topic: &str, payload: &str, qos: u8) -> u32 {
        self.send(&format!("pub {topic} {payload} {qos}"));
        let l = self
            .next_line(|l| l.starts_with("sent "), Duration::from_secs(10))
            .expect("sent");
        l[5..].parse().expect("mid")
    }

    /// Publishes `payload` (any bytes) with v5 user properties; returns the message id.
    pub fn publish_bytes(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        user: &[(&str, &str)],
    ) -> u32 {
        let mut line = format!("pubx {topic} {} {qos}", to_hex(payload));
        for (k, v) in user {
            assert!(
                !k.contains(['=', ' ']) && !v.contains(' '),
                "user property {k}={v}: no spaces, no '=' in the name"
            );
            line.push_str(&format!(" {k}={v}"));
        }
        self.send(&line);
        let l = self
            .next_line(|l| l.starts_with("sent "), Duration::from_secs(10))
            .expect("sent");
        l[5..].parse().expect("mid")
    }

    /// The messages received so far, with their payload bytes and v5 user properties.
    pub fn raw_messages(&mut self) -> Vec<RawMessage> {
        self.send("msgsx");
        let mut out = Vec::new();
        loop {
            let l = self
                .next_line(
                    |l| l.starts_with("msgx ") || l == "end",
                    Duration::from_secs(10),
                )
                .expect("msgsx");
            if l == "end" {
                return out;
            }
            let mut f = l[5..].splitn(3, ' ');
            let (t, p, props) = (f.next(), f.next(), f.next());
            let user: Vec<(String, String)> =
                serde_json::from_str(props.unwrap_or("[]")).expect("user properties (JSON)");
            out.push(RawMessage {
                topic: t.unwrap_or_default().to_string(),
                payload: from_hex(p.unwrap_or_default()),
                user,
            });
        }
    }

    /// The reason code of message `mid`'s acknowledgement, if it comes within `within`.
    pub fn ack(&mut self, mid: u32, within: Duration) -> Option<u8> {
        let prefix = format!("ack {mid} ");
        let l = self.next_line(|l| l.starts_with(&prefix), within)?;
        Some(l[prefix.len()..].parse().expect("reason code"))
    }

    /// The messages received so far: (topic, payload, dup).
    pub fn messages(&mut self) -> Vec<(String, String, bool)> {
        self.send("msgs");
        let mut out = Vec::new();
        loop {
            let l = self
                .next_line(
                    |l| l.starts_with("msg ") || l == "end",
                    Duration::from_secs(10),
                )
                .expect("msgs");
            if l == "end" {
                return out;
            }
            let mut f = l[4..].splitn(3, ' ');
            let (t, p, d) = (f.next(), f.next(), f.next());
            out.push((
                t.unwrap_or_default().to_string(),
                p.unwrap_or_default().to_string(),
                d == Some("1"),
            ));
        }
    }

    /// Disconnects and waits for the process.
    pub fn quit(mut self) {
        self.send("quit");
        let _ = self.child.wait();
    }
}

/// A message as [`Paho::raw_messages`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its v5 user properties, in order.
    pub user: Vec<(String, String)>,
}

impl RawMessage {
    /// The value of user property `name`, if it has one.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.user
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

impl Drop for Paho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
