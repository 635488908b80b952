//! The hub's log as an operator's log shipper sees it: with `[log] format = "json"` every
//! line on stderr is one JSON object (timestamp, level, target, message, fields), every line
//! logged while handling an HTTP request carries that request's `request_id` (the one the
//! `x-request-id` response header shows), and every line logged for an MQTT connection —
//! accepted, refused at CONNECT, or refused at the TLS handshake — carries the connection's
//! own `conn_id`. In text format the same ids are in each line's span prefix.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// curl against the admin listener: (status, `x-request-id` header).
fn request(hub: &TestHub, token: &str, path: &str) -> (u16, String) {
    let headers = hub.path(&format!("headers-{}", rand_u64()));
    let (ok, status) = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            s(&hub.bundle()),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-D",
            s(&headers),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}{path}", hub.admin_url),
        ],
    );
    assert!(ok, "curl {path}: {status}");
    let headers = std::fs::read_to_string(&headers).expect("headers");
    let id = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-request-id")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no x-request-id on {path}: {headers}"));
    (status.trim().parse().expect("status"), id)
}

/// mosquitto_pub once over the TLS listener (QoS 1: success means PUBACK); `cred` adds
/// `--cert`/`--key` flags, `extra` more. Returns whether it got through.
fn publish(hub: &TestHub, client_id: &str, cred: Option<&Path>, extra: &[&str]) -> bool {
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("addr");
    let mut cmd = Command::new("timeout");
    cmd.args(["15", "mosquitto_pub", "-h", host, "-p", port, "-q", "1"])
        .args(["-i", client_id, "-t", &format!("devices/{client_id}/t")])
        .args(["-m", "hello", "--cafile", s(&hub.bundle())])
        .args(extra);
    if let Some(dir) = cred {
        cmd.arg("--cert")
            .arg(dir.join(format!("{client_id}.crt")))
            .arg("--key")
            .arg(dir.join(format!("{client_id}.key")));
    }
    cmd.output().expect("mosquitto_pub runs").status.success()
}

/// Lines of `log` whose `message` is `message`.
fn with_message<'a>(log: &'a [Value], message: &str) -> Vec<&'a Value> {
    log.iter().filter(|l| l["message"] == message).collect()
}

fn in_span(line: &Value, name: &str) -> bool {
    line["spans"]
        .as_array()
        .is_some_and(|s| s.iter().any(|n| n == name))
}

