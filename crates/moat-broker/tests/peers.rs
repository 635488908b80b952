//! Interop with real peers: mosquitto_pub / mosquitto_sub (3.1.1 and 5, plain, server TLS,
//! mutual TLS, QoS 0/1/2) and paho-mqtt (Python, 3.1.1 and 5). Under `CI` a missing tool
//! fails the test; elsewhere it skips with a message.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Plain,
    Tls,
    Mtls,
}

fn args(hub: &Hub, mode: Mode, v: &str, id: &str, token: &str) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-V".into(),
        v.into(),
        "-i".into(),
        id.into(),
    ];
    match mode {
        Mode::Plain => a.extend(["-p".into(), hub.plain.port().to_string()]),
        Mode::Tls | Mode::Mtls => {
            a.extend(["-p".into(), hub.tls.port().to_string()]);
            a.extend(["--cafile".into(), hub.pki.ca_path().display().to_string()]);
        }
    }
    match mode {
        Mode::Plain | Mode::Tls => a.extend(["-u".into(), id.into(), "-P".into(), token.into()]),
        Mode::Mtls => {
            let (c, k) = hub.pki.client(id);
            a.extend([
                "--cert".into(),
                c.display().to_string(),
                "--key".into(),
                k.display().to_string(),
            ]);
        }
    }
    a
}

#[tokio::test]
async fn mosquitto_clients_in_every_mode_version_and_qos() {
    if !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let hub = Hub::start().await;
    hub.auth
        .add("d1", "t1", &["devices/d1/#"], &["devices/d1/#"]);
    hub.auth.add("app", "ta", &[], &["devices/+/telemetry"]);
    for mode in [Mode::Plain, Mode::Tls, Mode::Mtls] {
        for v in ["mqttv311", "mqttv5"] {
            wait_for(|| hub.broker.metrics().subscriptions == 0).await;
            let sub = Command::new("mosquitto_sub")
                .args(args(&hub, mode, v, "app", "ta"))
                .args([
                    "-t",
                    "devices/+/telemetry",
                    "-q",
                    "2",
                    "-C",
                    "3",
                    "-W",
                    "10",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            hub.wait_subscriptions(1).await;
            for q in ["0", "1", "2"] {
                let out = Command::new("mosquitto_pub")
                    .args(args(&hub, mode, v, "d1", "t1"))
                    .args([
                        "-t",
                        "devices/d1/telemetry",
                        "-q",
                        q,
                        "-m",
                        &format!("{mode:?}-{v}-q{q}"),
                    ])
                    .output()
                    .await
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{mode:?} {v} q{q}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let out = tokio::time::timeout(T, sub.wait_with_output())
                .await
                .unwrap()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let want: Vec<String> = ["0", "1", "2"]
                .iter()
                .map(|q| format!("{mode:?}-{v}-q{q}"))
                .collect();
            assert_eq!(
                stdout.lines().collect::<Vec<_>>(),
                want,
                "{mode:?} {v}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(
        hub.auth.events().is_empty(),
        "no refusals expected: {:?}",
        hub.auth.events()
    );
}

#[tokio::test]
async fn mosquitto_refused_outside_acl_and_with_wrong_token() {
    if !have("mosquitto_pub") {
        return;
    }
    let hub = Hub::start().await;
    hub.auth
        .add("d1", "t1", &["devices/d1/#"], &["devices/d1/#"]);
    for v in ["mqttv311", "mqttv5"] {
        let out = Command::new("mosquitto_pub")
            .args(args(&hub, Mode::Plain, v, "d1", "wrong"))
            .args(["-t", "devices/d1/x", "-m", "x"])
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{v}: wrong token accepted");
    }
    // A certificate for an identity the hub does not know is refused at CONNECT.
    let out = Command::new("mosquitto_pub")
        .args(args(&hub, Mode::Mtls, "mqttv5", "stranger", ""))
        .args(["-t", "devices/d1/x", "-m", "x"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(hub.auth.events().len(), 3);
}

#[tokio::test]
async fn kick_cuts_mosquitto_sub_within_100ms() {
    if !have("mosquitto_sub") {
        return;
    }
    let hub = Hub::start().await;
    hub.auth
        .add("d1", "t1", &["devices/d1/#"], &["devices/d1/#"]);
    let mut sub = Command::new("mosquitto_sub")
        .args(args(&hub, Mode::Mtls, "mqttv5", "d1", ""))
        .args(["-t", "devices/d1/#", "-d"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    hub.wait_subscriptions(1).await;
    // The hub revokes d1: it is refused from now on and its live session is cut.
    hub.auth.remove("d1");
    let t0 = Instant::now();
    assert_eq!(hub.broker.kick_identity("d1"), 1);
    wait_for(|| hub.broker.sessions().is_empty()).await;
    let closed_in = t0.elapsed();
    assert!(closed_in < Duration::from_millis(100), "{closed_in:?}");
    // mosquitto_sub saw the server's DISCONNECT (its -d output says so).
    let saw = tokio::time::timeout(T, async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.contains("DISCONNECT") || l.contains("disconnect") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(saw, "mosquitto_sub did not report the disconnect");
    // A reconnect with the same certificate is refused.
    let out = Command::new("mosquitto_sub")
        .args(args(&hub, Mode::Mtls, "mqttv5", "d1", ""))
        .args(["-t", "devices/d1/#", "-C", "1", "-W", "5"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(matches!(
        hub.auth.events().last(),
        Some(moat_broker::SecurityEvent::Refused { mode: "mtls", .. })
    ));
    assert!(hub.broker.sessions().is_empty());
}

#[tokio::test]
async fn paho_v311_and_v5() {
    if !have_paho() {
        return;
    }
    let hub = Hub::start().await;
    hub.auth
        .add("d1", "t1", &["devices/d1/#"], &["devices/d1/#"]);
    hub.auth.add(
        "app",
        "ta",
        &["devices/+/commands"],
        &["devices/+/telemetry", "devices/d1/#"],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_client.py");
    for v in ["311", "5"] {
        let out = tokio::time::timeout(
            T,
            Command::new("python3")
                .args([script, "127.0.0.1", &hub.plain.port().to_string(), v])
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "paho v{v}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("OK"), "{stdout}");
    }
}
