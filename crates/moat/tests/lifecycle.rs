//! The device lifecycle end to end, with real peers: `openssl` (CSRs, CRL checks), `curl`
//! (EST), `mosquitto_pub`/`mosquitto_sub` (MQTT over mutual TLS). Decommissioning revokes
//! every certificate and retires the serial for good; suspension kicks and refuses, resume
//! lets back in; claims and transfers are audited; rotation gives a certificate that
//! connects while the old one retires after the configured overlap (CRL reason superseded).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// An EST call with curl: (HTTP status, body); status 0 when TLS failed.
fn est(hub: &TestHub, op: &str, auth: &[&str], body: &Path) -> (u16, String) {
    let out = hub.path(&format!("est-{}", rand_u64()));
    let o = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(hub.bundle())
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}"])
        .args(auth)
        .args(["-H", "Content-Type: application/pkcs10", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("{}/.well-known/est/{op}", hub.admin_url))
        .output()
        .expect("curl");
    let status = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    (status, text)
}

/// A CSR made by openssl (base64 DER in `{name}.b64`; new key `{name}.key` unless `key`).
fn csr(dir: &Path, name: &str, subj: &str, key: Option<&str>, extra: &str) -> PathBuf {
    let keyopt = match key {
        Some(k) => format!("-key {k}"),
        None => format!("-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key"),
    };
    sh(
        dir,
        &format!(
            "openssl req -new {keyopt} -subj '{subj}' {extra} -outform DER -out {name}.der 2>/dev/null && base64 {name}.der > {name}.b64"
        ),
    );
    dir.join(format!("{name}.b64"))
}

/// The certificate of a certs-only EST answer, as `{name}.pem`.
fn cert_of(dir: &Path, name: &str, answer: &(u16, String)) -> PathBuf {
    assert_eq!(answer.0, 200, "{}", answer.1);
    std::fs::write(dir.join(format!("{name}.p7.b64")), &answer.1).expect("write");
    sh(
        dir,
        &format!(
            "base64 -d {name}.p7.b64 | openssl pkcs7 -inform DER -print_certs -out {name}.pem"
        ),
    );
    dir.join(format!("{name}.pem"))
}

/// One QoS 1 publish with mosquitto_pub over mutual TLS, as client id `id`: whether the hub
/// accepted it.
fn publishes(hub: &TestHub, id: &str, cert: &Path, key: &Path) -> (bool, String) {
    let (host, port) = hub.mqtt_tls.rsplit_once(':').expect("addr");
    let topic = format!("devices/{id}/up");
    let (c, k, b) = (path_s(cert), path_s(key), hub.bundle());
    run(
        "timeout",
        &[
            "15",
            "mosquitto_pub",
            "-h",
            host,
            "-p",
            port,
            "-V",
            "mqttv5",
            "-i",
            id,
            "-t",
            &topic,
            "-m",
            "x",
            "-q",
            "1",
            "--cafile",
            path_s(&b),
            "--cert",
            c,
            "--key",
            k,
        ],
    )
}

fn path_s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The device CA's CRL as `{name}.pem`.
fn crl(hub: &TestHub, name: &str) -> PathBuf {
    let p = hub.path(&format!("{name}.pem"));
    std::fs::write(&p, hub.ok(&["crl"])).expect("write CRL");
    p
}

/// Starts mosquitto_sub as `id` and waits until the hub lists its session.
fn subscriber(hub: &TestHub, id: &str, cert: &Path, key: &Path) -> Child {
    let topic = format!("devices/{id}/#");
    let mut child = hub.mqtt_sub(id, cert, key, &["-V", "mqttv5", "-q", "1", "-t", &topic]);
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "{id}'s subscriber ended before connecting"
    );
    child
}

