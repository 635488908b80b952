//! One admission path: every entry point that accepts a device certificate × every certificate
//! fault → the exact refusal, over real sockets, with TLS session resumption attempted on each
//! TLS listener. The client is OpenSSL (Python's ssl module, `tls_peer.py`), which keeps its
//! TLS session between a first connection, made while the certificate was good, and a
//! resumed one after the fault: the resumed handshake skips the client-certificate verifier,
//! so only the hub's one certificate check (`moat_core::CertificateCheck`) stands between the
//! client and the service. `moat cert explain` must name the same step.
//!
//! Entry points: MQTT CONNECT (8883), firmware downloads (`GET /fw/{digest}` on the download
//! listener), EST `simplereenroll` and field provisioning (`POST /provisioning/v1/register`)
//! on the HTTPS listener, and `moat cert explain`.

mod common;

use common::peer::{Answer, Proto, TlsPeer};
use common::pki::{Register, TestCa};
use common::*;
use rcgen::ExtendedKeyUsagePurpose;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Mqtt,
    Download,
    Est,
    Provision,
}

const ENTRIES: [Entry; 4] = [Entry::Mqtt, Entry::Download, Entry::Est, Entry::Provision];

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Mqtt => "mqtt",
            Entry::Download => "download",
            Entry::Est => "est",
            Entry::Provision => "provision",
        }
    }
}

/// Request bodies that reach the certificate check and then fail on their own (a CSR that is
/// base64/PEM but no CSR): answered 400 after the check admitted the certificate, 403 when
/// the check refused it.
struct Bodies {
    empty: PathBuf,
    est: PathBuf,
    provision: PathBuf,
}

impl Bodies {
    fn new(dir: &Path) -> Bodies {
        let b = Bodies {
            empty: dir.join("empty.body"),
            est: dir.join("est.body"),
            provision: dir.join("provision.body"),
        };
        std::fs::write(&b.empty, "").expect("w");
        std::fs::write(&b.est, "AAAA\n").expect("w");
        std::fs::write(
            &b.provision,
            r#"{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}"#,
        )
        .expect("w");
        b
    }
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.trim_end_matches('/').to_string()
}

/// A peer for `entry` presenting `cert`/`key`, claiming `client_id` on MQTT.
fn peer(
    hub: &TestHub,
    bodies: &Bodies,
    entry: Entry,
    cert: &Path,
    key: &Path,
    client_id: &str,
) -> TlsPeer {
    let bundle = hub.bundle();
    let api = host_port(&hub.admin_url);
    let (addr, proto) = match entry {
        Entry::Mqtt => (hub.mqtt_tls.clone(), Proto::Mqtt { client_id }),
        Entry::Download => (
            host_port(&hub.ota_download),
            Proto::Http {
                method: "GET",
                path: "/fw/0000000000000000000000000000000000000000000000000000000000000000",
                content_type: "application/octet-stream",
                body: &bodies.empty,
            },
        ),
        Entry::Est => (
            api,
            Proto::Http {
                method: "POST",
                path: "/.well-known/est/simplereenroll",
                content_type: "application/pkcs10",
                body: &bodies.est,
            },
        ),
        Entry::Provision => (
            api,
            Proto::Http {
                method: "POST",
                path: "/provisioning/v1/register",
                content_type: "application/json",
                body: &bodies.provision,
            },
        ),
    };
    TlsPeer::new(&addr, &bundle, cert, key, proto)
}

/// The certificate got through the check: MQTT CONNACK 0, or an HTTP answer that is not a
/// certificate refusal (the request itself then fails on purpose: no firmware, bad CSR).
fn assert_admitted(entry: Entry, a: &Answer, what: &str) {
    assert!(a.alert.is_none(), "{what}: TLS refused: {a:?}");
    match entry {
        Entry::Mqtt => assert_eq!(a.connack, Some(0), "{what}: {a:?}"),
        Entry::Download => assert!(
            a.status.is_some()
                && !a
                    .body
                    .as_deref()
                    .unwrap_or("")
                    .contains("device-not-admitted"),
            "{what}: {a:?}"
        ),
        Entry::Est | Entry::Provision => {
            assert_eq!(
                a.status,
                Some(400),
                "{what}: the CSR, not the certificate, fails: {a:?}"
            )
        }
    }
}

