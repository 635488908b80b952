//! The crash harness (`scripts/crash`), short, against this build of `moat`: a hub killed with
//! SIGKILL in the middle of QoS 1 and QoS 2 traffic, over MQTT 5 and 3.1.1, with the
//! subscriber offline or connected, loses nothing it acknowledged, delivers QoS 2 exactly
//! once, and keeps every persistent session; killed in the middle of certificate issuance,
//! EST enrollment or firmware uploads, it keeps everything it answered for and half-writes
//! nothing (no burned allow-list serial, no orphan blob). The same on PostgreSQL
//! (`MOAT_TEST_DATABASE_URL`; skipped without it unless `CI` is set). The long runs (and
//! Mosquitto's figures) are in BENCHMARKS.md.

use std::path::Path;
use std::process::Command;

fn crash(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("timeout")
        .arg("600")
        .arg("python3")
        .arg(root.join("scripts/crash"))
        .args(["--moat", env!("CARGO_BIN_EXE_moat")])
        .args(args)
        .output()
        .expect("python3 runs (scripts/test installs paho-mqtt)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/crash {args:?} failed:\n{text}"
    );
    assert!(text.contains("\"lost\": 0"), "{text}");
}

/// Two kills, 150 messages per publisher and cycle.
const SHORT: [&str; 6] = ["--cycles", "2", "--messages", "150", "--idle", "2"];

#[test]
fn qos1_offline_subscriber_mqtt5() {
    crash(&[&SHORT[..], &["--qos", "1", "--seed", "11"]].concat());
}

#[test]
fn qos2_online_subscriber_mqtt5() {
    crash(&[&SHORT[..], &["--qos", "2", "--online", "--seed", "12"]].concat());
}

#[test]
fn qos2_online_subscriber_mqtt311() {
    crash(
        &[
            &SHORT[..],
            &["--qos", "2", "--online", "--protocol", "3", "--seed", "13"],
        ]
        .concat(),
    );
}

#[test]
fn certificate_issuance() {
    crash(&["--during", "issuance", "--cycles", "3", "--seed", "14"]);
}

#[test]
fn est_enrollment() {
    crash(&["--during", "enrollment", "--cycles", "3", "--seed", "15"]);
}

#[test]
fn firmware_upload() {
    crash(&["--during", "upload", "--cycles", "3", "--seed", "16"]);
}

/// The PostgreSQL server of the test suite, if any (`CI` set: required).
fn postgres() -> Option<String> {
    moat_testkit::postgres::server_url()
}

#[test]
fn qos1_offline_subscriber_mqtt5_on_postgres() {
    if let Some(url) = postgres() {
        crash(
            &[
                &SHORT[..],
                &["--qos", "1", "--seed", "17", "--database", &url],
            ]
            .concat(),
        );
    }
}

#[test]
fn qos2_online_subscriber_mqtt311_on_postgres() {
    if let Some(url) = postgres() {
        crash(
            &[
                &SHORT[..],
                &[
                    "--qos",
                    "2",
                    "--online",
                    "--protocol",
                    "3",
                    "--seed",
                    "18",
                    "--database",
                    &url,
                ],
            ]
            .concat(),
        );
    }
}

#[test]
fn certificate_issuance_on_postgres() {
    if let Some(url) = postgres() {
        crash(&[
            "--during",
            "issuance",
            "--cycles",
            "3",
            "--seed",
            "19",
            "--database",
            &url,
        ]);
    }
}
