//! Firmware updates end to end, through the real hub (`moat serve`), its CLI and MQTT:
//! imgtool interop at upload (both key types; tampered, unknown-key and rolled-back images
//! refused), hub-side signing that `imgtool verify` accepts, the hub's firmware download
//! listener against curl and openssl (mutual TLS required, Range, revocation, disabled and
//! re-enabled devices, server certificate rotation, `model:` targets from the registry),
//! and campaigns on a fleet of simulated devices (each with its own certificate) that
//! download from that listener through a proxy that cuts connections (resumed by `Range`),
//! confirm, or roll back and abort the campaign.

mod common;

use common::download::CutProxy;
use common::*;
use moat_device::fleet::{FleetConfig, FleetStats};
use moat_device::load::tls::{KeyExchange, PinningVerifier, provider};
use moat_testkit::softhsm::SoftHsm;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// imgtool on the PATH, else the Python module; None (after saying so) when missing
/// outside CI.
fn imgtool() -> Option<Vec<String>> {
    for argv in [
        vec!["imgtool".to_string()],
        vec!["python3".into(), "-m".into(), "imgtool.main".into()],
    ] {
        let ok = Command::new(&argv[0])
            .args(&argv[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(argv);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "imgtool missing and CI is set (pip install imgtool)"
    );
    eprintln!("SKIPPED: imgtool not found (pip install imgtool)");
    None
}

fn tool(argv: &[String], args: &[&str]) -> String {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .args(args)
        .output()
        .expect("imgtool runs");
    assert!(
        out.status.success(),
        "imgtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn payload(dir: &Path, name: &str, len: usize, extra: &[u8]) -> PathBuf {
    let p = dir.join(name);
    let mut bytes: Vec<u8> = (0..len as u32).map(|i| (i * 13 % 251) as u8).collect();
    bytes.extend_from_slice(extra);
    std::fs::write(&p, bytes).expect("payload");
    p
}

#[test]
fn upload_accepts_imgtool_images_and_refuses_tampered_unknown_and_rolled_back_ones() {
    let Some(img) = imgtool() else { return };
    let hub = TestHub::start();
    let dir = hub.path("fw");
    std::fs::create_dir_all(&dir).expect("dir");
    let app = payload(&dir, "app.bin", 30_000, b"");
    for (kind, model) in [("ed25519", "sensor-ed"), ("ecdsa-p256", "sensor-ec")] {
        let key = dir.join(format!("{kind}.pem"));
        let public = dir.join(format!("{kind}.pub.pem"));
        tool(&img, &["keygen", "-t", kind, "-k", s(&key)]);
        tool(
            &img,
            &["getpub", "-e", "pem", "-k", s(&key), "-o", s(&public)],
        );
        hub.ok(&["fw", "key", "add", "--name", kind, s(&public)]);
        let sign = |version: &str, counter: &str, out: &Path| {
            tool(
                &img,
                &[
                    "sign",
                    "--key",
                    s(&key),
                    "--version",
                    version,
                    "--header-size",
                    "0x200",
                    "--pad-header",
                    "--slot-size",
                    "0x40000",
                    "--security-counter",
                    counter,
                    s(&app),
                    s(out),
                ],
            );
        };
        let v2 = dir.join(format!("{kind}-v2.bin"));
        sign("1.2.0", "5", &v2);
        let fw = hub.json(&["fw", "upload", s(&v2), "--model", model]);
        assert_eq!(fw["version"], "1.2.0+0", "{fw}");
        assert_eq!(fw["security_counter"], 5);
        assert_eq!(fw["key"], kind);
        let blob = hub
            .data
            .join("firmware")
            .join(fw["digest"].as_str().expect("digest"));
        assert_eq!(
            std::fs::read(&blob).expect("blob"),
            std::fs::read(&v2).expect("image")
        );

        // One flipped payload byte.
        let mut bytes = std::fs::read(&v2).expect("image");
        bytes[0x200 + 100] ^= 0x40;
        let tampered = dir.join(format!("{kind}-tampered.bin"));
        std::fs::write(&tampered, &bytes).expect("write");
        let err = hub.fails(&["fw", "upload", s(&tampered), "--model", model]);
        assert!(
            err.contains("image refused") && err.contains("hash"),
            "{err}"
        );

        // Signed by a key the hub does not know.
        let stranger = dir.join(format!("{kind}-stranger.pem"));
        tool(&img, &["keygen", "-t", kind, "-k", s(&stranger)]);
        let foreign = dir.join(format!("{kind}-foreign.bin"));
        tool(
            &img,
            &[
                "sign",
                "--key",
                s(&stranger),
                "--version",
                "1.3.0",
                "--header-size",
                "0x200",
                "--pad-header",
                "--slot-size",
                "0x40000",
                "--security-counter",
                "6",
                s(&app),
                s(&foreign),
            ],
        );
        let err = hub.fails(&["fw", "upload", s(&foreign), "--model", model]);
        assert!(
            err.contains("image refused") && err.contains("key"),
            "{err}"
        );

        // Validly signed, but older than what is published for the model.
        let old = dir.join(format!("{kind}-old.bin"));
        sign("1.1.0", "4", &old);
        let err = hub.fails(&["fw", "upload", s(&old), "--model", model]);
        assert!(err.contains("security counter 4 is below 5"), "{err}");
        // The same image twice for a model is a conflict; nothing half-written stays.
        let err = hub.fails(&["fw", "upload", s(&v2), "--model", model]);
        assert!(err.contains("already exists"), "{err}");
    }
    let list = hub.json(&["fw", "list"]);
    assert_eq!(list.as_array().expect("list").len(), 2, "{list}");
    let leftovers: Vec<_> = std::fs::read_dir(hub.data.join("firmware"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only the two published blobs: {leftovers:?}"
    );

    // Bad input: one line that says what to do.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "nope").expect("w");
    let err = hub.fails(&["fw", "key", "add", "--name", "junk", s(&junk)]);
    assert!(err.contains("imgtool getpub"), "{err}");
    let err = hub.fails(&["fw", "upload", s(&app), "--model", "bad model"]);
    assert!(err.contains("model"), "{err}");
    let audit = hub.ok(&["audit", "--limit", "100"]);
    assert!(
        audit.contains("fw.upload") && audit.contains("refused"),
        "{audit}"
    );
}

#[test]
fn hub_held_key_signs_images_imgtool_verifies() {
    let Some(img) = imgtool() else { return };
    let hub = TestHub::start();
    let dir = hub.path("sign");
    std::fs::create_dir_all(&dir).expect("dir");
    let public = hub.ok(&["fw", "key", "generate", "--name", "hub-release"]);
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    let pub_path = dir.join("hub-release.pub.pem");
    std::fs::write(&pub_path, &public).expect("w");
    let app = payload(&dir, "app.bin", 50_000, b"");
    let out = dir.join("app.signed.bin");
    hub.ok(&[
        "fw",
        "sign",
        "--key",
        "hub-release",
        "--version",
        "2.1.3+7",
        "--security-counter",
        "9",
        s(&app),
        s(&out),
    ]);
    let verified = tool(&img, &["verify", "-k", s(&pub_path), s(&out)]);
    assert!(
        verified.contains("Image was correctly validated"),
        "{verified}"
    );
    let dumped = tool(&img, &["dumpinfo", s(&out)]);
    assert!(
        dumped.contains("2.1.3") || dumped.contains("0x02"),
        "{dumped}"
    );
    // The device's verifier agrees, and the hub publishes it.
    let report = hub.ok(&[
        "fw",
        "verify",
        s(&out),
        "--key",
        s(&pub_path),
        "--min-counter",
        "9",
    ]);
    assert!(report.contains("accepted"), "{report}");
    let fw = hub.json(&["fw", "upload", s(&out), "--model", "m"]);
    assert_eq!(fw["key"], "hub-release");
    // A registered (offline) key cannot sign on the hub.
    hub.ok(&["fw", "key", "add", "--name", "offline", s(&pub_path)]);
    let err = hub.fails(&[
        "fw",
        "sign",
        "--key",
        "offline",
        "--version",
        "1.0.0",
        s(&app),
        s(&out),
    ]);
    assert!(err.contains("imgtool"), "{err}");
}

/// curl against the hub's download listener: (exit code, HTTP status, headers, body).
fn curl(
    hub: &TestHub,
    url: &str,
    cert: Option<&(PathBuf, PathBuf)>,
    extra: &[&str],
) -> (i32, String, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (body, head) = (dir.path().join("body"), dir.path().join("head"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(hub.bundle())
        .arg("-o")
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"])
        .args(extra);
    if let Some((crt, key)) = cert {
        cmd.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read_to_string(&head).unwrap_or_default(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

/// SHA-256 fingerprint of the certificate a TLS server presents (openssl s_client).
fn served_cert(addr: &str, cert: Option<&(PathBuf, PathBuf)>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", addr]);
    if let Some((crt, key)) = cert {
        cmd.arg("-cert").arg(crt).arg("-key").arg(key);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("s.pem");
    std::fs::write(&f, pem).expect("w");
    openssl(&["x509", "-in", s(&f), "-noout", "-fingerprint", "-sha256"])
}

/// Polls `moat campaign show ID --devices` until `device` is in `state`.
fn wait_device(hub: &TestHub, id: &str, device: &str, state: &str) {
    wait_campaign(hub, id, Duration::from_secs(20), |v| {
        v["devices"].as_array().is_some_and(|ds| {
            ds.iter()
                .any(|d| d["device_id"] == device && d["state"] == state)
        })
    });
}

#[test]
fn download_listener_admits_devices_by_certificate_and_follows_the_registry() {
    let hub = TestHub::start();
    let dir = hub.path("dl");
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).expect("dir");
    for id in ["cam-1", "cam-2", "cam-3", "bell-1", "new-1"] {
        hub.ok(&["device", "create", id, "--out", s(&creds)]);
    }
    let cert = |id: &str| {
        (
            creds.join(format!("{id}.crt")),
            creds.join(format!("{id}.key")),
        )
    };
    let (c1, c2, c3, b1) = (cert("cam-1"), cert("cam-2"), cert("cam-3"), cert("bell-1"));
    // No device has reported a model: the operator says which ones are cameras.
    for id in ["cam-1", "cam-2", "cam-3"] {
        let out = hub.ok(&["device", "set-model", id, "camera"]);
        assert!(out.contains("camera"), "{out}");
    }
    hub.ok(&["device", "set-model", "bell-1", "doorbell"]);
    let err = hub.fails(&["device", "set-model", "ghost", "camera"]);
    assert!(err.contains("ghost"), "{err}");
    let release = publish_release(&hub, &dir, "camera", "1.1.0", 2, 20_000);
    let bytes = std::fs::read(&release.image).expect("image");
    let c = hub.json(&[
        "campaign",
        "create",
        "--firmware",
        &release.fw_id,
        "--target",
        "model:camera",
    ]);
    let campaign = c["id"].as_str().expect("id").to_owned();
    assert_eq!(c["progress"][0]["devices"], 3, "the three cameras: {c}");
    let url = format!("https://{}/fw/{}", hub.ota_download, release.digest);

    // A notified device: the whole image, and one range of it.
    let (code, status, _, body) = curl(&hub, &url, Some(&c1), &[]);
    assert_eq!((code, status.as_str()), (0, "200"));
    assert_eq!(body, bytes, "the image as uploaded");
    let (code, status, head, body) = curl(&hub, &url, Some(&c1), &["-H", "Range: bytes=100-1099"]);
    assert_eq!((code, status.as_str()), (0, "206"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-range: bytes 100-1099/{}", bytes.len())),
        "{head}"
    );
    assert_eq!(body, bytes[100..1100]);

    // No certificate: the handshake is refused, no HTTP at all.
    let (code, status, _, body) = curl(&hub, &url, None, &[]);
    assert_ne!(code, 0);
    assert_eq!(status, "000");
    assert!(body.is_empty());
    // A device that is not a target, and one whose model is another.
    for other in [cert("new-1"), b1] {
        let (_, status, _, _) = curl(&hub, &url, Some(&other), &[]);
        assert_eq!(status, "403");
    }

    // Disabled mid-campaign: refused (and skipped). Re-enabled while the campaign still
    // runs: notified again, and it downloads.
    hub.ok(&["device", "disable", "cam-2"]);
    wait_device(&hub, &campaign, "cam-2", "skipped");
    let (_, status, _, _) = curl(&hub, &url, Some(&c2), &[]);
    assert_eq!(status, "403");
    hub.ok(&["device", "enable", "cam-2"]);
    wait_device(&hub, &campaign, "cam-2", "notified");
    let (_, status, _, body) = curl(&hub, &url, Some(&c2), &[]);
    assert_eq!(status, "200");
    assert_eq!(body, bytes);

    // Revoked: the handshake refuses its certificate, at once (no restart, live verifier).
    let (_, status, _, _) = curl(&hub, &url, Some(&c3), &[]);
    assert_eq!(status, "200", "cam-3 could download before");
    hub.ok(&["device", "revoke", "cam-3"]);
    // The verifier learns it from the event bus a moment after the CLI returns; until then
    // the per-request admission refuses it (403). Never an image.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, status, _, body) = curl(&hub, &url, Some(&c3), &[]);
        if status == "000" {
            assert_ne!(code, 0);
            assert!(body.is_empty());
            break;
        }
        assert_eq!(status, "403", "a revoked device gets nothing");
        assert!(
            Instant::now() < deadline,
            "the handshake still accepts cam-3"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The listener follows server certificate rotation like the others.
    let before = served_cert(&hub.ota_download, Some(&c1));
    assert_eq!(before, served_cert(&hub.mqtt_tls, None));
    hub.ok(&["server", "rotate"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = served_cert(&hub.ota_download, Some(&c1));
        if now != before {
            assert_eq!(
                now,
                served_cert(&hub.mqtt_tls, None),
                "the same new certificate"
            );
            break;
        }
        assert!(Instant::now() < deadline, "download listener kept {before}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, status, _, _) = curl(&hub, &url, Some(&c1), &[]);
    assert_eq!(status, "200");
    let hub_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(hub.data.join("hub.json")).expect("hub.json"),
    )
    .expect("json");
    assert_eq!(hub_json["ota_download"], hub.ota_download.as_str());
}

/// Polls `moat campaign show ID` until `done` says so.
fn wait_campaign(
    hub: &TestHub,
    id: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = hub.json(&["campaign", "show", id, "--devices"]);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "campaign did not get there: {}\n{}",
            serde_json::to_string_pretty(&v).unwrap_or_default(),
            hub.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn wave_count(v: &serde_json::Value, wave: usize, state: &str) -> u64 {
    v["campaign"]["progress"][wave]["states"][state]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn campaigns_on_a_fleet_advance_confirm_roll_back_and_abort() {
    const N: usize = 60;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let conf = tempfile::tempdir().expect("tempdir");
    let conf_file = conf.path().join("moat.toml");
    std::fs::write(
        &conf_file,
        format!(
            "[ota]\ndownload_url = \"https://127.0.0.1:{}\"\n",
            listener.local_addr().expect("addr").port()
        ),
    )
    .expect("config");
    let hub =
        tokio::task::block_in_place(|| TestHub::start_with(&["--config", s(&conf_file)], &[]));
    let dir = hub.path("fleet");
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).expect("dir");
    tokio::task::block_in_place(|| {
        for i in 0..N {
            let id = format!("sim-{i:03}");
            hub.ok(&[
                "device",
                "create",
                &id,
                "--out",
                s(&creds),
                "--group",
                "fleet",
            ]);
        }
        // One device that is revoked before the campaign: it gets nothing.
        hub.ok(&[
            "device",
            "create",
            "sim-revoked",
            "--out",
            s(&creds),
            "--group",
            "fleet",
        ]);
        hub.ok(&["device", "revoke", "sim-revoked"]);
    });
    let fw_pub = hub.ok(&["fw", "key", "generate", "--name", "release"]);
    let update_pem = hub.ok(&["fw", "update-key"]);
    let good = payload(&dir, "v2.bin", 200_000, b"");
    let good_img = dir.join("v2.signed");
    let mut broken_extra = b"...".to_vec();
    broken_extra.extend_from_slice(moat_device::ota::NO_CONFIRM_MARKER);
    let broken = payload(&dir, "v3.bin", 200_000, &broken_extra);
    let broken_img = dir.join("v3.signed");
    let (fw_good, fw_broken) = tokio::task::block_in_place(|| {
        hub.ok(&[
            "fw",
            "sign",
            "--key",
            "release",
            "--version",
            "1.1.0",
            "--security-counter",
            "2",
            s(&good),
            s(&good_img),
        ]);
        hub.ok(&[
            "fw",
            "sign",
            "--key",
            "release",
            "--version",
            "1.2.0",
            "--security-counter",
            "3",
            s(&broken),
            s(&broken_img),
        ]);
        let g = hub.json(&["fw", "upload", s(&good_img), "--model", "sensor"]);
        let b = hub.json(&["fw", "upload", s(&broken_img), "--model", "sensor"]);
        (
            g["id"].as_str().expect("id").to_owned(),
            b["id"].as_str().expect("id").to_owned(),
        )
    });

    // Downloads: the hub's listener (mutual TLS), behind a proxy that cuts every
    // connection after 120,000 bytes, so each device's first download (≈200 kB) stops
    // partway and resumes.
    let proxy = CutProxy::start(listener, hub.ota_download.clone(), 120_000);
    let roots = std::fs::read(hub.bundle()).expect("bundle");

    // The fleet: every device with its own certificate over mutual-TLS MQTT.
    let provider = provider(KeyExchange::X25519);
    let verifier =
        Arc::new(PinningVerifier::from_ca_file(&hub.bundle(), provider.clone()).expect("verifier"));
    let ids: Vec<String> = (0..N).map(|i| format!("sim-{i:03}")).collect();
    let devices =
        moat_device::fleet::load_devices(&creds, &ids, &provider, &verifier).expect("devices");
    let cfg = Arc::new(FleetConfig {
        target: hub.fleet_target(moat_broker_version()),
        download_roots_pem: roots,
        model: "sensor".into(),
        update_key: moat_ota_proto::UpdateKey::from_pem(&update_pem).expect("update key"),
        firmware_keys: vec![moat_image::TrustedKey::from_pem(fw_pub.as_bytes()).expect("fw key")],
        factory_counter: 1,
        slot_len: 512 * 1024,
        download_attempts: 5,
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.connected.load(Ordering::Relaxed) < N as u64 {
        assert!(
            Instant::now() < deadline,
            "fleet did not connect: {}",
            stats.to_json()
        );
        assert_eq!(
            stats.connection_errors.load(Ordering::Relaxed),
            0,
            "{}",
            stats.to_json()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Campaign 1: two waves (10%, then the rest), everyone must confirm.
    let c1 = tokio::task::block_in_place(|| {
        let c = hub.json(&[
            "campaign",
            "create",
            "--firmware",
            &fw_good,
            "--target",
            "group:fleet",
            "--waves",
            "10%,100%",
            "--success-threshold",
            "100%",
            "--abort-threshold",
            "10%",
        ]);
        let id = c["id"].as_str().expect("id").to_owned();
        assert_eq!(c["waves"], 2, "{c}");
        assert_eq!(c["progress"][0]["devices"], 6, "{c}");
        assert_eq!(c["progress"][1]["devices"], 54, "{c}");
        let v = wait_campaign(&hub, &id, Duration::from_secs(120), |v| {
            v["campaign"]["state"] != "running"
        });
        (id, v)
    });
    let (c1, v) = c1;
    assert_eq!(v["campaign"]["state"], "succeeded", "{v}");
    assert_eq!(wave_count(&v, 0, "confirmed"), 6, "{v}");
    assert_eq!(wave_count(&v, 1, "confirmed"), 54, "{v}");
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), N, "the revoked device is not a target");
    assert!(devices.iter().all(|d| d["state"] == "confirmed"), "{v}");
    assert_eq!(stats.confirmed.load(Ordering::Relaxed), N as u64);
    assert!(
        stats.resumes.load(Ordering::Relaxed) >= N as u64 && proxy.cuts() >= N as u64,
        "every first download was cut and resumed: {} cuts, {}",
        proxy.cuts(),
        stats.to_json()
    );
    let text = tokio::task::block_in_place(|| hub.ok(&["campaign", "show", &c1]));
    assert!(
        text.contains("succeeded") && text.contains("CONFIRMED"),
        "{text}"
    );

    // Campaign 2: an image that never confirms. Wave 1 rolls back, the campaign aborts at
    // the threshold, and wave 2 is never notified.
    let v = tokio::task::block_in_place(|| {
        let c = hub.json(&[
            "campaign",
            "create",
            "--firmware",
            &fw_broken,
            "--target",
            "group:fleet",
            "--waves",
            "10%,100%",
            "--success-threshold",
            "90%",
            "--abort-threshold",
            "10%",
        ]);
        let id = c["id"].as_str().expect("id").to_owned();
        wait_campaign(&hub, &id, Duration::from_secs(120), |v| {
            // The abort cancels wave 2's devices one row at a time: wait for all of them.
            v["campaign"]["state"] == "aborted"
                && wave_count(v, 0, "rolled_back") + wave_count(v, 0, "failed") == 6
                && wave_count(v, 1, "pending") == 0
        })
    });
    for state in [
        "notified",
        "downloading",
        "installed",
        "confirmed",
        "rolled_back",
        "failed",
    ] {
        assert_eq!(
            wave_count(&v, 1, state),
            0,
            "wave 2 untouched ({state}): {v}"
        );
    }
    assert_eq!(wave_count(&v, 1, "cancelled"), 54, "{v}");
    assert!(
        v["campaign"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("abort threshold"),
        "{v}"
    );
    // Wave 1: rolled back (the image did not confirm), or, for a device that had not
    // fetched the image when the campaign aborted, refused its download.
    let wave1: Vec<_> = v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["wave"] == 1)
        .collect();
    assert_eq!(wave1.len(), 6);
    let mut rolled = 0u64;
    for d in &wave1 {
        let reason = d["reason"].as_str().unwrap_or("");
        match d["state"].as_str() {
            Some("rolled_back") => {
                rolled += 1;
                assert!(reason.contains("did not confirm"), "{d}");
            }
            Some("failed") => assert!(reason.contains("HTTP 403"), "{d}"),
            other => panic!("wave 1 device in {other:?}: {d}"),
        }
    }
    assert!(rolled >= 1, "{v}");
    assert_eq!(
        stats.rolled_back.load(Ordering::Relaxed),
        rolled,
        "{}",
        stats.to_json()
    );
    let err = tokio::task::block_in_place(|| {
        hub.fails(&[
            "campaign",
            "resume",
            v["campaign"]["id"].as_str().expect("id"),
        ])
    });
    assert!(err.contains("aborted"), "{err}");

    stop.cancel();
    let _ = fleet.await;
    drop(proxy);
}

fn moat_broker_version() -> moat_broker::codec::Version {
    moat_broker::codec::Version::V311
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (11 and 12 after the command name).
    (tick(11) + tick(12)) / 100.0
}

/// OTA distribution benchmark (BENCHMARKS.md): N simulated devices (default 1,000, each its
/// own certificate, in a separate `moat-device fleet` process) take a 1 MiB image from one
/// hub: notice over MQTT, download over mutual TLS, verify, install, confirm, report.
/// Prints the time from campaign creation to success and the CPU of the hub process (which
/// serves the downloads too). Needs `cargo build --release -p moat-device` (the binary is
/// looked up beside the `moat` binary under test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn ota_distribution_benchmark() {
    let n: usize = std::env::var("MOAT_OTA_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let fleet_bin = Path::new(MOAT).with_file_name("moat-device");
    assert!(
        fleet_bin.exists(),
        "build it first: cargo build --release -p moat-device ({})",
        fleet_bin.display()
    );
    let conf = tempfile::tempdir().expect("tempdir");
    let conf_file = conf.path().join("moat.toml");
    std::fs::write(&conf_file, "[log]\nlevel = \"warn\"\n").expect("config");
    let hub =
        tokio::task::block_in_place(|| TestHub::start_with(&["--config", s(&conf_file)], &[]));
    let dir = hub.path("bench");
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).expect("dir");
    let t = Instant::now();
    tokio::task::block_in_place(|| enroll_fleet(&hub, &creds, n, "bench-"));
    eprintln!("enrolled {n} devices in {:.1?}", t.elapsed());
    let release = tokio::task::block_in_place(|| {
        publish_release(&hub, &dir, "sensor", "1.1.0", 2, (1 << 20) - 0x200 - 256)
    });
    let fw_pub = dir.join("fw.pub.pem");
    std::fs::write(&fw_pub, &release.fw_pub).expect("w");
    let update = dir.join("update.pem");
    std::fs::write(&update, &release.update_pem).expect("w");
    let size = std::fs::metadata(&release.image).expect("image").len();

    let fleet = Command::new(&fleet_bin)
        .args(["fleet", "--addr", &hub.mqtt_tls, "--ca", s(&hub.bundle())])
        .args([
            "--devices",
            s(&creds),
            "--count",
            &n.to_string(),
            "--model",
            "sensor",
        ])
        .args([
            "--update-key",
            s(&update),
            "--fw-key",
            s(&fw_pub),
            "--updates",
            "1",
            "--duration",
            "900",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("moat-device fleet");
    // Wait for every device's MQTT session, then roll the image out to all of them.
    let deadline = Instant::now() + Duration::from_secs(300);
    let pid: u32 = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(hub.data.join("hub.json")).expect("hub.json"),
    )
    .expect("json")["pid"]
        .as_u64()
        .expect("pid") as u32;
    loop {
        let sessions = hub.json(&["session", "list"]);
        if sessions.as_array().map_or(0, Vec::len) >= n {
            break;
        }
        assert!(Instant::now() < deadline, "devices did not all connect");
        std::thread::sleep(Duration::from_millis(500));
    }
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{i:06}")).collect();
    let target = format!("devices:{}", ids.join(","));
    let t0 = Instant::now();
    let hub_cpu0 = process_cpu(pid);
    let campaign = hub.json(&[
        "campaign",
        "create",
        "--firmware",
        &release.fw_id,
        "--target",
        &target,
    ]);
    let id = campaign["id"].as_str().expect("id").to_owned();
    let v = wait_campaign(&hub, &id, Duration::from_secs(900), |v| {
        v["campaign"]["state"] != "running"
    });
    let secs = t0.elapsed().as_secs_f64();
    let hub_cpu = process_cpu(pid) - hub_cpu0;
    let fleet_out = fleet.wait_with_output().expect("fleet");
    assert_eq!(v["campaign"]["state"], "succeeded", "{v}");
    eprintln!(
        "OTA distribution: {n} devices × {size} bytes ({:.0} MiB) in {secs:.1} s ({:.1} MiB/s); \
         hub process CPU (MQTT + downloads) {hub_cpu:.1} s; fleet: {}",
        (n as f64 * size as f64) / (1 << 20) as f64,
        (n as f64 * size as f64) / (1 << 20) as f64 / secs,
        String::from_utf8_lossy(&fleet_out.stdout).trim()
    );
}

/// With the vault in a PKCS#11 token (SoftHSM2), firmware keys and the update key are
/// generated inside the token, and images it signs pass imgtool.
#[test]
fn pkcs11_firmware_key_signs_in_the_token() {
    let Some(hsm) = SoftHsm::new(&["moat"], "1234", "5678") else {
        return;
    };
    let Some(img) = imgtool() else { return };
    let conf = hsm.conf.clone();
    let hub = TestHub::start_with(
        &["--vault", "pkcs11"],
        &[("SOFTHSM2_CONF", s(&conf)), ("MOAT_PKCS11_PIN", "1234")],
    );
    let dir = hub.path("hsm");
    std::fs::create_dir_all(&dir).expect("dir");
    let public = dir.join("hsm.pub.pem");
    std::fs::write(&public, hub.ok(&["fw", "key", "generate", "--name", "hsm"])).expect("w");
    let update = hub.ok(&["fw", "update-key"]);
    assert!(
        moat_ota_proto::UpdateKey::from_pem(&update).is_ok(),
        "{update}"
    );
    let app = payload(&dir, "app.bin", 10_000, b"");
    let out = dir.join("app.signed.bin");
    hub.ok(&[
        "fw",
        "sign",
        "--key",
        "hsm",
        "--version",
        "1.0.1",
        "--security-counter",
        "3",
        s(&app),
        s(&out),
    ]);
    let verified = tool(&img, &["verify", "-k", s(&public), s(&out)]);
    assert!(
        verified.contains("Image was correctly validated"),
        "{verified}"
    );
    let fw = hub.json(&["fw", "upload", s(&out), "--model", "hsm-model"]);
    assert_eq!(fw["key"], "hsm");
    assert!(
        !grep_dir(&hub.data, b"sealed:v1:"),
        "no sealed keys in PKCS#11 mode"
    );
}