/// The audit log's refused `mqtt.connect` texts for `client_id`.
fn mqtt_refusals(hub: &TestHub, client_id: &str) -> Vec<String> {
    let audit = hub.json(&["audit", "--limit", "2000"]);
    audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| {
            e["action"] == "mqtt.connect"
                && e["actor"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("{client_id}@")))
        })
        .map(|e| format!("{} {}", e["target"], e["detail"]))
        .collect()
}

/// The check refused the certificate at `step`, its reason containing one of `reasons`:
/// MQTT says "not authorized" (CONNACK 5) and audits "STEP: reason"; the HTTP entry points
/// answer 403 with the reason.
fn assert_refused(
    hub: &TestHub,
    entry: Entry,
    a: &Answer,
    client_id: &str,
    step: &str,
    reasons: &[&str],
    what: &str,
) {
    assert!(
        a.alert.is_none(),
        "{what}: refused at TLS, not by the check: {a:?}"
    );
    match entry {
        Entry::Mqtt => {
            assert_eq!(a.connack, Some(5), "{what}: {a:?}");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let texts = mqtt_refusals(hub, client_id);
                let found = texts.iter().any(|t| {
                    t.contains(&format!("{step}: ")) && reasons.iter().any(|r| t.contains(r))
                });
                if found {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: no audited refusal at {step} ({reasons:?}): {texts:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        _ => {
            assert_eq!(a.status, Some(403), "{what}: {a:?}");
            let d = a.detail();
            assert!(
                reasons.iter().any(|r| d.contains(r)),
                "{what}: {reasons:?} in {d:?}"
            );
            if entry == Entry::Download {
                assert!(d.starts_with(&format!("{step} refuses")), "{what}: {d:?}");
            }
        }
    }
}

/// `moat cert explain` refuses `cert` at `step`.
fn assert_explain(hub: &TestHub, cert: &Path, step: &str, what: &str) {
    let out = hub.cli(&["--json", "cert", "explain", cert.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(3), "{what}: explain accepted it");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let failed: Vec<_> = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["outcome"] == "fail")
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(failed, [step], "{what}: {v}");
}

/// Faults that happen to a certificate after a device connected with it.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Its validity period ends.
    Expired,
    /// The certificate is revoked.
    Revoked,
    /// A rotation superseded it and the overlap ended.
    Retired,
    /// The device is suspended.
    Disabled,
    /// The device is decommissioned (every certificate revoked).
    Decommissioned,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Expired => "expired",
            Fault::Revoked => "revoked",
            Fault::Retired => "retired",
            Fault::Disabled => "disabled",
            Fault::Decommissioned => "decommissioned",
        }
    }

    /// The refusal of the check: step and reason fragments.
    fn refusal(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Fault::Expired => ("validity", &["expired at"]),
            Fault::Revoked | Fault::Decommissioned => ("revocation", &["is revoked"]),
            // The retirement sweep may have revoked it (reason superseded) by then.
            Fault::Retired => ("revocation", &["superseded", "is revoked"]),
            Fault::Disabled => ("device_state", &["suspended"]),
        }
    }
}

const FAULTS: [Fault; 5] = [
    Fault::Expired,
    Fault::Revoked,
    Fault::Retired,
    Fault::Disabled,
    Fault::Decommissioned,
];

