//! The security posture audit end to end: each check's condition is created on a real hub
//! (with mosquitto clients and openssl where it takes a peer), then `moat audit posture` and
//! the `moat_posture_findings` metric show the finding.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The findings of `check` in a `moat --json audit posture` report.
fn findings<'a>(report: &'a Value, check: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

fn has(report: &Value, check: &str, subject: &str, severity: &str) -> bool {
    findings(report, check).iter().any(|f| {
        f["subject"].as_str().is_some_and(|s| s.contains(subject)) && f["severity"] == severity
    })
}

fn mosquitto(hub: &TestHub, dir: &Path, id: &str, bind: &str) -> Command {
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("addr");
    let mut c = Command::new("timeout");
    c.args([
        "10",
        "mosquitto_sub",
        "-h",
        host,
        "-p",
        port,
        "-A",
        bind,
        "-i",
        id,
    ])
    .args(["-t", &format!("devices/{id}/#"), "-W", "3"])
    .arg("--cafile")
    .arg(hub.bundle())
    .arg("--cert")
    .arg(dir.join(format!("{id}.crt")))
    .arg("--key")
    .arg(dir.join(format!("{id}.key")))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

#[test]
fn every_posture_check_finds_its_condition() {
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg_dir.path().join("moat.toml");
    std::fs::write(
        &cfg,
        "[ca]\ndevice_cert_validity = \"5d\"\n\
         [posture]\ninterval = \"1s\"\nmin_security_counter = { \"Sensor v2\" = 3 }\n\
         never_seen_after = \"0s\"\n",
    )
    .expect("config");
    let hub = TestHub::start_with(&["--config", cfg.to_str().expect("p")], &[]);
    let dir = hub.path("creds");
    let o = dir.to_str().expect("p");

    // A clean hub: its own CAs are strong and far from expiry; nothing else to find.
    let clean = hub.json(&["audit", "posture"]);
    assert!(
        clean["findings"].as_array().expect("a").is_empty(),
        "{clean}"
    );

    // insecure_policy + insecure_connection: a token device that connects over plain TCP.
    hub.ok(&["device", "create", "loose", "--out", o, "--allow-insecure"]);
    let token = std::fs::read_to_string(dir.join("loose.token")).expect("token");
    let (host, port) = hub.mqtt_plain.rsplit_once(':').expect("plain");
    let (ok, out) = run(
        "timeout",
        &[
            "10",
            "mosquitto_pub",
            "-h",
            host,
            "-p",
            port,
            "-i",
            "loose",
            "-u",
            "loose",
            "-P",
            token.trim(),
            "-t",
            "devices/loose/t",
            "-m",
            "x",
        ],
    );
    assert!(ok, "{out}");

    // certificate_expiring: device certificates live 5 days here (High: under a week).
    hub.ok(&["device", "create", "strict", "--out", o]);
    let serial = hub.json(&["device", "show", "strict"])["certificates"][0]["serial"]
        .as_str()
        .expect("serial")
        .to_string();

    // revoked_certificate_presented: a revoked device keeps trying.
    hub.ok(&["device", "create", "stolen", "--out", o]);
    hub.ok(&["device", "revoke", "stolen"]);
    let mut c = mosquitto(&hub, &dir, "stolen", "127.0.0.1");
    assert!(!c.status().expect("runs").success());

    // possible_clone: one identity connected from two addresses at once.
    hub.ok(&["device", "create", "twin", "--out", o]);
    let mut first = mosquitto(&hub, &dir, "twin", "127.0.0.1")
        .spawn()
        .expect("sub");
    std::thread::sleep(Duration::from_millis(700));
    let mut second = mosquitto(&hub, &dir, "twin", "127.0.0.2")
        .spawn()
        .expect("sub");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hub
        .ok(&["audit", "--limit", "50"])
        .contains("mqtt.possible_clone")
    {
        assert!(Instant::now() < deadline, "no possible clone recorded");
        std::thread::sleep(Duration::from_millis(200));
    }
    for c in [&mut first, &mut second] {
        let _ = c.kill();
        let _ = c.wait();
    }

    // ca_expiring: a vendor CA that expires within the window (30 days, default).
    let vendor = Vendor::new(&dir, "acme");
    vendor.register(&hub, &dir, "acme", &[]);

    // shared_key_pair: two devices certified for one key.
    let csr = make_csr(&dir, "shared", "p256", &[]);
    hub.ok(&[
        "device",
        "create",
        "copy-a",
        "--csr",
        csr.to_str().expect("p"),
        "--out",
        o,
    ]);
    hub.ok(&[
        "device",
        "create",
        "copy-b",
        "--csr",
        csr.to_str().expect("p"),
        "--out",
        o,
    ]);

    // firmware_below_minimum: strict reports it runs Sensor v2 at counter 1 (minimum 3).
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("addr");
    let idle = r#"{"state":"idle","running":{"model":"Sensor v2","version":"1.0.0","security_counter":1}}"#;
    let (ok, out) = run(
        "timeout",
        &[
            "10",
            "mosquitto_pub",
            "-h",
            host,
            "-p",
            port,
            "-i",
            "strict",
            "-q",
            "1",
            "-t",
            "devices/strict/ota/report",
            "-m",
            idle,
            "--cafile",
            hub.bundle().to_str().expect("p"),
            "--cert",
            dir.join("strict.crt").to_str().expect("p"),
            "--key",
            dir.join("strict.key").to_str().expect("p"),
        ],
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let r = hub.json(&["audit", "posture"]);
        if !findings(&r, "firmware_below_minimum").is_empty() || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        has(&report, "firmware_below_minimum", "strict", "high"),
        "{report}"
    );
    assert!(
        has(&report, "insecure_policy", "loose", "medium"),
        "{report}"
    );
    assert!(
        has(&report, "insecure_connection", "loose", "high"),
        "{report}"
    );
    assert!(
        has(&report, "certificate_expiring", &serial, "high"),
        "{report}"
    );
    assert!(
        has(&report, "revoked_certificate_presented", "devices/", "high"),
        "{report}"
    );
    assert!(
        has(&report, "possible_clone", "twin", "high")
            || has(&report, "possible_clone", "twin", "critical"),
        "{report}"
    );
    assert!(has(&report, "ca_expiring", "acme", "high"), "{report}");
    let shared = findings(&report, "shared_key_pair");
    assert_eq!(shared.len(), 1, "{report}");
    let detail = shared[0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("copy-a") && detail.contains("copy-b"),
        "{detail}"
    );
    assert_eq!(shared[0]["severity"], "critical");
    // never_seen: the two key-sharing devices never connected; those that did are not listed,
    // nor is the revoked one.
    let never: Vec<&str> = findings(&report, "never_seen")
        .iter()
        .filter_map(|f| f["subject"].as_str())
        .collect();
    assert_eq!(never, vec!["copy-a", "copy-b"], "{report}");
    // Only the revoked device's certificate: strict's is not "presented revoked".
    assert_eq!(
        findings(&report, "revoked_certificate_presented").len(),
        1,
        "{report}"
    );
    // A narrower expiry window drops the 5-day certificates.
    let narrow = hub.json(&["audit", "posture", "--within-days", "1"]);
    assert!(
        findings(&narrow, "certificate_expiring").is_empty(),
        "{narrow}"
    );

    // The text report and the exit status for cron/CI.
    let out = hub.cli(&["audit", "posture", "--fail-on", "critical"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CRITICAL") && text.contains("shared_key_pair") && text.contains("→"),
        "{text}"
    );
    let out = hub.cli(&[
        "audit",
        "posture",
        "--within-days",
        "1",
        "--fail-on",
        "critical",
    ]);
    assert_eq!(out.status.code(), Some(3), "still the shared key");

    // The same findings as metrics (the periodic audit runs every second here).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, m) = run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "5",
                &format!("{}/metrics", hub.metrics_url),
            ],
        );
        if m.contains("moat_posture_findings{check=\"shared_key_pair\",severity=\"critical\"} 1")
            && m.contains(
                "moat_posture_findings{check=\"insecure_connection\",severity=\"high\"} 1",
            )
        {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
