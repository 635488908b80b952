//! The web console in a real browser: headless Chromium (Debian's `chromium`) driven by
//! Playwright (`console_browser.py`) against a real hub (`moat serve`). The script signs in,
//! creates a device and sees its key once (a reload no longer shows it), revokes it through
//! the confirmation page, watches a campaign advance while a fleet of simulated devices
//! updates, reads the audit log, and checks that a read-only operator cannot revoke and that
//! forged or missing CSRF tokens are refused. Screenshots of the main pages (desktop, phone,
//! dark) are saved under `target/tmp/console-screenshots/` (or `$MOAT_ARTIFACTS_DIR`).
//!
//! This side prepares the hub and then checks what the browser did through the CLI and
//! openssl: the device is revoked and in the CRL, the key the page offered matches the
//! certificate and is nowhere in the hub's data directory, and the audit log names who did
//! what, including the refused attempts.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Chromium and Playwright, or why not. Under CI their absence fails the test; elsewhere it
/// is skipped with a note (scripts/test installs both).
fn browser() -> Option<PathBuf> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .status()
        .is_ok_and(|s| s.success());
    match (chromium, playwright) {
        (Some(c), true) => Some(c),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "chromium and python3 -m pip install playwright are needed (scripts/test installs them)"
            )
        }
        _ => {
            eprintln!(
                "skipped: needs Debian's chromium and Python playwright (scripts/test installs them)"
            );
            None
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("MOAT_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

#[test]
fn console_in_headless_chromium() {
    let Some(chromium) = browser() else { return };
    let hub = TestHub::start();
    let dir = hub.path("console");
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).expect("dir");

    // A fleet of four simulated devices for the campaign (connected later, by the script).
    enroll_fleet(&hub, &creds, 4, "fleet-");
    let device_bin = Path::new(MOAT).with_file_name("moat-device");
    let release = publish_release(&hub, &dir, "sensor", "1.2.0", 2, 64 * 1024);
    let fw_pub = dir.join("fw.pub.pem");
    std::fs::write(&fw_pub, &release.fw_pub).expect("w");
    let update = dir.join("update.pem");
    std::fs::write(&update, &release.update_pem).expect("w");
    let campaign = hub.json(&[
        "campaign",
        "create",
        "--firmware",
        &release.fw_id,
        "--target",
        "devices:fleet-000000,fleet-000001,fleet-000002,fleet-000003",
        "--waves",
        "50%,100%",
    ]);
    let campaign_id = campaign["id"].as_str().expect("id").to_string();
    let viewer = hub
        .ok(&["operator", "create", "viewer", "--role", "read-only"])
        .split_whitespace()
        .find(|w| w.starts_with("moat_op_"))
        .expect("token")
        .to_string();
    let admin_token = std::fs::read_to_string(hub.data.join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_string();

    // A secure-element vendor's CA, registered through the console's proof-of-possession flow.
    let vendor = Vendor::new(&dir, "acme-se");
    let shots = artifacts();
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).expect("dir");
    let fleet_cmd = vec![
        device_bin.to_string_lossy().into_owned(),
        "fleet".into(),
        "--addr".into(),
        hub.mqtt_tls.clone(),
        "--ca".into(),
        s(&hub.bundle()).into(),
        "--devices".into(),
        s(&creds).into(),
        "--count".into(),
        "4".into(),
        "--model".into(),
        "sensor".into(),
        "--update-key".into(),
        s(&update).into(),
        "--fw-key".into(),
        s(&fw_pub).into(),
        "--updates".into(),
        "1".into(),
        "--duration".into(),
        "120".into(),
    ];
    let cfg = serde_json::json!({
        "base": hub.admin_url,
        "chromium": chromium,
        "admin_token": admin_token,
        "viewer_token": viewer,
        "campaign": campaign_id,
        "fleet": fleet_cmd,
        "shots": shots,
        "downloads": downloads,
        "victim": "fleet-000001",
        "vendor_cert": vendor.cert_s(),
        "vendor_key": vendor.key_path(),
        "work": dir,
    });
    let cfg_file = dir.join("browser.json");
    std::fs::write(&cfg_file, cfg.to_string()).expect("w");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_browser.py");
    let out = Command::new("timeout")
        .args(["300", "python3", s(&script), s(&cfg_file)])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script failed:\n{stdout}\n{}\nhub log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        hub.log()
    );
    eprintln!("{stdout}screenshots in {}", shots.display());
    for name in [
        "01-sign-in.png",
        "02-devices.png",
        "03-key-once.png",
        "05-device-revoked.png",
        "06-campaign-done.png",
        "07-audit.png",
        "08-cas.png",
        "09-posture.png",
        "10-firmware.png",
        "11-devices-phone.png",
        "12-overview-dark.png",
    ] {
        let len = std::fs::metadata(shots.join(name)).map_or(0, |m| m.len());
        assert!(
            len > 5_000,
            "screenshot {name} missing or empty ({len} bytes)"
        );
    }

    // What the browser did, seen from the hub.
    let device = hub.json(&["device", "show", "web-1"]);
    assert_eq!(device["device"]["state"], "revoked", "{device}");
    let key = downloads.join("web-1.key.pem");
    let cert = downloads.join("web-1.crt.pem");
    let key_pub = openssl(&["pkey", "-in", s(&key), "-pubout"]);
    let cert_pub = openssl(&["x509", "-in", s(&cert), "-noout", "-pubkey"]);
    assert_eq!(
        key_pub, cert_pub,
        "the downloaded key matches the certificate"
    );
    let key_pem = std::fs::read_to_string(&key).expect("key");
    let b64: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        !grep_dir(&hub.data, b64.as_bytes()),
        "the hub must not keep the key it showed"
    );
    let (ok, why) = openssl_verify(&hub.bundle(), &cert, None);
    assert!(ok, "{why}");
    let crl = dir.join("crl.pem");
    std::fs::write(&crl, hub.ok(&["crl"])).expect("w");
    let (ok, why) = openssl_verify(&hub.bundle(), &cert, Some(&crl));
    assert!(!ok && why.contains("revoked"), "{why}");

    let audit = hub.ok(&["audit", "--limit", "200"]);
    for needle in [
        "console.sign_in",
        "device.create",
        "device.revoke",
        "console.csrf",
        "console.forbidden",
        "operator:viewer",
    ] {
        assert!(audit.contains(needle), "audit has {needle}:\n{audit}");
    }
    let cas = hub.json(&["ca", "list"]);
    assert!(
        cas.as_array()
            .expect("list")
            .iter()
            .any(|c| c["name"] == "acme-se" && c["kind"] == "registered"),
        "{cas}"
    );
    // The read-only operator's attempt changed nothing.
    let victim = hub.json(&["device", "show", "fleet-000001"]);
    assert_eq!(victim["device"]["state"], "active", "{victim}");
    let c = hub.json(&["campaign", "show", &campaign_id]);
    assert_eq!(c["campaign"]["state"], "succeeded", "{c}");
}
