//! `/metrics`, `/healthz`, `/readyz` on the metrics listener: the exposition parses with the
//! Prometheus project's own parser (Python `prometheus_client`, OpenMetrics) and the figures
//! move when devices connect, are created and are revoked.

mod common;

use common::*;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every sample of `/metrics`, keyed `name{label="value",…}` (labels sorted), parsed by
/// `prometheus_client.openmetrics.parser`.
fn scrape(hub: &TestHub) -> HashMap<String, f64> {
    let script = r#"
import sys, json, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
resp = urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=10)
ctype = resp.headers.get("Content-Type")
assert ctype.startswith("application/openmetrics-text"), ctype
out = {}
for fam in text_string_to_metric_families(resp.read().decode()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let o = Command::new("python3")
        .args(["-c", script, &hub.metrics_url])
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "the exposition must parse (pip install prometheus-client): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("json")
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("{key} missing from /metrics: {:?}", m.keys()))
}

/// Polls `/metrics` until `key` reaches `want` (bounded).
fn wait_for(hub: &TestHub, key: &str, want: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(hub);
        if m.get(key).is_some_and(|v| *v >= want) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never reached {want}: {:?}",
            m.get(key)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn subscriber(hub: &TestHub, dir: &std::path::Path, id: &str) -> Child {
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("addr");
    Command::new("mosquitto_sub")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-i",
            id,
            "-t",
            &format!("devices/{id}/#"),
        ])
        .arg("--cafile")
        .arg(hub.bundle())
        .arg("--cert")
        .arg(dir.join(format!("{id}.crt")))
        .arg("--key")
        .arg(dir.join(format!("{id}.key")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub runs")
}

#[test]
fn metrics_parse_and_follow_connections_and_revocations() {
    let hub = TestHub::start();
    for path in ["/healthz", "/readyz"] {
        let (ok, out) = run(
            "curl",
            &[
                "-sS",
                "-f",
                "--max-time",
                "10",
                &format!("{}{path}", hub.metrics_url),
            ],
        );
        assert!(ok, "{path}: {out}");
    }
    let before = scrape(&hub);
    assert_eq!(
        value(&before, "moat_mqtt_connected_clients{mode=\"mtls\"}"),
        0.0
    );
    assert_eq!(
        value(
            &before,
            "moat_tls_client_certificates_refused_total{reason=\"revoked\"}"
        ),
        0.0
    );

    let dir = hub.path("creds");
    let o = dir.to_str().expect("p");
    hub.ok(&["device", "create", "m1", "--out", o]);
    hub.ok(&["device", "create", "m2", "--out", o]);
    let m = wait_for(&hub, "moat_hub_events_total{event=\"device_created\"}", 2.0);
    assert_eq!(
        value(&m, "moat_hub_events_total{event=\"device_created\"}"),
        2.0
    );

    // Two devices connected over mutual TLS.
    let mut subs = [subscriber(&hub, &dir, "m1"), subscriber(&hub, &dir, "m2")];
    let m = wait_for(&hub, "moat_mqtt_connected_clients{mode=\"mtls\"}", 2.0);
    assert!(value(&m, "moat_mqtt_connects_total{outcome=\"accepted\"}") >= 2.0);

    // A revocation: the event, the revoked set, the session gone, and the next handshake
    // with that certificate counted as refused for being revoked.
    hub.ok(&["device", "revoke", "m1"]);
    let m = wait_for(&hub, "moat_hub_events_total{event=\"device_revoked\"}", 1.0);
    assert!(value(&m, "moat_revoked_certificates{}") >= 1.0);
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("addr");
    let (ok, _) = run(
        "timeout",
        &[
            "10",
            "mosquitto_pub",
            "-h",
            host,
            "-p",
            port,
            "-i",
            "m1",
            "-t",
            "devices/m1/x",
            "-m",
            "x",
            "--cafile",
            hub.bundle().to_str().expect("p"),
            "--cert",
            dir.join("m1.crt").to_str().expect("p"),
            "--key",
            dir.join("m1.key").to_str().expect("p"),
        ],
    );
    assert!(!ok, "a revoked certificate must not connect");
    let m = wait_for(
        &hub,
        "moat_tls_client_certificates_refused_total{reason=\"revoked\"}",
        1.0,
    );
    let m = if value(&m, "moat_mqtt_connected_clients{mode=\"mtls\"}") > 1.0 {
        std::thread::sleep(Duration::from_secs(1));
        scrape(&hub)
    } else {
        m
    };
    assert_eq!(value(&m, "moat_mqtt_connected_clients{mode=\"mtls\"}"), 1.0);
    for s in &mut subs {
        let _ = s.kill();
        let _ = s.wait();
    }
}