#[test]
fn json_lines_carry_the_request_id_and_the_connection_id() {
    let conf = tempfile::tempdir().expect("tempdir");
    let file = conf.path().join("moat.toml");
    std::fs::write(&file, "[log]\nformat = \"json\"\nlevel = \"debug\"\n").expect("config");
    // The harness sets RUST_LOG (which wins over [log] level); debug for every crate, so
    // the dependencies' lines (rustls, hyper, sqlx, through `log` too) must be JSON as well.
    let mut hub = TestHub::start_with(&["--config", s(&file)], &[("RUST_LOG", "debug")]);
    let token = std::fs::read_to_string(hub.data.join("admin.token")).expect("token");
    let token = token.trim();
    let dir = hub.path("creds");
    hub.ok(&["device", "create", "d1", "--out", s(&dir)]);
    hub.ok(&["device", "create", "d2", "--out", s(&dir)]);
    hub.ok(&["device", "revoke", "d2"]);

    // HTTP: an accepted request, a refused one (wrong token), and EST on the same listener.
    let (status, ok_id) = request(&hub, token, "/api/v1/devices");
    assert_eq!(status, 200);
    let (status, refused_id) = request(&hub, "moat_adm_wrong", "/api/v1/devices");
    assert_eq!(status, 401);
    let (status, est_id) = request(&hub, "", "/.well-known/est/cacerts");
    assert_eq!(status, 200);
    let ids = BTreeSet::from([&ok_id, &refused_id, &est_id]);
    assert_eq!(ids.len(), 3, "one id per request");

    // MQTT: accepted twice over mutual TLS, refused at CONNECT (server TLS, a token that is
    // not one), refused at the handshake (revoked certificate).
    assert!(publish(&hub, "d1", Some(&dir), &[]), "d1 connects");
    assert!(publish(&hub, "d1", Some(&dir), &[]), "d1 connects again");
    let wrong = ["-u", "anon", "-P", "wrong"];
    assert!(
        !publish(&hub, "anon", None, &wrong),
        "a wrong token: refused"
    );
    assert!(!publish(&hub, "d2", Some(&dir), &[]), "revoked: refused");
    // Everything logged up to the shutdown.
    hub.stop();

    let text = hub.log();
    let mut log = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        let ts = v["timestamp"].as_str().unwrap_or_default();
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("timestamp {ts:?} ({e}): {line}"));
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "level: {line}"
        );
        assert!(v["target"].is_string(), "target: {line}");
        let fields = v.as_object().expect("object").len();
        assert!(
            v["message"].is_string() || fields > 3,
            "a message or fields: {line}"
        );
        log.push(v);
    }
    assert!(log.len() > 50, "debug output expected: {text}");

    // Every line inside a request span has a request id, inside a connection a conn_id.
    for l in &log {
        if in_span(l, "request") {
            let id = l["request_id"].as_str().unwrap_or_default();
            assert!(
                id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "request_id: {l}"
            );
        }
        if in_span(l, "mqtt") {
            assert!(
                l["conn_id"].as_u64().is_some_and(|id| id > 0),
                "conn_id: {l}"
            );
        }
    }

    // The lines of one request: its outcome, and why it was refused, under the header's id.
    let of = |id: &str| -> Vec<&Value> { log.iter().filter(|l| l["request_id"] == id).collect() };
    let refused = of(&refused_id);
    assert!(
        refused
            .iter()
            .any(|l| l["message"] == "authentication failed"),
        "the refusal is logged under the request's id: {refused:?}"
    );
    for (id, status, path) in [
        (&ok_id, 200, "/api/v1/devices"),
        (&refused_id, 401, "/api/v1/devices"),
        (&est_id, 200, "/.well-known/est/cacerts"),
    ] {
        let done: Vec<_> = with_message(&log, "request done")
            .into_iter()
            .filter(|l| l["request_id"] == id.as_str())
            .collect();
        assert_eq!(done.len(), 1, "{id}: {done:?}");
        assert_eq!(done[0]["status"], status, "{}", done[0]);
        assert_eq!(done[0]["path"], path, "{}", done[0]);
        assert_eq!(done[0]["method"], "GET", "{}", done[0]);
    }
    for l in with_message(&log, "admin authentication failed") {
        assert!(l["request_id"].is_string(), "{l}");
    }

    // Connections: each accepted one and each refusal under its own conn_id.
    let conn = |l: &Value| {
        l["conn_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("conn_id: {l}"))
    };
    let accepted: Vec<u64> = with_message(&log, "connected")
        .into_iter()
        .filter(|l| l["client_id"] == "d1")
        .map(|l| {
            assert_eq!(l["identity"], "d1", "{l}");
            assert_eq!(l["mode"], "mtls", "{l}");
            conn(l)
        })
        .collect();
    assert_eq!(accepted.len(), 2, "two accepted connections");
    let refused_connect: Vec<u64> = with_message(&log, "MQTT connection refused")
        .into_iter()
        .filter(|l| l["claimed"] == "anon")
        .map(conn)
        .collect();
    assert_eq!(refused_connect.len(), 1, "one refused CONNECT");
    let broker_refusal: Vec<u64> = with_message(&log, "CONNECT refused")
        .into_iter()
        .map(conn)
        .collect();
    assert_eq!(
        broker_refusal, refused_connect,
        "the authority's and the broker's lines about one refusal share its id"
    );
    let handshake: Vec<u64> = with_message(&log, "TLS handshake failed")
        .into_iter()
        .filter(|l| in_span(l, "mqtt"))
        .map(conn)
        .collect();
    assert_eq!(handshake.len(), 1, "one refused handshake: {handshake:?}");
    let all: BTreeSet<u64> = accepted
        .iter()
        .chain(&refused_connect)
        .chain(&handshake)
        .copied()
        .collect();
    assert_eq!(all.len(), 4, "four connections, four ids: {all:?}");
    // And everything logged for the first accepted connection says so.
    let first: Vec<_> = log.iter().filter(|l| l["conn_id"] == accepted[0]).collect();
    assert!(
        first
            .iter()
            .all(|l| in_span(l, "mqtt") && l["peer"].is_string()),
        "{first:?}"
    );
}

#[test]
fn text_lines_show_the_ids_in_their_span_prefix() {
    let mut hub = TestHub::start_with(
        &[],
        &[("RUST_LOG", "info,moat_api=debug,moat_broker=debug")],
    );
    let dir = hub.path("creds");
    hub.ok(&["device", "create", "t1", "--out", s(&dir)]);
    assert!(publish(&hub, "t1", Some(&dir), &[]), "t1 connects");
    hub.stop();
    let text = hub.log();
    let connected = text
        .lines()
        .find(|l| l.contains("connected client_id=t1"))
        .unwrap_or_else(|| panic!("no connected line: {text}"));
    assert!(
        connected.contains("mqtt{conn_id=") && connected.contains("identity=\"t1\""),
        "{connected}"
    );
    let done = text
        .lines()
        .find(|l| l.contains("request done") && l.contains("path=/api/v1/devices"))
        .unwrap_or_else(|| panic!("no request line: {text}"));
    assert!(done.contains("request{request_id="), "{done}");
    assert!(
        serde_json::from_str::<Value>(done).is_err(),
        "text, not JSON: {done}"
    );
}
