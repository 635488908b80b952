//! Gateways (issue 17), over real sockets with real peers: devices without IP sign each
//! message with their own key (moat-cose, COSE_Sign1 ES256 with x5t and a counter); a gateway
//! (paho-mqtt, mutual TLS) relays the bytes to `gateways/{gw}/up/{device}/{suffix}`; the hub
//! verifies and republishes them to `devices/{device}/{suffix}` with the `moat-*` user
//! properties; an application (paho-mqtt, MQTT 5) receives them and verifies the object with
//! pycose and the device certificate it fetched from the hub. Every refusal is checked for its
//! PUBACK code, its audit entry and that nothing was delivered.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use moat_cose::{Tagging, X5t, encode_sign1_to_vec};
use moat_testkit::paho::RawMessage;
use p256::pkcs8::DecodePrivateKey;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// A device without IP: its key and the x5t of its certificate.
struct Device {
    id: String,
    key: p256::ecdsa::SigningKey,
    x5t: X5t,
    cert: PathBuf,
}

impl Device {
    /// The hub makes the device (hub-generated key) into `dir`.
    fn create(hub: &TestHub, dir: &Path, id: &str) -> Device {
        hub.ok(&["device", "create", id, "--out", p(dir)]);
        Device::load(
            id,
            &dir.join(format!("{id}.crt")),
            &dir.join(format!("{id}.key")),
        )
    }

    fn load(id: &str, cert: &Path, key: &Path) -> Device {
        let der = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let key = p256::SecretKey::from_pkcs8_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
        Device {
            id: id.into(),
            key: key.into(),
            x5t: X5t::of_certificate(&der),
            cert: cert.to_path_buf(),
        }
    }

