//! The MQTT hub's durable state across a restart of `moat serve` (SIGTERM, then a new
//! process on the same data dir), with mosquitto's clients over mutual TLS: a retained
//! message, and a QoS 1 message queued for an offline persistent session.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for one client run or one wait.
const LIMIT: Duration = Duration::from_secs(15);

/// A device made with `moat device create`, with its certificate and key files.
struct Device {
    id: String,
    cert: PathBuf,
    key: PathBuf,
}

fn device(hub: &TestHub, id: &str) -> Device {
    let out = hub.path("creds");
    hub.ok(&["device", "create", id, "--out", out.to_str().expect("path")]);
    Device {
        id: id.to_owned(),
        cert: out.join(format!("{id}.crt")),
        key: out.join(format!("{id}.key")),
    }
}

/// `tool` (mosquitto_pub or mosquitto_sub) connected as `dev` to the hub's TLS listener,
/// MQTT 5, client id = device id.
fn client(hub: &TestHub, tool: &str, dev: &Device) -> Command {
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("host:port");
    let mut cmd = Command::new(tool);
    cmd.args(["-h", host, "-p", port, "-V", "mqttv5", "-i", &dev.id])
        .arg("--cafile")
        .arg(hub.bundle())
        .arg("--cert")
        .arg(&dev.cert)
        .arg("--key")
        .arg(&dev.key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stops the hub with SIGTERM (its clean shutdown path) and starts it again on the same
/// data dir and registry.
fn restart(hub: &mut TestHub) {
    hub.stop();
    hub.spawn()
        .unwrap_or_else(|log| panic!("hub restarts: {log}"));
}

/// Waits until `cond` holds, at most [`LIMIT`].
fn wait_until(hub: &TestHub, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: {}", hub.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn live_session(hub: &TestHub, client_id: &str) -> bool {
    hub.json(&["session", "list"])
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s["client_id"] == client_id))
}

#[test]
fn retained_message_survives_a_restart() {
    let mut hub = TestHub::start();
    let sensor = device(&hub, "sensor");
    // Every byte value: NUL, newline and invalid UTF-8 must come back as they went in.
    let payload: Vec<u8> = (0..=255u8).rev().collect();
    let file = hub.path("payload.bin");
    std::fs::write(&file, &payload).expect("write payload");
    let mut publish = client(&hub, "mosquitto_pub", &sensor);
    publish
        .args(["-q", "1", "-r", "-t", "devices/sensor/state", "-f"])
        .arg(&file);
    let out = run_bounded(publish, LIMIT);
    assert!(out.status.success(), "retained publish: {}", text(&out));

    restart(&mut hub);

    let mut subscribe = client(&hub, "mosquitto_sub", &sensor);
    subscribe.args([
        "-q",
        "1",
        "-t",
        "devices/sensor/state",
        "-C",
        "1",
        "-W",
        "10",
        "-F",
        "%r %q %t %x",
    ]);
    let out = run_bounded(subscribe, LIMIT);
    assert!(
        out.status.success(),
        "no retained message after the restart: {}\n{}",
        text(&out),
        hub.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        format!("1 1 devices/sensor/state {}", hex(&payload)),
        "retained flag, QoS, topic and payload bytes"
    );
}

/// The default ACL lets only `inbox` itself publish under `devices/inbox/`, and its client
/// id is its identity, so no other client can publish to its offline session. The message
/// queued while it is offline is therefore its own will: the hub publishes it (QoS 1) when
/// the subscriber's connection dies without DISCONNECT, after the session went offline.
#[test]
fn queued_message_of_a_persistent_session_survives_a_restart() {
    let mut hub = TestHub::start();
    let inbox = device(&hub, "inbox");
    let persistent = ["-c", "-x", "3600", "-q", "1", "-t", "devices/inbox/msg"];

    // Subscribe (SUBACK awaited, clean DISCONNECT): the session stays, offline.
    let mut first = client(&hub, "mosquitto_sub", &inbox);
    first.args(persistent).arg("-E");
    let out = run_bounded(first, LIMIT);
    assert!(out.status.success(), "persistent subscribe: {}", text(&out));
    // Resume it with a will, then die without DISCONNECT: the session goes offline, then
    // the hub publishes the will into it.
    let mut second = client(&hub, "mosquitto_sub", &inbox);
    second.args(persistent).args([
        "--will-topic",
        "devices/inbox/msg",
        "--will-qos",
        "1",
        "--will-payload",
        "sent while offline",
    ]);
    let mut sub = second.spawn().expect("mosquitto_sub");
    wait_until(&hub, "resumed session never live", || {
        live_session(&hub, "inbox")
    });
    let _ = sub.kill();
    let _ = sub.wait();
    wait_until(&hub, "session still live after the client died", || {
        !live_session(&hub, "inbox")
    });

    restart(&mut hub);

    let mut again = client(&hub, "mosquitto_sub", &inbox);
    again
        .args(persistent)
        .args(["-C", "1", "-W", "10", "-F", "%q %r %t %p"]);
    let out = run_bounded(again, LIMIT);
    assert!(
        out.status.success(),
        "queued message not delivered after the restart: {}\n{}",
        text(&out),
        hub.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "1 0 devices/inbox/msg sent while offline"
    );
}
