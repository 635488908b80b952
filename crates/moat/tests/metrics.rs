//! `/metrics`, `/healthz`, `/readyz` on the metrics listener: the exposition parses with the
//! Prometheus project's own parser (Python `prometheus_client`, OpenMetrics) and the figures
//! move when devices connect, are created and are revoked, and as a firmware campaign's
//! devices update.

mod common;

use common::*;
use moat_device::fleet::{FleetConfig, FleetStats};
use moat_device::load::tls::{KeyExchange, PinningVerifier, provider};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
    assert!(value(&m, "moat_tls_handshakes_total{outcome=\"failed\"}") >= 1.0);
    assert!(value(&m, "moat_tls_handshakes_total{outcome=\"ok\"}") >= 2.0);
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

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Polls `/metrics` until `done` holds (bounded); returns the last scrape.
fn wait_until(
    hub: &TestHub,
    limit: Duration,
    what: &str,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + limit;
    loop {
        let m = scrape(hub);
        if done(&m) {
            return m;
        }
        let progress: Vec<_> = m
            .iter()
            .filter(|(k, _)| k.starts_with("moat_campaign_devices"))
            .collect();
        assert!(Instant::now() < deadline, "{what}: {progress:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `moat_campaign_devices` follows a campaign: its first wave notified and its second pending
/// while no device is connected; then, once two simulated devices update, two confirmed and
/// the second wave's device (never connected) notified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_progress_follows_a_fleet_update() {
    let conf = tempfile::tempdir().expect("tempdir");
    let file = conf.path().join("moat.toml");
    std::fs::write(&file, "[metrics]\ncampaign_refresh = \"1s\"\n").expect("config");
    let hub = tokio::task::block_in_place(|| TestHub::start_with(&["--config", s(&file)], &[]));
    let dir = hub.path("fleet");
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).expect("dir");
    let ids = ["c-0", "c-1", "c-2"];
    let (fw_pub, update_pem, fw_id) = tokio::task::block_in_place(|| {
        for id in ids {
            hub.ok(&["device", "create", id, "--out", s(&creds)]);
        }
        let r = publish_release(&hub, &dir, "sensor", "1.1.0", 2, 65_536);
        (r.fw_pub, r.update_pem, r.fw_id)
    });

    // Waves in id order: c-0 and c-1, then c-2. Nobody is connected yet.
    let campaign = tokio::task::block_in_place(|| {
        hub.json(&[
            "campaign",
            "create",
            "--firmware",
            &fw_id,
            "--target",
            &format!("devices:{}", ids.join(",")),
            "--waves",
            "2",
            "--success-threshold",
            "100%",
        ])
    });
    let id = campaign["id"].as_str().expect("id").to_owned();
    let key = |state: &str| format!("moat_campaign_devices{{campaign=\"{id}\",state=\"{state}\"}}");
    let m = tokio::task::block_in_place(|| {
        wait_until(&hub, Duration::from_secs(10), "wave 1 notified", |m| {
            m.get(&key("notified")) == Some(&2.0)
        })
    });
    assert_eq!(value(&m, &key("pending")), 1.0, "wave 2 waits");
    assert!(!m.contains_key(&key("confirmed")), "{m:?}");

    // Two devices come online, download, install, boot and confirm.
    let provider = provider(KeyExchange::X25519);
    let verifier =
        Arc::new(PinningVerifier::from_ca_file(&hub.bundle(), provider.clone()).expect("verifier"));
    let online: Vec<String> = ids[..2].iter().map(|s| s.to_string()).collect();
    let devices =
        moat_device::fleet::load_devices(&creds, &online, &provider, &verifier).expect("devices");
    let cfg = Arc::new(FleetConfig {
        target: hub.fleet_target(moat_broker::codec::Version::V311),
        download_roots_pem: std::fs::read(hub.bundle()).expect("bundle"),
        model: "sensor".into(),
        update_key: moat_ota_proto::UpdateKey::from_pem(&update_pem).expect("update key"),
        firmware_keys: vec![moat_image::TrustedKey::from_pem(fw_pub.as_bytes()).expect("fw key")],
        factory_counter: 1,
        slot_len: 256 * 1024,
        download_attempts: 3,
        stop_after_updates: 0,
    });
    let stats = Arc::new(FleetStats::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let fleet = tokio::spawn(moat_device::fleet::run(
        cfg,
        devices,
        stats.clone(),
        stop.clone(),
    ));
    let m = tokio::task::block_in_place(|| {
        wait_until(&hub, Duration::from_secs(60), "the fleet confirms", |m| {
            m.get(&key("confirmed")) == Some(&2.0) && m.get(&key("notified")) == Some(&1.0)
        })
    });
    assert!(
        !m.contains_key(&key("pending")),
        "wave 2 started, nobody pending: {m:?}"
    );
    assert_eq!(
        stats.confirmed.load(Ordering::Relaxed),
        2,
        "{}",
        stats.to_json()
    );
    let shown = tokio::task::block_in_place(|| hub.json(&["campaign", "show", &id]));
    assert_eq!(
        shown["campaign"]["state"], "running",
        "c-2 has not confirmed: {shown}"
    );
    stop.cancel();
    let _ = fleet.await;
}