/// Whether `child` ends within `limit`.
fn ends_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Audit entries of `action`, newest first.
fn audit_of(hub: &TestHub, action: &str) -> Vec<serde_json::Value> {
    hub.json(&["audit", "--limit", "500"])
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

fn stage(hub: &TestHub, id: &str) -> String {
    hub.json(&["device", "show", id])["device"]["stage"]
        .as_str()
        .expect("stage")
        .to_string()
}

#[test]
fn decommission_revokes_every_certificate_and_the_serial_never_enrolls_again() {
    let hub = TestHub::start();
    let d = hub.path("work");
    std::fs::create_dir_all(&d).expect("dir");
    std::fs::write(d.join("serials.csv"), "SN-1\nSN-2\n").expect("csv");
    hub.ok(&["allowlist", "add", "--file", path_s(&d.join("serials.csv"))]);
    let out = hub.ok(&["station", "create", "line-1", "--token"]);
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("moat_stn_"))
        .expect("token printed")
        .to_string();
    let basic = format!("line-1:{token}");
    let station = ["-u", basic.as_str()];

    // Enrolled over EST (key made by openssl, never seen by the hub), then renewed over
    // mutual TLS: two live certificates.
    let c1 = csr(&d, "sn1", "/CN=SN-1", None, "");
    let first = cert_of(&d, "first", &est(&hub, "simpleenroll", &station, &c1));
    assert_eq!(stage(&hub, "SN-1"), "enrolled");
    let keep = "-addext subjectAltName=URI:urn:moat:device:SN-1";
    let r = csr(&d, "renew", "/O=Moat/CN=SN-1", Some("sn1.key"), keep);
    let (first_s, key_s) = (path_s(&first), path_s(&d.join("sn1.key")).to_string());
    let renewed = cert_of(
        &d,
        "second",
        &est(
            &hub,
            "simplereenroll",
            &["--cert", first_s, "--key", &key_s],
            &r,
        ),
    );
    let key = d.join("sn1.key");
    let live = hub.json(&["device", "certs", "SN-1"]);
    assert_eq!(live.as_array().expect("certs").len(), 2, "{live}");
    assert!(
        live[1]["retire_at"].is_string(),
        "the renewed certificate retires after the overlap: {live}"
    );
    let (ok, text) = publishes(&hub, "SN-1", &renewed, &key);
    assert!(ok, "{text}");
    assert_eq!(stage(&hub, "SN-1"), "active");

    // A device that holds its own key is not rotated by the hub.
    let e = hub.fails(&[
        "device",
        "rotate",
        "SN-1",
        "--out",
        path_s(&hub.path("rot")),
    ]);
    assert!(e.contains("holds its own key"), "{e}");

    // Decommission: every certificate revoked, the serial retired.
    let done = hub.json(&["device", "decommission", "SN-1", "--reason", "end of life"]);
    assert_eq!(
        done["revoked_serials"].as_array().expect("serials").len(),
        2
    );
    assert_eq!(done["device"]["stage"], "decommissioned");
    assert_eq!(done["device"]["state"], "revoked");
    let list = crl(&hub, "crl-after");
    for cert in [&first, &renewed] {
        let (ok, text) = openssl_verify(&hub.bundle(), cert, Some(&list));
        assert!(!ok && text.contains("certificate revoked"), "{text}");
    }
    let text = openssl(&["crl", "-in", path_s(&list), "-noout", "-text"]);
    assert!(text.contains("Cessation Of Operation"), "{text}");
    for cert in [&first, &renewed] {
        let (ok, text) = publishes(&hub, "SN-1", cert, &key);
        assert!(!ok, "a decommissioned device connected: {text}");
    }

    // The serial can never enroll again, not even after an allow-list reset.
    let again = csr(&d, "again", "/CN=SN-1", None, "");
    let (status, body) = est(&hub, "simpleenroll", &station, &again);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("decommissioned"), "{body}");
    let e = hub.fails(&["allowlist", "reset", "SN-1"]);
    assert!(e.contains("decommissioned"), "{e}");
    let (status, body) = est(&hub, "simpleenroll", &station, &again);
    assert_eq!(status, 403, "{body}");
    let entry = hub.json(&["allowlist", "list"]);
    assert!(entry[0]["retired_at"].is_string(), "{entry}");
    // Another serial still enrolls: the station and the allow-list work.
    let c2 = csr(&d, "sn2", "/CN=SN-2", None, "");
    cert_of(&d, "sn2", &est(&hub, "simpleenroll", &station, &c2));

    // Decommissioned is final; each step is audited with actor and reason.
    let e = hub.fails(&["device", "resume", "SN-1"]);
    assert!(e.contains("decommissioned"), "{e}");
    let e = hub.fails(&["device", "decommission", "SN-1"]);
    assert!(e.contains("decommissioned"), "{e}");
    let a = audit_of(&hub, "device.decommission");
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[1]["outcome"], "ok");
    assert_eq!(a[1]["actor"], "admin");
    let detail = a[1]["detail"].as_str().expect("detail");
    assert!(detail.contains("reason: end of life"), "{detail}");
    assert_eq!(a[0]["outcome"], "refused");
    assert_eq!(audit_of(&hub, "device.activate")[0]["actor"], "device:SN-1");
}