#[test]
fn every_entry_point_refuses_every_certificate_fault_even_over_a_resumed_session() {
    let conf = tempfile::tempdir().expect("tempdir");
    let file = conf.path().join("moat.toml");
    std::fs::write(&file, "[enrollment]\nrotation_overlap = \"1s\"\n").expect("config");
    let hub = TestHub::start_with(&["--config", file.to_str().expect("p")], &[]);
    let dir = hub.path("creds");
    std::fs::create_dir_all(&dir).expect("dir");
    let o = dir.to_str().expect("p");
    let bodies = Bodies::new(&dir);
    let vendor = TestCa::new("vendor");
    vendor.register(&hub, "vendor");

    // One device per (fault, entry point): hub-issued certificates, except for expiry, which
    // needs a certificate living a few seconds (a vendor's, bound to its device).
    struct Case {
        fault: Fault,
        entry: Entry,
        id: String,
        cert: PathBuf,
        key: PathBuf,
        peer: Option<TlsPeer>,
    }
    let mut cases = Vec::new();
    for fault in FAULTS {
        for entry in ENTRIES {
            let id = format!("{}-{}", fault.name(), entry.name());
            if !matches!(fault, Fault::Expired) {
                hub.ok(&["device", "create", &id, "--out", o]);
            }
            cases.push(Case {
                fault,
                entry,
                cert: dir.join(format!("{id}.crt")),
                key: dir.join(format!("{id}.key")),
                id,
                peer: None,
            });
        }
    }
    // The short-lived certificates last: valid from a minute ago to a few seconds from now.
    let lifetime = time::Duration::seconds(12);
    let expires = Instant::now() + Duration::from_secs(12);
    for c in cases.iter().filter(|c| matches!(c.fault, Fault::Expired)) {
        vendor.leaf(
            &dir,
            &c.id,
            &c.id,
            time::Duration::minutes(-1),
            lifetime,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        hub.ok(&[
            "device",
            "create",
            &c.id,
            "--cert",
            c.cert.to_str().expect("p"),
        ]);
    }

    // 1. While everything is good: a full handshake, admitted, its TLS session kept.
    for c in &mut cases {
        let mut p = peer(&hub, &bodies, c.entry, &c.cert, &c.key, &c.id);
        let a = p.full();
        let what = format!("{} before {}", c.entry.name(), c.fault.name());
        if matches!(c.fault, Fault::Expired) && c.entry == Entry::Est {
            // EST renews hub-issued certificates only: a vendor's passes the check and is
            // then refused for what it is.
            assert_eq!(a.status, Some(403), "{what}: {a:?}");
            assert!(
                a.detail().contains("renew it with that CA"),
                "{what}: {a:?}"
            );
        } else {
            assert_admitted(c.entry, &a, &what);
        }
        c.peer = Some(p);
    }

    // 2. The faults.
    for c in &cases {
        match c.fault {
            Fault::Expired => {}
            Fault::Revoked => {
                hub.ok(&["device", "revoke", &c.id]);
            }
            Fault::Retired => {
                let new = dir.join("rotated");
                hub.ok(&["device", "rotate", &c.id, "--out", new.to_str().expect("p")]);
            }
            Fault::Disabled => {
                hub.ok(&["device", "disable", &c.id]);
            }
            Fault::Decommissioned => {
                hub.ok(&["device", "decommission", &c.id]);
            }
        }
    }
    // The rotation overlap (1 s) and the short certificates' lifetime end.
    let now = Instant::now();
    let wait = expires.saturating_duration_since(now) + Duration::from_millis(1500);
    std::thread::sleep(wait.max(Duration::from_millis(1500)));

    // 3. Each client resumes its TLS session: the check refuses, at the right step. Then a
    //    full handshake: refused too (by the TLS verifier where it knows, else the check).
    for c in &mut cases {
        let what = format!("{} after {} (resumed)", c.entry.name(), c.fault.name());
        let p = c.peer.as_mut().expect("peer");
        let a = p.resume();
        assert!(
            a.resumed,
            "{what}: the hub did not resume the TLS session: {a:?}"
        );
        let (step, reasons) = c.fault.refusal();
        assert_refused(&hub, c.entry, &a, &c.id, step, reasons, &what);

        let what = format!(
            "{} after {} (full handshake)",
            c.entry.name(),
            c.fault.name()
        );
        let a = p.full();
        match c.fault {
            Fault::Expired => assert_alert(&a, "certificate expired", &what),
            Fault::Revoked | Fault::Decommissioned => {
                assert_alert(&a, "certificate revoked", &what)
            }
            Fault::Retired if a.alert.is_some() => {
                // Swept already: the verifier's revoked set has it.
                assert_alert(&a, "certificate revoked", &what)
            }
            _ => assert_refused(&hub, c.entry, &a, &c.id, step, reasons, &what),
        }
        assert_explain(&hub, &c.cert, step, &what);
    }
}

fn assert_alert(a: &Answer, alert: &str, what: &str) {
    let got = a.alert.as_deref().unwrap_or_default().to_lowercase();
    assert!(
        got.contains(alert),
        "{what}: expected TLS alert {alert:?}: {a:?}"
    );
}

/// Faults a certificate has from the start (not yet valid, an unknown CA, a station's
/// certificate, an identity the client does not own): a full handshake at every entry point
/// refuses them, at TLS where the verifier knows, else at the check or the protocol's own
/// identity rule; `moat cert explain` names the same step.
#[test]
fn certificates_that_were_never_good_are_refused_at_every_entry_point() {
    let hub = TestHub::start();
    let dir = hub.path("creds");
    std::fs::create_dir_all(&dir).expect("dir");
    let o = dir.to_str().expect("p");
    let bodies = Bodies::new(&dir);
    let vendor = TestCa::new("vendor");
    vendor.register(&hub, "vendor");
    let foreign = TestCa::new("foreign");
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    let day = time::Duration::days(1);
    let (future, future_key) = vendor.leaf(&dir, "future", "future", day, day * 2, client.clone());
    let (alien, alien_key) = foreign.leaf(&dir, "alien", "alien", -day, day, client);
    hub.ok(&["station", "create", "line-1", "--out", o]);
    let (station, station_key) = (dir.join("line-1.crt"), dir.join("line-1.key"));
    hub.ok(&["device", "create", "owner", "--out", o]);
    let (owner, owner_key) = (dir.join("owner.crt"), dir.join("owner.key"));

    assert_explain(&hub, &future, "validity", "not yet valid");
    assert_explain(&hub, &alien, "chain", "unknown CA");
    assert_explain(&hub, &station, "identity", "station certificate");

    for entry in ENTRIES {
        let name = entry.name();
        let what = format!("{name}: not yet valid");
        let a = peer(&hub, &bodies, entry, &future, &future_key, "future").full();
        // rustls answers both ends of the validity period with certificate_expired.
        assert_alert(&a, "certificate expired", &what);

        let what = format!("{name}: unknown CA");
        let a = peer(&hub, &bodies, entry, &alien, &alien_key, "alien").full();
        assert_alert(&a, "unknown ca", &what);

        let what = format!("{name}: station certificate");
        let a = peer(&hub, &bodies, entry, &station, &station_key, "line-1").full();
        assert_refused(
            &hub,
            entry,
            &a,
            "line-1",
            "identity",
            &["station certificate"],
            &what,
        );
    }

    // An identity the certificate does not carry: the MQTT client id of another device
    // (v3.1.1 CONNACK 2, identifier rejected), an EST renewal CSR for another subject (400).
    let a = peer(
        &hub,
        &bodies,
        Entry::Mqtt,
        &owner,
        &owner_key,
        "someone-else",
    )
    .full();
    assert_eq!(
        a.connack,
        Some(2),
        "mqtt: client id of another identity: {a:?}"
    );
    let other = make_csr(&dir, "someone-else", "p256", &[]);
    let a = TlsPeer::new(
        &host_port(&hub.admin_url),
        &hub.bundle(),
        &owner,
        &owner_key,
        Proto::Http {
            method: "POST",
            path: "/.well-known/est/simplereenroll",
            content_type: "application/pkcs10",
            body: &other,
        },
    )
    .full();
    assert_eq!(
        a.status,
        Some(400),
        "est: renewal for another subject: {a:?}"
    );
    assert!(a.detail().contains("subject"), "{a:?}");
}