    /// Message `counter` of this device.
    fn sign(&self, counter: u64, payload: &[u8]) -> Vec<u8> {
        encode_sign1_to_vec(payload, counter, &self.x5t, Tagging::Untagged, &self.key).unwrap()
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A hub with gateway `gw1`, an application `app` subscribed to every device's topics, and the
/// credentials directory.
struct Rig {
    hub: TestHub,
    creds: PathBuf,
    gw: Paho,
    app: Paho,
}

impl Rig {
    fn start(hub: TestHub) -> Rig {
        let creds = hub.path("creds");
        hub.ok(&["gateway", "create", "gw1", "--out", p(&creds)]);
        hub.ok(&[
            "app",
            "create",
            "app",
            "--out",
            p(&creds),
            "--subscribe",
            "devices/+/#",
        ]);
        let gw = connect(&hub, &creds, "gw1");
        let app = connect(&hub, &creds, "app");
        let mut rig = Rig {
            hub,
            creds,
            gw,
            app,
        };
        rig.app.send("sub devices/+/# 1");
        let l = rig
            .app
            .next_line(|l| l.starts_with("suback"), T)
            .expect("suback");
        assert_eq!(l, "suback 1");
        rig
    }

    /// The gateway relays `object` for `device` on `suffix` (QoS 1); returns the PUBACK code.
    fn relay(&mut self, device: &str, suffix: &str, object: &[u8]) -> u8 {
        self.relay_with(device, suffix, object, &[])
    }

    fn relay_with(
        &mut self,
        device: &str,
        suffix: &str,
        object: &[u8],
        user: &[(&str, &str)],
    ) -> u8 {
        let topic = format!("gateways/gw1/up/{device}/{suffix}");
        let mid = self.gw.publish_bytes(&topic, object, 1, user);
        self.gw.ack(mid, T).expect("PUBACK")
    }

    /// Waits until the application has `n` messages; returns them all.
    fn delivered(&mut self, n: usize) -> Vec<RawMessage> {
        let deadline = Instant::now() + T;
        loop {
            let got = self.app.raw_messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// The refused relays audited for `device`, newest first: their details.
    fn refusals(&self, device: &str) -> Vec<String> {
        self.hub
            .json(&["audit", "--limit", "200"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "gateway.relay" && e["target"] == device)
            .map(|e| {
                assert_eq!(e["outcome"], "refused", "{e}");
                assert!(e["actor"].as_str().unwrap().starts_with("gw1@"), "{e}");
                e["detail"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// Relays `object` and checks it is refused with 0x87 and audited with `reason` for
    /// `device`.
    fn refused(&mut self, device: &str, object: &[u8], reason: &str) {
        let before = self.refusals(device).len();
        assert_eq!(self.relay(device, "telemetry", object), 0x87, "{reason}");
        let after = self.refusals(device);
        assert_eq!(after.len(), before + 1, "{reason}: {after:?}");
        assert!(
            after[0].starts_with(&format!("{reason}: ")),
            "expected {reason}, audited {:?}",
            after[0]
        );
    }
}

/// A paho-mqtt MQTT 5 client over mutual TLS with `creds/{id}.crt`.
fn connect(hub: &TestHub, creds: &Path, id: &str) -> Paho {
    let (c, first) = Paho::connect_tls(
        &hub.mqtt_tls,
        "5",
        id,
        &hub.bundle(),
        &creds.join(format!("{id}.crt")),
        &creds.join(format!("{id}.key")),
    );
    assert_eq!(first, "connack 0", "{id}");
    c
}

/// The device's certificate as an application gets it from the hub (`moat cert show`).
fn certificate_from_hub(hub: &TestHub, device: &str, into: &Path) -> PathBuf {
    let certs = hub.json(&["cert", "list", "--device", device]);
    let serial = certs[0]["serial"].as_str().unwrap().to_string();
    let shown = hub.json(&["cert", "show", &serial]);
    let pem = shown["pem"].as_str().expect("the certificate's PEM");
    let path = into.join(format!("{device}-from-hub.pem"));
    std::fs::write(&path, pem).unwrap();
    path
}

/// pycose verifies `object` with `cert`: Some((counter, payload)), None if it refuses.
fn pycose_verifies(cert: &Path, object: &[u8]) -> Option<(u64, Vec<u8>)> {
    pycose_app(cert, object, None)
}

/// The application (pycose): verifies `object` with `cert` and, given its private key
/// `decrypt_with`, decrypts a sealed payload: Some((counter, payload or plaintext)).
fn pycose_app(cert: &Path, object: &[u8], decrypt_with: Option<&Path>) -> Option<(u64, Vec<u8>)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/cose_app.py");
    let hex: String = object.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("python3")
        .arg(script)
        .arg(cert)
        .arg(hex)
        .args(decrypt_with)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refused:"),
            "pycose (pip install 'pycose==1.1.0' 'cbor2<6'): {err}"
        );
        return None;
    }
    let mut f = text.split_whitespace().skip(1);
    let counter = f.next().unwrap().parse().unwrap();
    let payload = f
        .next()
        .map(|h| {
            (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
                .collect()
        })
        .unwrap_or_default();
    Some((counter, payload))
}

/// `/metrics` as text.
fn metrics(hub: &TestHub) -> String {
    let (ok, text) = run("curl", &["-sS", &format!("{}/metrics", hub.metrics_url)]);
    assert!(ok, "{text}");
    text
}

fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sample} not in /metrics"))
}

#[test]
fn relayed_messages_arrive_verified_and_forged_or_foreign_ones_never() {
    let mut rig = Rig::start(TestHub::start());
    let creds = rig.creds.clone();
    let dev1 = Device::create(&rig.hub, &creds, "dev1");
    let dev2 = Device::create(&rig.hub, &creds, "dev2");
    rig.hub.ok(&["gateway", "allow", "gw1", "--device", "dev1"]);
    let shown = rig.hub.json(&["gateway", "show", "gw1"]);
    assert_eq!(shown["topics"], "gateways/gw1/#");
    assert_eq!(shown["allowances"][0]["kind"], "device");
    assert_eq!(shown["allowances"][0]["name"], "dev1");

    // A device's message, relayed: the application gets the COSE bytes unchanged on the
    // device's topic, with the verified identity, and verifies them itself with pycose.
    let first = dev1.sign(1, b"21.5 C");
    assert_eq!(rig.relay("dev1", "telemetry/temp", &first), 0);
    let got = rig.delivered(1);
    assert_eq!(got[0].topic, "devices/dev1/telemetry/temp");
    assert_eq!(got[0].payload, first);
    assert_eq!(got[0].property("moat-device"), Some("dev1"));
    assert_eq!(got[0].property("moat-gateway"), Some("gw1"));
    assert_eq!(got[0].property("moat-cose"), Some("ES256"));
    let cert = certificate_from_hub(&rig.hub, "dev1", &creds);
    assert_eq!(
        pycose_verifies(&cert, &got[0].payload),
        Some((1, b"21.5 C".to_vec()))
    );
    // The same bytes with one payload bit flipped: pycose refuses them too.
    // (The payload's last byte: before the signature's 2-byte head and 64 bytes.)
    let mut altered = first.clone();
    let at = altered.len() - 67;
    altered[at] ^= 1;
    assert_eq!(pycose_verifies(&cert, &altered), None);

    // Refused, each audited with its reason, none delivered:
    // - altered by the gateway;
    let mut tampered = dev1.sign(2, b"21.5 C");
    let at = tampered.len() - 67;
    assert_eq!(tampered[at], b'C');
    tampered[at] = b'F';
    rig.refused("dev1", &tampered, "forged");
    // - replayed (same counter), and below the window (32 counters);
    rig.refused("dev1", &first, "replayed");
    assert_eq!(rig.relay("dev1", "telemetry", &dev1.sign(100, b"jump")), 0);
    rig.refused("dev1", &dev1.sign(50, b"late"), "too_old");
    assert_eq!(
        rig.relay("dev1", "telemetry", &dev1.sign(90, b"in window")),
        0
    );
    rig.refused("dev1", &dev1.sign(90, b"in window"), "replayed");
    // - signed with another device's key but naming this device's certificate, or naming
    //   the other device's certificate;
    let mut impostor = Device::load("dev2", &dev2.cert, &creds.join("dev2.key"));
    impostor.x5t = dev1.x5t;
    rig.refused("dev1", &impostor.sign(101, b"impostor"), "forged");
    rig.refused("dev1", &dev2.sign(102, b"other cert"), "forged");
    // - for a device the gateway may not serve (signature and counter fine);
    rig.refused("dev2", &dev2.sign(1, b"not yours"), "not_allowed");
    // - not a COSE object at all.
    rig.refused("dev1", b"plain text", "malformed");

    // Allowed by group: dev2 joins group field, the gateway may serve the group.
    rig.hub.ok(&["device", "set-group", "dev2", "field"]);
    rig.hub.ok(&["gateway", "allow", "gw1", "--group", "field"]);
    assert_eq!(rig.relay("dev2", "telemetry", &dev2.sign(1, b"dev2 ok")), 0);

    // The gateway cannot claim a device's topic itself: refused by its ACL, audited.
    let mid = rig
        .gw
        .publish_bytes("devices/dev1/telemetry", &dev1.sign(103, b"direct"), 1, &[]);
    assert_eq!(rig.gw.ack(mid, T), Some(0x87));
    // Spoofed identity properties from the gateway: the hub's own replace them.
    assert_eq!(
        rig.relay_with(
            "dev1",
            "telemetry",
            &dev1.sign(104, b"spoofed props"),
            &[
                ("moat-device", "dev2"),
                ("moat-gateway", "elsewhere"),
                ("note", "kept")
            ]
        ),
        0
    );

    let got = rig.delivered(5);
    let payloads: Vec<&[u8]> = got.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(
        payloads[..4],
        [
            first.as_slice(),
            &dev1.sign(100, b"jump"),
            &dev1.sign(90, b"in window"),
            &dev2.sign(1, b"dev2 ok"),
        ],
        "accepted messages only, in order"
    );
    assert_eq!(got.len(), 5, "nothing refused was delivered: {got:?}");
    assert_eq!(got[3].property("moat-device"), Some("dev2"));
    assert_eq!(got[3].topic, "devices/dev2/telemetry");
    let last = &got[4];
    assert_eq!(last.topic, "devices/dev1/telemetry");
    assert_eq!(
        last.user,
        [
            ("note".to_string(), "kept".to_string()),
            ("moat-device".to_string(), "dev1".to_string()),
            ("moat-gateway".to_string(), "gw1".to_string()),
            ("moat-cose".to_string(), "ES256".to_string()),
        ]
    );

    // A device connected directly cannot name another device either.
    let dev9_dir = creds.join("dev9");
    rig.hub
        .ok(&["device", "create", "dev9", "--out", p(&dev9_dir)]);
    let mut dev9 = connect(&rig.hub, &dev9_dir, "dev9");
    let mid = dev9.publish_bytes("devices/dev9/state", b"on", 1, &[("moat-device", "dev1")]);
    assert_eq!(dev9.ack(mid, T), Some(0));
    let got = rig.delivered(6);
    assert_eq!(got[5].topic, "devices/dev9/state");
    assert!(got[5].user.is_empty(), "{:?}", got[5].user);

    let audit = rig.hub.json(&["audit", "--limit", "200"]);
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (action, who) in [
        ("mqtt.publish_denied", "gw1@"),
        ("mqtt.spoofed_properties", "gw1@"),
        ("mqtt.spoofed_properties", "dev9@"),
        ("gateway.create", "admin"),
        ("gateway.allow", "admin"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, w)| a == action && w.starts_with(who)),
            "{action} by {who} not audited: {actions:?}"
        );
    }

    // Counted by reason, and a posture finding for the gateway.
    let m = metrics(&rig.hub);
    assert_eq!(metric(&m, "moat_relay_accepted_total"), 5.0);
    assert_eq!(
        metric(&m, "moat_relay_refused_total{reason=\"forged\"}"),
        3.0
    );
    assert_eq!(
        metric(&m, "moat_relay_refused_total{reason=\"replayed\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "moat_relay_refused_total{reason=\"too_old\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "moat_relay_refused_total{reason=\"not_allowed\"}"),
        1.0
    );
    assert!(metric(&m, "moat_mqtt_reserved_properties_stripped_total") >= 2.0);
    let posture = rig.hub.json(&["audit", "posture"]);
    let finding = posture["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "relay_refused" && f["subject"] == "gw1")
        .unwrap_or_else(|| panic!("no relay_refused finding: {posture}"));
    assert_eq!(finding["severity"], "high", "{finding}");
    assert!(
        finding["detail"].as_str().unwrap().contains("forged 3"),
        "{finding}"
    );

    // Revoking the gateway closes its session and it cannot come back.
    rig.hub.ok(&["gateway", "revoke", "gw1"]);
    assert!(
        rig.gw.next_line(|l| l.starts_with("closed"), T).is_some(),
        "the revoked gateway's session was not closed"
    );
    let (_, first) = Paho::connect_tls(
        &rig.hub.mqtt_tls,
        "5",
        "gw1",
        &rig.hub.bundle(),
        &creds.join("gw1.crt"),
        &creds.join("gw1.key"),
    );
    assert_ne!(first, "connack 0");
    assert_eq!(
        rig.hub.json(&["gateway", "show", "gw1"])["state"],
        "revoked"
    );
}

#[test]
fn replays_are_refused_after_a_restart() {
    let mut rig = Rig::start(TestHub::start());
    let creds = rig.creds.clone();
    let dev = Device::create(&rig.hub, &creds, "dev1");
    rig.hub.ok(&["gateway", "allow", "gw1", "--device", "dev1"]);
    let old = dev.sign(7, b"before");
    assert_eq!(rig.relay("dev1", "t", &old), 0);
    assert_eq!(rig.relay("dev1", "t", &dev.sign(40, b"later")), 0);

    rig.hub.stop();
    rig.hub.spawn().expect("restarts");
    rig.gw = connect(&rig.hub, &creds, "gw1");
    rig.app = connect(&rig.hub, &creds, "app");
    rig.app.send("sub devices/+/# 1");
    assert!(rig.app.next_line(|l| l == "suback 1", T).is_some());

    rig.refused("dev1", &dev.sign(40, b"later"), "replayed");
    rig.refused("dev1", &old, "too_old");
    assert_eq!(rig.relay("dev1", "t", &dev.sign(41, b"after")), 0);
    let got = rig.delivered(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, dev.sign(41, b"after"));
}

#[test]
fn revoked_retired_expired_and_disabled_devices_are_refused() {
    let hub = TestHub::start_node(|cfg| {
        cfg.enrollment.rotation_overlap = Duration::from_secs(2);
    })
    .expect("hub starts");
    let mut rig = Rig::start(hub);
    let creds = rig.creds.clone();
    let vendor = pki::TestCa::new("Acme");
    use pki::Register;
    vendor.register(&rig.hub, "acme");
    let expires = Instant::now() + Duration::from_secs(15);
    let (short_cert, short_key) = vendor.leaf(
        &creds,
        "dev-exp",
        "dev-exp",
        time::Duration::minutes(-1),
        time::Duration::seconds(15),
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    rig.hub
        .ok(&["device", "create", "dev-exp", "--cert", p(&short_cert)]);
    let expiring = Device::load("dev-exp", &short_cert, &short_key);
    let revoked = Device::create(&rig.hub, &creds, "dev-rev");
    let disabled = Device::create(&rig.hub, &creds, "dev-off");
    let rotated = Device::create(&rig.hub, &creds, "dev-rot");
    for d in ["dev-exp", "dev-rev", "dev-off", "dev-rot"] {
        rig.hub.ok(&["gateway", "allow", "gw1", "--device", d]);
    }
    // All fine first.
    for d in [&expiring, &revoked, &disabled, &rotated] {
        assert_eq!(rig.relay(&d.id, "t", &d.sign(1, b"hello")), 0, "{}", d.id);
    }
    rig.delivered(4);

    rig.hub.ok(&["device", "revoke", "dev-rev"]);
    rig.refused("dev-rev", &revoked.sign(2, b"x"), "revoked");
    rig.hub.ok(&["device", "disable", "dev-off"]);
    rig.refused("dev-off", &disabled.sign(2, b"x"), "disabled");
    // Enabled again, it relays again.
    rig.hub.ok(&["device", "enable", "dev-off"]);
    assert_eq!(rig.relay("dev-off", "t", &disabled.sign(3, b"back")), 0);

    // Rotation: the new key works at once, the old one until the overlap (2 s) ends.
    let rot_dir = creds.join("rot");
    rig.hub
        .ok(&["device", "rotate", "dev-rot", "--out", p(&rot_dir)]);
    let renewed = Device::load(
        "dev-rot",
        &rot_dir.join("dev-rot.crt"),
        &rot_dir.join("dev-rot.key"),
    );
    assert_eq!(rig.relay("dev-rot", "t", &renewed.sign(2, b"new key")), 0);
    std::thread::sleep(Duration::from_secs(3));
    let before = rig.refusals("dev-rot").len();
    assert_eq!(
        rig.relay("dev-rot", "t", &rotated.sign(3, b"old key")),
        0x87
    );
    let after = rig.refusals("dev-rot");
    assert_eq!(after.len(), before + 1);
    // Past its retire time (or revoked by the retirement sweep already).
    assert!(
        after[0].starts_with("retired: ") || after[0].starts_with("revoked: "),
        "{after:?}"
    );

    // Expired since it was bound (validity checked at the time of use).
    std::thread::sleep(
        (expires + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    );
    rig.refused("dev-exp", &expiring.sign(2, b"x"), "expired");

    let got = rig.delivered(6);
    assert_eq!(got.len(), 6, "only the accepted ones: {got:?}");
    assert_eq!(got[4].payload, disabled.sign(3, b"back"));
    assert_eq!(got[5].payload, renewed.sign(2, b"new key"));
}

#[test]
fn gateway_commands_refuse_bad_input_with_a_clear_error() {
    let hub = TestHub::start();
    let creds = hub.path("creds");
    hub.ok(&["gateway", "create", "gw1", "--out", p(&creds)]);
    hub.ok(&[
        "app",
        "create",
        "app",
        "--out",
        p(&creds),
        "--subscribe",
        "devices/+/#",
    ]);
    Device::create(&hub, &creds, "dev1");
    let e = hub.fails(&["gateway", "create", "gw1", "--out", p(&hub.path("other"))]);
    assert!(e.contains("already exists"), "{e}");
    let e = hub.fails(&["gateway", "allow", "nope", "--device", "dev1"]);
    assert!(e.contains("gateway \"nope\" not found"), "{e}");
    let e = hub.fails(&["gateway", "allow", "gw1", "--device", "ghost"]);
    assert!(e.contains("not found"), "{e}");
    let e = hub.fails(&["gateway", "allow", "gw1", "--device", "app"]);
    assert!(e.contains("not a device"), "{e}");
    let e = hub.fails(&["gateway", "allow", "gw1", "--enrollment-group", "none"]);
    assert!(e.contains("enrollment group \"none\" not found"), "{e}");
    let e = hub.fails(&["gateway", "disallow", "gw1", "--device", "dev1"]);
    assert!(e.contains("not found"), "{e}");
    let e = hub.fails(&["gateway", "show", "dev1"]);
    assert!(e.contains("gateway \"dev1\" not found"), "{e}");
    // Clap refuses a missing or double target (usage error, exit 2).
    let out = hub.cli(&["gateway", "allow", "gw1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = hub.cli(&["gateway", "allow", "gw1", "--device", "a", "--group", "b"]);
    assert_eq!(out.status.code(), Some(2));
    // A gateway's topic access is fixed.
    let e = hub.fails(&["device", "set-group", "gw1", "field"]);
    assert!(e.contains("gateways/gw1/#"), "{e}");

    // The API answers bad bodies with problem documents.
    let token = std::fs::read_to_string(hub.data.join("admin.token")).unwrap();
    let post = |path: &str, body: &str| {
        let (ok, text) = run(
            "curl",
            &[
                "-sS",
                "-w",
                "\n%{http_code}",
                "--cacert",
                p(&hub.bundle()),
                "-H",
                &format!("Authorization: Bearer {}", token.trim()),
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                &format!("{}/api/v1{path}", hub.admin_url),
            ],
        );
        assert!(ok, "{text}");
        text
    };
    let t = post("/gateways/gw1/allow", r#"{"device":"dev1","group":"g"}"#);
    assert!(t.trim_end().ends_with("400"), "{t}");
    assert!(t.contains("urn:moat:problem:invalid-request"), "{t}");
    assert!(
        t.contains("exactly one of device, group or enrollment_group"),
        "{t}"
    );
    let t = post("/gateways/gw1/allow", r#"{"devices":"dev1"}"#);
    assert!(
        t.trim_end().ends_with("400") || t.trim_end().ends_with("422"),
        "{t}"
    );
    assert!(t.contains("urn:moat:problem:bad-body"), "{t}");
    let t = post("/gateways", r#"{"name":"bad/name"}"#);
    assert!(t.trim_end().ends_with("400"), "{t}");
    assert!(t.contains("urn:moat:problem:invalid-request"), "{t}");

    hub.ok(&["gateway", "allow", "gw1", "--device", "dev1"]);
    hub.ok(&["gateway", "allow", "gw1", "--group", "field"]);
    let list = hub.json(&["gateway", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "gw1");
    assert_eq!(list[0]["allowances"].as_array().unwrap().len(), 2);
    hub.ok(&["gateway", "disallow", "gw1", "--group", "field"]);
    assert_eq!(
        hub.json(&["gateway", "show", "gw1"])["allowances"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (ok, doc) = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            p(&hub.bundle()),
            &format!("{}/api/openapi.json", hub.admin_url),
        ],
    );
    assert!(ok, "{doc}");
    for path in [
        "/api/v1/gateways",
        "/api/v1/gateways/{name}",
        "/api/v1/gateways/{name}/allow",
        "/api/v1/gateways/{name}/disallow",
        "/api/v1/gateways/{name}/revoke",
    ] {
        assert!(
            doc.contains(&format!("\"{path}\"")),
            "{path} not in the OpenAPI document"
        );
    }
}

/// A process whose stdout lines are read as they come.
struct Lines {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    seen: std::cell::RefCell<Vec<String>>,
}

impl Lines {
    fn spawn(cmd: &mut Command) -> Lines {
        Self::spawn_to(cmd, std::process::Stdio::inherit())
    }

    /// With its standard error into `stderr` (a file the test reads).
    fn spawn_to(cmd: &mut Command, stderr: impl Into<std::process::Stdio>) -> Lines {
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Lines {
            child,
            rx,
            seen: Default::default(),
        }
    }

    /// Everything it printed so far, read or not.
    fn all(&self) -> String {
        let mut seen = self.seen.borrow_mut();
        seen.extend(self.rx.try_iter());
        seen.join("\n")
    }

    /// The next JSON line `want` accepts (others are skipped).
    fn expect(&self, what: &str, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what} in time"));
            self.seen.borrow_mut().push(l.clone());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l)
                && want(&v)
            {
                return v;
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn moat_device() -> PathBuf {
    let bin = Path::new(MOAT).with_file_name("moat-device");
    assert!(
        bin.exists(),
        "build it first: cargo build -p moat-device ({})",
        bin.display()
    );
    bin
}

#[test]
fn a_device_on_a_udp_link_reaches_the_application_and_takes_signed_commands() {
    let hub = TestHub::start();
    let creds = hub.path("creds");
    let state = hub.path("device-state");
    std::fs::create_dir_all(&state).unwrap();
    hub.ok(&["gateway", "create", "gw1", "--out", p(&creds)]);
    hub.ok(&[
        "app",
        "create",
        "app",
        "--out",
        p(&creds),
        "--subscribe",
        "devices/+/#",
        "--publish",
        "gateways/+/down/#",
    ]);
    Device::create(&hub, &creds, "dev1");
    Device::create(&hub, &creds, "dev2");
    hub.ok(&["gateway", "allow", "gw1", "--device", "dev1"]);
    let (link, dev_port) = (free_udp_port(), free_udp_port());
    let dev_addr = format!("127.0.0.1:{dev_port}");
    let port = hub.mqtt_tls.rsplit_once(':').unwrap().1;
    let gateway = Lines::spawn(
        Command::new(moat_device())
            .args(["gateway", "--mqtt", &format!("mqtts://localhost:{port}")])
            .args(["--ca", p(&hub.bundle())])
            .args(["--cert", p(&creds.join("gw1.crt"))])
            .args(["--key", p(&creds.join("gw1.key"))])
            .args(["--name", "gw1", "--listen", &format!("127.0.0.1:{link}")])
            .args(["--device", &format!("dev1={dev_addr}")])
            .args(["--device", &format!("dev2=127.0.0.1:{}", free_udp_port())]),
    );
    gateway.expect("the gateway's connection", |v| v["event"] == "connected");
    let mut app = connect(&hub, &creds, "app");
    app.send("sub devices/+/# 1");
    assert!(app.next_line(|l| l == "suback 1", T).is_some());

    // Up: the device signs with its key and counter file, the gateway relays the frame.
    let send = |payload: &str| -> serde_json::Value {
        let out = Command::new(moat_device())
            .args(["cose-send", "--key", p(&creds.join("dev1.key"))])
            .args(["--cert", p(&creds.join("dev1.crt"))])
            .args(["--counter-file", p(&state.join("dev1.counter"))])
            .args([
                "--gateway",
                &format!("127.0.0.1:{link}"),
                "--bind",
                &dev_addr,
            ])
            .args(["--payload", payload])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = send("21.5 C");
    assert_eq!(first["counter"], 0);
    gateway.expect("PUBACK", |v| {
        v["event"] == "puback" && v["reason"] == "Success"
    });
    assert_eq!(send("21.7 C")["counter"], 1);
    gateway.expect("PUBACK", |v| {
        v["event"] == "puback" && v["reason"] == "Success"
    });
    let got = {
        let deadline = Instant::now() + T;
        loop {
            let got = app.raw_messages();
            if got.len() >= 2 || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    };
    assert_eq!(got.len(), 2, "{got:?}");
    let frame: Vec<u8> = {
        let h = first["frame"].as_str().unwrap();
        (0..h.len() / 2)
            .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    };
    assert_eq!(got[0].topic, "devices/dev1/telemetry");
    assert_eq!(got[0].payload, frame);
    assert_eq!(got[0].property("moat-gateway"), Some("gw1"));
    let cert = certificate_from_hub(&hub, "dev1", &creds);
    assert_eq!(
        pycose_verifies(&cert, &got[1].payload),
        Some((1, b"21.7 C".to_vec()))
    );
    // The first frame again on the link: the hub refuses the replay.
    let radio = std::net::UdpSocket::bind(&dev_addr).unwrap();
    radio.send_to(&frame, format!("127.0.0.1:{link}")).unwrap();
    gateway.expect("the refusal", |v| {
        v["event"] == "puback" && v["reason"] == "NotAuthorized"
    });
    drop(radio);

    // Down: the application signs a command with its own key; the device trusts its
    // certificate, and refuses an altered or replayed one.
    let receiver = Lines::spawn(
        Command::new(moat_device())
            .args(["cose-receive", "--bind", &dev_addr])
            .args(["--trust", p(&creds.join("app.crt"))])
            .args(["--window-file", p(&state.join("dev1.window"))])
            .args(["--count", "3", "--timeout", "20"]),
    );
    receiver.expect("the device listening", |v| v["event"] == "listening");
    let signer = Device::load("app", &creds.join("app.crt"), &creds.join("app.key"));
    let command = signer.sign(1, b"open valve");
    let down = |app: &mut Paho, device: &str, object: &[u8]| {
        let mid = app.publish_bytes(&format!("gateways/gw1/down/{device}/cmd"), object, 1, &[]);
        app.ack(mid, T).expect("PUBACK")
    };
    assert_eq!(down(&mut app, "dev1", &command), 0);
    let v = receiver.expect("the command", |v| v.get("accepted").is_some());
    assert_eq!(v["accepted"], true, "{v}");
    assert_eq!(
        (v["counter"].as_u64(), v["payload"].as_str()),
        (Some(1), Some("open valve"))
    );
    let mut altered = signer.sign(2, b"open valve");
    let at = altered.len() - 67;
    altered[at] ^= 1;
    assert_eq!(down(&mut app, "dev1", &altered), 0);
    let v = receiver.expect("the altered command", |v| v.get("accepted").is_some());
    assert_eq!(v["accepted"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("signature"), "{v}");
    assert_eq!(down(&mut app, "dev1", &command), 0);
    let v = receiver.expect("the replayed command", |v| v.get("accepted").is_some());
    assert_eq!(v["accepted"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("(replay)"), "{v}");

    // The hub refuses downlinks through a gateway that does not serve the device, and
    // payloads that are not signed objects.
    assert_eq!(down(&mut app, "dev2", &signer.sign(3, b"x")), 0x87);
    assert_eq!(down(&mut app, "dev1", b"not signed"), 0x87);
    let audit = hub.json(&["audit", "--limit", "100"]);
    let downlinks: Vec<&serde_json::Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "gateway.downlink")
        .collect();
    assert_eq!(downlinks.len(), 2, "{downlinks:?}");
    assert!(downlinks.iter().any(
        |e| e["target"] == "dev2" && e["detail"].as_str().unwrap().starts_with("not_allowed: ")
    ));
    assert!(
        downlinks
            .iter()
            .any(|e| e["target"] == "dev1"
                && e["detail"].as_str().unwrap().starts_with("malformed: "))
    );
}

/// Every file under `dir`, as bytes (the registry, its WAL, blobs, logs).
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A payload sealed to the application's key crosses the gateway and the hub as ciphertext:
/// the application (offline, persistent session) has it queued in the hub's registry, and
/// neither the hub's data dir nor its debug log nor the gateway's output holds the plaintext,
/// while a clear payload sent beside it is found there (the search reaches the stored queue).
/// Back online, the application verifies and decrypts it with pycose.
#[test]
fn sealed_payloads_cross_the_gateway_and_the_hub_as_ciphertext() {
    let hub = TestHub::start_with(&[], &[("RUST_LOG", "debug")]);
    let creds = hub.path("creds");
    let state = hub.path("device-state");
    std::fs::create_dir_all(&state).unwrap();
    hub.ok(&["gateway", "create", "gw1", "--out", p(&creds)]);
    hub.ok(&[
        "app",
        "create",
        "app",
        "--out",
        p(&creds),
        "--subscribe",
        "devices/+/#",
    ]);
    Device::create(&hub, &creds, "dev1");
    hub.ok(&["gateway", "allow", "gw1", "--device", "dev1"]);
    // The application's own encryption key, made with openssl; devices get its public half.
    let (app_key, app_pub) = (creds.join("app-enc.key"), creds.join("app-enc.pub"));
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        &app_key,
    );
    openssl(&["pkey", "-in", p(&app_key), "-pubout"], &app_pub);

    let app_session = |hub: &TestHub| {
        let (c, first) = Paho::connect_tls_persistent(
            &hub.mqtt_tls,
            "5",
            "app",
            &hub.bundle(),
            &creds.join("app.crt"),
            &creds.join("app.key"),
        );
        assert_eq!(first, "connack 0");
        c
    };
    let mut app = app_session(&hub);
    app.send("sub devices/+/# 1");
    assert!(app.next_line(|l| l == "suback 1", T).is_some());
    app.quit();

    let (link, dev_addr) = (free_udp_port(), format!("127.0.0.1:{}", free_udp_port()));
    let port = hub.mqtt_tls.rsplit_once(':').unwrap().1;
    let gateway_log = hub.path("gateway.log");
    let gateway = Lines::spawn_to(
        Command::new(moat_device())
            .args(["gateway", "--mqtt", &format!("mqtts://localhost:{port}")])
            .args(["--ca", p(&hub.bundle())])
            .args(["--cert", p(&creds.join("gw1.crt"))])
            .args(["--key", p(&creds.join("gw1.key"))])
            .args(["--name", "gw1", "--listen", &format!("127.0.0.1:{link}")])
            .args(["--device", &format!("dev1={dev_addr}")])
            .env("RUST_LOG", "debug"),
        std::fs::File::create(&gateway_log).unwrap(),
    );
    gateway.expect("the gateway's connection", |v| v["event"] == "connected");
    const SECRET: &str = "s3cret 42.7C";
    const CLEAR: &str = "CLEAR-MARKER";
    let send = |payload: &str, sealed: bool| -> serde_json::Value {
        let mut cmd = Command::new(moat_device());
        cmd.args(["cose-send", "--key", p(&creds.join("dev1.key"))])
            .args(["--cert", p(&creds.join("dev1.crt"))])
            .args(["--counter-file", p(&state.join("dev1.counter"))])
            .args([
                "--gateway",
                &format!("127.0.0.1:{link}"),
                "--bind",
                &dev_addr,
            ])
            .args(["--payload", payload]);
        if sealed {
            cmd.args(["--encrypt-to", p(&app_pub)]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["sealed"], sealed, "{v}");
        gateway.expect("PUBACK", |v| {
            v["event"] == "puback" && v["reason"] == "Success"
        });
        v
    };
    let sealed = send(SECRET, true);
    send(CLEAR, false);
    // The frame on the link is ciphertext already.
    let frame = sealed["frame"].as_str().unwrap();
    assert!(!frame.contains(&hex_of(SECRET.as_bytes())));

    // Acknowledged to the gateway, so stored for the offline application: look everywhere.
    let hex_secret = hex_of(SECRET.as_bytes());
    let mut clear_found = Vec::new();
    for (path, bytes) in files_under(hub.path("").as_path()) {
        assert!(
            !contains(&bytes, SECRET.as_bytes()) && !contains(&bytes, hex_secret.as_bytes()),
            "the plaintext is in {}",
            path.display()
        );
        if contains(&bytes, CLEAR.as_bytes()) {
            clear_found.push(path);
        }
    }
    assert!(
        clear_found.iter().any(|p| p.starts_with(&hub.data)),
        "the clear control message is not in the hub's data dir: the search proves nothing \
         ({clear_found:?})"
    );
    assert!(!hub.log().contains(SECRET) && !hub.log().contains(&hex_secret));
    let out = gateway.all() + &std::fs::read_to_string(&gateway_log).unwrap();
    assert!(!out.contains(SECRET) && !out.contains(&hex_secret), "{out}");
    assert!(
        out.contains("puback"),
        "the gateway's output was read: {out}"
    );

    // The application comes back and gets both; pycose verifies the device's signature and
    // decrypts with the application key.
    let mut app = app_session(&hub);
    let got = {
        let deadline = Instant::now() + T;
        loop {
            let got = app.raw_messages();
            if got.len() >= 2 || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    };
    assert_eq!(got.len(), 2, "{got:?}");
    let cert = certificate_from_hub(&hub, "dev1", &creds);
    assert_eq!(got[0].property("moat-device"), Some("dev1"));
    assert!(moat_cose::is_sealed(
        moat_cose::decode_sign1(&got[0].payload).unwrap().payload()
    ));
    assert_eq!(
        pycose_app(&cert, &got[0].payload, Some(&app_key)),
        Some((0, SECRET.as_bytes().to_vec()))
    );
    assert_eq!(
        pycose_app(&cert, &got[1].payload, Some(&app_key)),
        Some((1, CLEAR.as_bytes().to_vec()))
    );
    // Another key does not open it.
    let other = creds.join("other.key");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        &other,
    );
    assert_eq!(pycose_app(&cert, &got[0].payload, Some(&other)), None);
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `openssl ARGS -out OUT`.
fn openssl(args: &[&str], out: &Path) {
    let done = Command::new("openssl")
        .args(args)
        .args(["-out", p(out)])
        .output()
        .expect("openssl");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// Relayed messages per second through one gateway (`moat-device gateway`, MQTT 5 QoS 1),
/// each verified by the hub (ES256, the certificate check, the stored counter window) and
/// republished. Debug build, SQLite, everything on one machine: a rough figure.
/// `cargo build -p moat-device && cargo test -p moat --test gateways relay_rate -- --ignored --nocapture`
#[test]
#[ignore]
fn relay_rate_through_one_gateway() {
    let hub = TestHub::start();
    let creds = hub.path("creds");
    hub.ok(&["gateway", "create", "gw1", "--out", p(&creds)]);
    let dev = Device::create(&hub, &creds, "dev1");
    hub.ok(&["gateway", "allow", "gw1", "--device", "dev1"]);
    let (link, dev_port) = (free_udp_port(), free_udp_port());
    let port = hub.mqtt_tls.rsplit_once(':').unwrap().1;
    let gateway = Lines::spawn(
        Command::new(moat_device())
            .args(["gateway", "--mqtt", &format!("mqtts://localhost:{port}")])
            .args(["--ca", p(&hub.bundle())])
            .args(["--cert", p(&creds.join("gw1.crt"))])
            .args(["--key", p(&creds.join("gw1.key"))])
            .args(["--name", "gw1", "--listen", &format!("127.0.0.1:{link}")])
            .args(["--device", &format!("dev1=127.0.0.1:{dev_port}")]),
    );
    gateway.expect("the gateway's connection", |v| v["event"] == "connected");
    let n = 2000u64;
    let frames: Vec<Vec<u8>> = (0..n).map(|i| dev.sign(i, b"21.5 C")).collect();
    let radio = std::net::UdpSocket::bind(format!("127.0.0.1:{dev_port}")).unwrap();
    let start = Instant::now();
    // In bursts the gateway's socket buffer holds, each acknowledged before the next.
    for burst in frames.chunks(50) {
        for f in burst {
            radio.send_to(f, format!("127.0.0.1:{link}")).unwrap();
        }
        for _ in burst {
            let v = gateway.expect("PUBACK", |v| v["event"] == "puback");
            assert_eq!(v["reason"], "Success", "{v}");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let m = metrics(&hub);
    assert_eq!(metric(&m, "moat_relay_accepted_total"), n as f64);
    eprintln!(
        "relay: {n} verified messages in {secs:.2} s = {:.0}/s through one gateway ({} bytes each)",
        n as f64 / secs,
        frames[0].len()
    );
}