#[test]
fn suspend_kicks_and_refuses_resume_lets_back_and_ownership_is_audited() {
    let hub = TestHub::start();
    let creds = hub.path("creds");
    hub.ok(&["device", "create", "d1", "--out", path_s(&creds)]);
    let (cert, key) = (creds.join("d1.crt"), creds.join("d1.key"));
    assert_eq!(stage(&hub, "d1"), "enrolled");

    // A live subscriber; its first CONNECT made the device active.
    let mut sub = subscriber(&hub, "d1", &cert, &key);
    assert_eq!(stage(&hub, "d1"), "active");

    // Suspend: the live session is cut, new connections are refused, certificates kept.
    hub.ok(&["device", "suspend", "d1", "--reason", "reported stolen"]);
    assert!(
        ends_within(&mut sub, Duration::from_secs(5)),
        "the subscriber was not kicked"
    );
    let (ok, text) = publishes(&hub, "d1", &cert, &key);
    assert!(!ok, "a suspended device connected: {text}");
    let shown = hub.json(&["device", "show", "d1"]);
    assert_eq!(shown["device"]["stage"], "suspended");
    assert_eq!(shown["device"]["state"], "disabled");
    assert_eq!(shown["device"]["status_reason"], "reported stolen");
    assert!(shown["certificates"][0]["revoked_at"].is_null(), "{shown}");
    let e = hub.fails(&["device", "suspend", "d1", "--reason", "again"]);
    assert!(e.contains("suspended already"), "{e}");

    // Resume: back to its stage, and it connects again.
    let resumed = hub.json(&["device", "resume", "d1"]);
    assert_eq!(resumed["stage"], "active");
    assert!(resumed["status_reason"].is_null(), "{resumed}");
    let (ok, text) = publishes(&hub, "d1", &cert, &key);
    assert!(ok, "{text}");
    let e = hub.fails(&["device", "resume", "d1"]);
    assert!(e.contains("not suspended"), "{e}");

    // Ownership: claim, a refused claim by another owner, transfers with and without --from.
    hub.ok(&["device", "create", "d2", "--out", path_s(&creds)]);
    assert_eq!(
        hub.json(&["device", "claim", "d1", "--owner", "acme"])["owner"],
        "acme"
    );
    let e = hub.fails(&["device", "claim", "d1", "--owner", "evil"]);
    assert!(e.contains("acme") && e.contains("transfer"), "{e}");
    let e = hub.fails(&[
        "device", "transfer", "d1", "--to", "globex", "--from", "evil",
    ]);
    assert!(e.contains("not \"evil\""), "{e}");
    let e = hub.fails(&["device", "transfer", "d2", "--to", "globex"]);
    assert!(e.contains("no owner"), "{e}");
    hub.ok(&[
        "device", "transfer", "d1", "--to", "globex", "--from", "acme",
    ]);
    hub.ok(&["device", "claim", "d2", "--owner", "acme"]);
    let ids = |owner: &str| -> Vec<String> {
        hub.json(&["device", "list", "--owner", owner])
            .as_array()
            .expect("list")
            .iter()
            .map(|d| d["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(ids("globex"), ["d1"]);
    assert_eq!(ids("acme"), ["d2"]);
    assert!(hub.ok(&["device", "list"]).contains("globex"));

    // The HTTP answer of a refused claim is a 409 problem document.
    let token = std::fs::read_to_string(hub.data.join("admin.token")).expect("token");
    let (ok, text) = run(
        "curl",
        &[
            "-sS",
            "-w",
            "\n%{http_code}",
            "--cacert",
            path_s(&hub.bundle()),
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"owner":"evil"}"#,
            &format!("{}/api/v1/devices/d1/claim", hub.admin_url),
        ],
    );
    assert!(ok && text.trim_end().ends_with("409"), "{text}");
    assert!(text.contains("urn:moat:problem:conflict"), "{text}");

    let detail = |e: &serde_json::Value| e["detail"].as_str().unwrap_or("").to_string();
    let claims = audit_of(&hub, "device.claim");
    assert!(
        claims
            .iter()
            .any(|e| e["outcome"] == "ok" && detail(e) == "owner acme")
    );
    assert!(
        claims
            .iter()
            .any(|e| e["outcome"] == "refused" && detail(e).contains("acme"))
    );
    let transfers = audit_of(&hub, "device.transfer");
    assert!(
        transfers.iter().any(|e| e["outcome"] == "ok"
            && detail(e) == "owner acme -> globex"
            && e["actor"] == "admin"),
        "{transfers:?}"
    );
    let s = audit_of(&hub, "device.suspend");
    assert!(
        s.iter().any(|e| detail(e) == "reason: reported stolen"),
        "{s:?}"
    );
    assert!(
        audit_of(&hub, "device.resume")
            .iter()
            .any(|e| e["outcome"] == "ok")
    );
}

#[test]
fn rotation_gives_a_working_certificate_and_retires_the_old_one_after_the_overlap() {
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let cfg = cfg_dir.path().join("moat.toml");
    std::fs::write(&cfg, "[enrollment]\nrotation_overlap = \"6s\"\n").expect("config");
    let hub = TestHub::start_with(&["--config", path_s(&cfg)], &[]);
    let (old, new) = (hub.path("old"), hub.path("new"));
    hub.ok(&["device", "create", "r1", "--out", path_s(&old)]);
    let (old_cert, old_key) = (old.join("r1.crt"), old.join("r1.key"));
    let old_serial = hub.json(&["device", "certs", "r1"])[0]["serial"]
        .as_str()
        .expect("serial")
        .to_string();

    let rotated_at = Instant::now();
    let r = hub.json(&["device", "rotate", "r1", "--out", path_s(&new)]);
    assert_eq!(r["superseded"][0], old_serial.as_str());
    assert!(r["retire_at"].is_string(), "{r}");
    assert!(
        r.get("private_key_pem").is_none(),
        "the key goes to the file only"
    );
    let (new_cert, new_key) = (new.join("r1.crt"), new.join("r1.key"));
    let new_serial = r["certificate"]["serial"]
        .as_str()
        .expect("serial")
        .to_string();
    let live = hub.json(&["device", "certs", "r1"]);
    assert_eq!(live.as_array().expect("certs").len(), 2, "{live}");
    assert_eq!(live[0]["serial"], new_serial.as_str());
    assert_eq!(live[1]["retire_at"], r["retire_at"]);
    let (ok, text) = publishes(&hub, "r1", &new_cert, &new_key);
    assert!(ok, "{text}");
    let (ok, text) = publishes(&hub, "r1", &old_cert, &old_key);
    if rotated_at.elapsed() < Duration::from_secs(5) {
        assert!(
            ok,
            "the old certificate must work during the overlap: {text}"
        );
    }

    // After the overlap the sweep revokes it with reason superseded.
    let deadline = rotated_at + Duration::from_secs(40);
    let list = loop {
        let list = crl(&hub, "crl-rotated");
        let text = openssl(&["crl", "-in", path_s(&list), "-noout", "-text"]);
        if text
            .to_lowercase()
            .contains(&old_serial.trim_start_matches('0').to_lowercase())
        {
            assert!(text.contains("Superseded"), "{text}");
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "never retired: {text}\n{}",
            hub.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (ok, text) = openssl_verify(&hub.bundle(), &old_cert, Some(&list));
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = openssl_verify(&hub.bundle(), &new_cert, Some(&list));
    assert!(ok, "{text}");
    let (ok, text) = publishes(&hub, "r1", &old_cert, &old_key);
    assert!(!ok, "a retired certificate connected: {text}");
    let (ok, text) = publishes(&hub, "r1", &new_cert, &new_key);
    assert!(ok, "{text}");
    let live = hub.json(&["device", "certs", "r1"]);
    assert_eq!(live.as_array().expect("certs").len(), 1, "{live}");
    let retired = audit_of(&hub, "cert.retire");
    assert_eq!(retired[0]["target"], old_serial.as_str(), "{retired:?}");
    assert_eq!(retired[0]["actor"], "system");

    // Rotation is refused where the hub does not hold the key policy, and for a suspended
    // device.
    let csr_file = make_csr(&hub.path(""), "own", "p256", &[]);
    hub.ok(&["device", "create", "own", "--csr", path_s(&csr_file)]);
    let e = hub.fails(&["device", "rotate", "own", "--out", path_s(&hub.path("x"))]);
    assert!(e.contains("holds its own key"), "{e}");
    hub.ok(&["device", "suspend", "r1", "--reason", "audit"]);
    let e = hub.fails(&["device", "rotate", "r1", "--out", path_s(&hub.path("y"))]);
    assert!(e.contains("suspended"), "{e}");
}
