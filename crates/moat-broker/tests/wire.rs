//! Protocol behaviour checked byte-for-byte with a raw client over real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use moat_broker::codec::{Properties, Version};
use moat_broker::{BrokerConfig, SecurityEvent};
use std::time::{Duration, Instant};

fn devices(hub: &Hub) {
    hub.auth
        .add("d1", "t1", &["devices/d1/#"], &["devices/d1/#"]);
    hub.auth
        .add("d2", "t2", &["devices/d2/#"], &["devices/d2/#"]);
    hub.auth.add(
        "app",
        "ta",
        &["devices/+/commands/#", "devices/d1/#"],
        &["devices/+/telemetry", "devices/d1/#", "shared/#"],
    );
}

async fn login(hub: &Hub, v: Version, id: &str, tok: &str) -> RawClient {
    let (c, code) = RawClient::connect(hub.plain, connect_packet(v, id, Some((id, tok)))).await;
    assert_eq!(code, 0, "{id} refused");
    c
}

#[tokio::test]
async fn refusals_use_the_right_connack_codes_and_are_reported() {
    let hub = Hub::start().await;
    devices(&hub);
    for (v, want_bad, want_missing, want_wrong_id) in
        [(Version::V5, 0x87, 0x86, 0x85), (Version::V311, 5, 4, 2)]
    {
        let (_, code) =
            RawClient::connect(hub.plain, connect_packet(v, "d1", Some(("d1", "nope")))).await;
        assert_eq!(code, want_bad);
        let (_, code) = RawClient::connect(hub.plain, connect_packet(v, "d1", None)).await;
        assert_eq!(code, want_missing);
        let (_, code) =
            RawClient::connect(hub.plain, connect_packet(v, "d2", Some(("d1", "t1")))).await;
        assert_eq!(code, want_wrong_id);
    }
    let events = hub.auth.events();
    assert_eq!(events.len(), 6);
    assert!(matches!(
        &events[0],
        SecurityEvent::Refused { mode: "plain", .. }
    ));
}

#[tokio::test]
async fn empty_client_id_is_assigned_the_identity() {
    let hub = Hub::start().await;
    devices(&hub);
    let (_c, code) = RawClient::connect(
        hub.plain,
        connect_packet(Version::V5, "", Some(("d1", "t1"))),
    )
    .await;
    assert_eq!(code, 0);
    wait_for(|| {
        hub.broker
            .sessions()
            .iter()
            .any(|s| s.client_id == "d1" && s.identity == "d1")
    })
    .await;
    let s = &hub.broker.sessions()[0];
    assert_eq!((s.mode, s.protocol_version), ("plain", 5));
}

/// MQTT 3.1.1 §3.1.3.1 (MQTT-3.1.3-8): a zero-length client id needs CleanSession=1; with
/// CleanSession=0 the server answers CONNACK 0x02 (identifier rejected) and closes, and no
/// session exists. With CleanSession=1 the identity is assigned; MQTT 5 assigns it either way.
#[tokio::test]
async fn v311_zero_length_client_id_needs_clean_session() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut p = connect_packet(Version::V311, "", Some(("d1", "t1")));
    p.clean_start = false;
    let (mut c, code) = RawClient::connect(hub.plain, p).await;
    assert_eq!(code, 0x02);
    assert!(c.recv().await.is_none(), "the connection must be closed");
    assert!(hub.broker.sessions().is_empty());
    let (_c, code) = RawClient::connect(
        hub.plain,
        connect_packet(Version::V311, "", Some(("d1", "t1"))),
    )
    .await;
    assert_eq!(code, 0);
    let mut p = connect_packet(Version::V5, "", Some(("d2", "t2")));
    p.clean_start = false;
    let (_c, code) = RawClient::connect(hub.plain, p).await;
    assert_eq!(code, 0);
    wait_for(|| hub.broker.sessions().len() == 2).await;
}

/// MQTT 5 §3.1.2.11: a CONNECT carrying a property that is not a CONNECT property (here a
/// topic alias), a will carrying a non-will property, or authentication data without an
/// authentication method is malformed: the connection closes without a session.
#[tokio::test]
async fn v5_connect_with_a_foreign_property_is_refused() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut bad = Vec::new();
    let mut p = connect_packet(Version::V5, "d1", Some(("d1", "t1")));
    p.properties.topic_alias = Some(1);
    bad.push(p);
    let mut p = connect_packet(Version::V5, "d1", Some(("d1", "t1")));
    let mut w = will("devices/d1/will", "gone", None);
    w.properties.session_expiry = Some(10);
    p.will = Some(w);
    bad.push(p);
    let mut p = connect_packet(Version::V5, "d1", Some(("d1", "t1")));
    p.properties.auth_data = Some(b"x".to_vec().into());
    bad.push(p);
    for p in bad {
        let mut c = RawClient::tcp(hub.plain, Version::V5).await;
        c.send(&moat_broker::codec::encode_connect(&p)).await;
        if let Some(ack) = c.recv().await {
            assert!(ack.kind() == 2 && ack.body[1] >= 0x80, "accepted: {ack:?}");
            assert!(c.recv().await.is_none());
        }
    }
    assert!(hub.broker.sessions().is_empty());
}

#[tokio::test]
async fn qos_0_1_2_flow_between_devices_v5_and_v311() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut sub = login(&hub, Version::V311, "app", "ta").await;
    assert_eq!(sub.subscribe(1, "devices/d1/#", 2).await, vec![2]);
    let mut p = login(&hub, Version::V5, "d1", "t1").await;
    p.publish("devices/d1/telemetry", b"q0", 0, false, 0).await;
    p.publish("devices/d1/telemetry", b"q1", 1, false, 7).await;
    let ack = p.recv().await.unwrap();
    assert_eq!((ack.kind(), ack.pid()), (4, 7));
    p.publish("devices/d1/telemetry", b"q2", 2, false, 8).await;
    let rec = p.recv().await.unwrap();
    assert_eq!(rec.kind(), 5);
    p.send(&frame(0x62, &[0, 8])).await;
    let comp = p.recv().await.unwrap();
    assert_eq!(comp.kind(), 7);
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = sub.recv().await.unwrap();
        let qos = (m.first >> 1) & 3;
        got.push((m.publish(Version::V311).1, qos));
        match qos {
            1 => sub.puback(m.pid()).await,
            2 => {
                sub.send(&frame(0x50, &m.pid().to_be_bytes())).await;
                let rel = sub.recv().await.unwrap();
                assert_eq!(rel.kind(), 6);
                sub.send(&frame(0x70, &m.pid().to_be_bytes())).await;
            }
            _ => {}
        }
    }
    assert_eq!(
        got,
        vec![
            (b"q0".to_vec(), 0),
            (b"q1".to_vec(), 1),
            (b"q2".to_vec(), 2)
        ]
    );
}

#[tokio::test]
async fn acl_denies_publish_and_subscribe() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut app = login(&hub, Version::V5, "app", "ta").await;
    assert_eq!(app.subscribe(1, "devices/+/telemetry", 1).await, vec![1]);
    assert_eq!(app.subscribe(2, "devices/#", 1).await, vec![0x87]);
    let mut d1v3 = login(&hub, Version::V311, "d1", "t1").await;
    assert_eq!(d1v3.subscribe(1, "devices/d2/#", 0).await, vec![0x80]);
    let mut d2 = login(&hub, Version::V5, "d2", "t2").await;
    d2.publish("devices/d1/telemetry", b"spoof", 1, false, 3)
        .await;
    let ack = d2.recv().await.unwrap();
    assert_eq!(ack.kind(), 4);
    assert_eq!(ack.body[2], 0x87, "PUBACK reason");
    // v3.1.1 denied publish: dropped (the client still gets its PUBACK, without a code).
    let mut d2v3 = login(&hub, Version::V311, "d2", "t2").await;
    d2v3.publish("devices/d1/telemetry", b"spoof3", 1, false, 4)
        .await;
    let ack = d2v3.recv().await.unwrap();
    assert_eq!((ack.kind(), ack.body.len()), (4, 2));
    let mut d2 = login(&hub, Version::V5, "d2", "t2").await;
    d2.publish("devices/d2/telemetry", b"ok", 0, false, 0).await;
    let m = app.recv().await.unwrap();
    assert_eq!(
        m.publish(Version::V5).1,
        b"ok".to_vec(),
        "the spoofed message must not arrive first"
    );
}

#[tokio::test]
async fn retained_message_reaches_a_late_subscriber_and_can_be_cleared() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut p = login(&hub, Version::V311, "d1", "t1").await;
    p.publish("devices/d1/state", b"on", 1, true, 1).await;
    assert_eq!(p.recv().await.unwrap().kind(), 4);
    let mut s = login(&hub, Version::V5, "app", "ta").await;
    s.subscribe(1, "devices/d1/#", 1).await;
    let m = s.recv().await.unwrap();
    assert_eq!(m.first & 1, 1, "RETAIN set on a retained delivery");
    assert_eq!(
        m.publish(Version::V5),
        ("devices/d1/state".into(), b"on".to_vec())
    );
    // retain handling 2: never send retained.
    let mut s2 = login(&hub, Version::V5, "d1", "t1").await;
    s2.subscribe(1, "devices/d1/state", 0x21).await;
    assert!(s2.recv_within(Duration::from_millis(200)).await.is_err());
    // Empty retained payload clears it.
    s2.publish("devices/d1/state", b"", 0, true, 0).await;
    wait_for(|| hub.broker.metrics().retained == 0).await;
}

#[tokio::test]
async fn will_is_sent_on_abrupt_close_not_on_disconnect() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut s = login(&hub, Version::V5, "app", "ta").await;
    s.subscribe(1, "devices/d1/#", 1).await;
    for v in [Version::V311, Version::V5] {
        let mut c = connect_packet(v, "d1", Some(("d1", "t1")));
        c.will = Some(will("devices/d1/status", "gone", None));
        let (mut clean, code) = RawClient::connect(hub.plain, c.clone()).await;
        assert_eq!(code, 0);
        clean.disconnect().await;
        assert!(
            clean.recv().await.is_none(),
            "server closes after DISCONNECT"
        );
        let (abrupt, code) = RawClient::connect(hub.plain, c).await;
        assert_eq!(code, 0);
        drop(abrupt);
        let m = s.recv().await.unwrap();
        assert_eq!(
            m.publish(Version::V5),
            ("devices/d1/status".into(), b"gone".to_vec()),
            "{v:?}"
        );
        s.puback(m.pid()).await;
    }
}

#[tokio::test]
async fn v5_will_delay_waits_and_is_cancelled_by_reconnect() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut s = login(&hub, Version::V5, "app", "ta").await;
    s.subscribe(1, "devices/d1/#", 0).await;
    let mut c = connect_packet(Version::V5, "d1", Some(("d1", "t1")));
    c.properties.session_expiry = Some(60);
    c.will = Some(will("devices/d1/status", "late", Some(1)));
    // Reconnect within the delay: no will.
    let (first, _) = RawClient::connect(hub.plain, c.clone()).await;
    drop(first);
    let (second, code) = RawClient::connect(hub.plain, c.clone()).await;
    assert_eq!(code, 0);
    assert!(
        s.recv_within(Duration::from_millis(1500)).await.is_err(),
        "will cancelled by reconnect"
    );
    // Stay away: the will comes after about a second, not at once.
    let t0 = Instant::now();
    drop(second);
    assert!(s.recv_within(Duration::from_millis(600)).await.is_err());
    let m = s.recv().await.unwrap();
    assert_eq!(m.publish(Version::V5).1, b"late".to_vec());
    assert!(t0.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn persistent_session_gets_queued_qos1_on_reconnect() {
    let hub = Hub::start().await;
    devices(&hub);
    for v in [Version::V5, Version::V311] {
        let mut c = connect_packet(v, "app", Some(("app", "ta")));
        c.clean_start = v == Version::V5; // v5: clean start + expiry; v3: clean session 0
        c.properties.session_expiry = Some(300);
        if v == Version::V311 {
            c.clean_start = false;
        }
        let (mut s, _) = RawClient::connect(hub.plain, c.clone()).await;
        s.subscribe(1, "devices/d1/#", 1).await;
        s.disconnect().await;
        wait_for(|| hub.broker.sessions().iter().all(|x| x.client_id != "app")).await;
        let mut p = login(&hub, Version::V5, "d1", "t1").await;
        for i in 0..3u8 {
            p.publish("devices/d1/q", &[i], 1, false, u16::from(i) + 1)
                .await;
            assert_eq!(p.recv().await.unwrap().kind(), 4);
        }
        c.clean_start = false;
        let mut s = RawClient::tcp(hub.plain, v).await;
        s.send(&moat_broker::codec::encode_connect(&c)).await;
        let ack = s.recv().await.unwrap();
        assert_eq!(
            (ack.kind(), ack.body[0], ack.body[1]),
            (2, 1, 0),
            "session present"
        );
        let mut got = Vec::new();
        for _ in 0..3 {
            let m = s.recv().await.unwrap();
            got.push(m.publish(v).1[0]);
            s.puback(m.pid()).await;
        }
        assert_eq!(got, vec![0, 1, 2], "{v:?}");
        // Unacknowledged QoS 1 is redelivered with DUP after a reconnect.
        p.publish("devices/d1/q", &[9], 1, false, 9).await;
        let m = s.recv().await.unwrap();
        assert_eq!(m.first & 0x08, 0);
        drop(s);
        wait_for(|| hub.broker.sessions().iter().all(|x| x.client_id != "app")).await;
        let mut s = RawClient::tcp(hub.plain, v).await;
        s.send(&moat_broker::codec::encode_connect(&c)).await;
        assert_eq!(s.recv().await.unwrap().kind(), 2);
        let m = s.recv().await.unwrap();
        assert_eq!(m.first & 0x08, 0x08, "DUP on redelivery");
        assert_eq!(m.publish(v).1, vec![9]);
        s.puback(m.pid()).await;
        s.disconnect().await;
        // Clean up: a clean session discards it.
        let mut clean = connect_packet(v, "app", Some(("app", "ta")));
        clean.clean_start = true;
        let (mut x, _) = RawClient::connect(hub.plain, clean).await;
        x.disconnect().await;
    }
}

#[tokio::test]
async fn shared_subscription_round_robins() {
    let hub = Hub::start().await;
    devices(&hub);
    hub.auth.add("app2", "ta", &[], &["shared/#"]);
    let mut a = login(&hub, Version::V5, "app", "ta").await;
    let mut b = login(&hub, Version::V311, "app2", "ta").await;
    assert_eq!(a.subscribe(1, "$share/g/shared/+", 0).await, vec![0]);
    assert_eq!(b.subscribe(1, "$share/g/shared/+", 0).await, vec![0]);
    hub.auth.add("pub", "tp", &["shared/#"], &[]);
    let mut p = login(&hub, Version::V5, "pub", "tp").await;
    for i in 0..4u8 {
        p.publish("shared/x", &[i], 0, false, 0).await;
    }
    let mut ga = Vec::new();
    let mut gb = Vec::new();
    for _ in 0..2 {
        ga.push(a.recv().await.unwrap().publish(Version::V5).1[0]);
        gb.push(b.recv().await.unwrap().publish(Version::V311).1[0]);
    }
    ga.extend(&gb);
    ga.sort();
    assert_eq!(ga, vec![0, 1, 2, 3]);
    assert!(a.recv_within(Duration::from_millis(100)).await.is_err());
}

#[tokio::test]
async fn oversized_packet_gets_disconnect_0x95() {
    let cfg = BrokerConfig {
        max_packet_size: 1024,
        ..BrokerConfig::default()
    };
    let hub = Hub::start_with(cfg).await;
    devices(&hub);
    let mut c = login(&hub, Version::V5, "d1", "t1").await;
    // Announce 100 KiB but send only the header: refused before the body is read.
    c.send(&[0x30, 0x80, 0x80, 0x06]).await;
    let d = c.recv().await.unwrap();
    assert_eq!((d.kind(), d.body[0]), (14, 0x95));
    assert!(c.recv().await.is_none());
    let mut c3 = login(&hub, Version::V311, "d1", "t1").await;
    c3.publish("devices/d1/x", &[0; 2000], 0, false, 0).await;
    assert!(c3.recv().await.is_none(), "v3.1.1: closed");
}

#[tokio::test]
async fn malformed_packets_close_with_the_right_reason() {
    let hub = Hub::start().await;
    devices(&hub);
    // QoS 3 publish: malformed.
    let mut c = login(&hub, Version::V5, "d1", "t1").await;
    c.send(&frame(0x36, &[0, 1, b'a', 0, 1, 0])).await;
    let d = c.recv().await.unwrap();
    assert_eq!((d.kind(), d.body[0]), (14, 0x81));
    assert!(c.recv().await.is_none());
    // Second CONNECT: protocol error.
    let mut c = login(&hub, Version::V5, "d1", "t1").await;
    c.send(&moat_broker::codec::encode_connect(&connect_packet(
        Version::V5,
        "d1",
        None,
    )))
    .await;
    let d = c.recv().await.unwrap();
    assert_eq!((d.kind(), d.body[0]), (14, 0x82));
    // v3.1.1: invalid UTF-8 topic closes.
    let mut c = login(&hub, Version::V311, "d1", "t1").await;
    c.send(&frame(0x30, &[0, 2, 0xff, 0xfe, 1])).await;
    assert!(c.recv().await.is_none());
    // Garbage before CONNECT closes.
    let mut raw = RawClient::tcp(hub.plain, Version::V5).await;
    raw.send(&[0xff, 0xff, 0xff, 0xff, 0xff]).await;
    assert!(raw.recv().await.is_none());
    // Unsupported protocol level gets CONNACK 0x01 (3.1.1 format).
    let mut raw = RawClient::tcp(hub.plain, Version::V311).await;
    raw.send(&frame(
        0x10,
        &[0, 4, b'M', b'Q', b'T', b'T', 3, 2, 0, 60, 0, 1, b'x'],
    ))
    .await;
    let ack = raw.recv().await.unwrap();
    assert_eq!((ack.kind(), ack.body[1]), (2, 1));
}

#[tokio::test]
async fn kick_identity_closes_within_100ms_with_0x98() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut v5 = login(&hub, Version::V5, "d1", "t1").await;
    let mut v3 = login(&hub, Version::V311, "d2", "t2").await;
    wait_for(|| hub.broker.sessions().len() == 2).await;
    let t0 = Instant::now();
    assert_eq!(hub.broker.kick_identity("d1"), 1);
    let d = v5.recv().await.unwrap();
    assert_eq!((d.kind(), d.body[0]), (14, 0x98));
    assert!(v5.recv().await.is_none());
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert!(hub.broker.kick_client("d2"));
    assert!(v3.recv().await.is_none());
    assert!(!hub.broker.kick_client("d2"));
}

#[tokio::test]
async fn takeover_reports_possible_clone_only_across_addresses() {
    let hub = Hub::start().await;
    devices(&hub);
    let c = connect_packet(Version::V5, "d1", Some(("d1", "t1")));
    let mut a = RawClient::tcp_from(hub.plain, Version::V5, "127.0.0.1").await;
    assert_eq!(a.handshake(c.clone()).await, 0);
    let mut b = RawClient::tcp_from(hub.plain, Version::V5, "127.0.0.1").await;
    assert_eq!(b.handshake(c.clone()).await, 0);
    let d = a.recv().await.unwrap();
    assert_eq!((d.kind(), d.body[0]), (14, 0x8E));
    assert!(hub.auth.events().is_empty(), "same address: no clone event");
    let mut x = RawClient::tcp_from(hub.plain, Version::V5, "127.0.0.2").await;
    assert_eq!(x.handshake(c).await, 0);
    let d = b.recv().await.unwrap();
    assert_eq!((d.kind(), d.body[0]), (14, 0x8E));
    let ev = hub.auth.events();
    assert_eq!(ev.len(), 1);
    match &ev[0] {
        SecurityEvent::PossibleClone {
            client_id,
            old_peer,
            new_peer,
        } => {
            assert_eq!(client_id, "d1");
            assert_eq!(old_peer.ip().to_string(), "127.0.0.1");
            assert_eq!(new_peer.ip().to_string(), "127.0.0.2");
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[tokio::test]
async fn slow_subscriber_does_not_stall_others() {
    let cfg = BrokerConfig {
        max_queued_messages: 50,
        ..BrokerConfig::default()
    };
    let hub = Hub::start_with(cfg).await;
    devices(&hub);
    hub.auth.add("slow", "ts", &[], &["devices/d1/#"]);
    // The slow one subscribes and then never reads.
    let mut slow = login(&hub, Version::V5, "slow", "ts").await;
    slow.subscribe(1, "devices/d1/#", 1).await;
    let mut fast = login(&hub, Version::V311, "app", "ta").await;
    fast.subscribe(1, "devices/d1/#", 0).await;
    let mut p = login(&hub, Version::V5, "d1", "t1").await;
    let payload = vec![7u8; 16 * 1024];
    // Lock-step: each message must reach the fast subscriber before the next is sent, so
    // a publish path that waited on the slow one would stall here.
    let n = 600; // 9.6 MiB: far more than socket buffers plus the slow queue hold
    for i in 0..n {
        p.publish("devices/d1/bulk", &payload, 0, false, 0).await;
        let m = fast
            .recv()
            .await
            .unwrap_or_else(|| panic!("fast subscriber cut off at {i}"));
        assert_eq!(m.kind(), 3);
    }
    let m = hub.broker.metrics();
    assert!(
        m.messages_dropped > 0,
        "the slow queue overflowed and dropped"
    );
    assert!(
        m.subscribers_stalled >= 1,
        "the stuck subscriber was marked stalled: {m:?}"
    );
    drop(slow);
}

/// Resident memory of this process (hub and clients), in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_costs_bounded_memory_and_publishers_are_told() {
    let limit = 1 << 20;
    let cfg = BrokerConfig {
        // The byte limit is the one that binds here.
        max_queued_messages: 100_000,
        max_queued_bytes: limit,
        ..BrokerConfig::default()
    };
    let window = usize::from(cfg.receive_maximum);
    let hub = Hub::start_with(cfg).await;
    devices(&hub);
    hub.auth.add("stuck", "ts", &[], &["devices/d1/#"]);
    // A persistent QoS 1 subscriber that never reads again after its SUBACK.
    let mut c = connect_packet(Version::V311, "stuck", Some(("stuck", "ts")));
    c.clean_start = false;
    let (mut stuck, code) = RawClient::connect(hub.plain, c).await;
    assert_eq!(code, 0);
    stuck.subscribe(1, "devices/d1/#", 1).await;
    let mut app = login(&hub, Version::V5, "app", "ta").await;
    app.subscribe(1, "devices/d1/#", 1).await;
    let mut p = login(&hub, Version::V5, "d1", "t1").await;
    let before = rss();
    let payload = vec![7u8; 64 * 1024];
    let n: u16 = 2000; // 128 MiB of QoS 1 through the hub
    let mut refused = 0usize;
    for pid in 1..=n {
        p.publish("devices/d1/bulk", &payload, 1, false, pid).await;
        // The subscriber that reads gets every message, refused or not.
        let m = app.recv().await.expect("the reading subscriber cut off");
        assert_eq!(m.kind(), 3);
        app.puback(m.pid()).await;
        let ack = p.recv().await.expect("PUBACK");
        assert_eq!((ack.kind(), ack.pid()), (4, pid));
        match ack.body.get(2).copied().unwrap_or(0) {
            0 => assert_eq!(refused, 0, "accepted at {pid} after a refusal"),
            0x97 => refused += 1,
            r => panic!("PUBACK reason {r:#x} at {pid}"),
        }
    }
    // The stuck session took its in-flight window plus what fits in 1 MiB; every later
    // message was refused to the v5 publisher with 0x97 Quota exceeded.
    let held = 1 + window + limit / payload.len();
    assert!(
        refused >= usize::from(n) - held,
        "{refused} refused, at most {held} should have been accepted"
    );
    let info = hub.broker.session("stuck").expect("still connected");
    assert!(info.queued_bytes <= limit, "{info:?}");
    assert!(info.inflight <= window, "{info:?}");

    // A QoS 0 flood while the other subscriber reads: paced, not dropped, for it.
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match app.recv().await {
                Some(m) if m.kind() == 3 => got += 1,
                Some(_) => {}
                None => break,
            }
        }
        (got, app)
    });
    for _ in 0..n {
        p.publish("devices/d1/flood", &payload, 0, false, 0).await;
    }
    let (got, _app) = reader.await.unwrap();
    assert_eq!(got, n, "the reading subscriber lost QoS 0 messages");
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "resident memory grew by {} MiB while 256 MiB went to a subscriber that reads nothing",
        grown >> 20
    );
    let info = hub.broker.session("stuck").expect("still connected");
    assert!(info.queued_bytes <= limit, "{info:?}");

    // A v3.1.1 publisher cannot be told: PUBACK, and the drop is counted.
    let dropped = hub.broker.metrics().messages_dropped;
    let mut p3 = login(&hub, Version::V311, "d1", "t1").await;
    p3.publish("devices/d1/bulk", &payload, 1, false, 9).await;
    let ack = p3.recv().await.expect("PUBACK");
    assert_eq!((ack.kind(), ack.body.len()), (4, 2));
    assert!(hub.broker.metrics().messages_dropped > dropped);
    drop(stuck);
}

#[tokio::test]
async fn busy_subscriber_paces_publishers_instead_of_losing_messages() {
    let cfg = BrokerConfig {
        max_queued_messages: 50,
        ..BrokerConfig::default()
    };
    let hub = Hub::start_with(cfg).await;
    devices(&hub);
    let mut sub = login(&hub, Version::V5, "app", "ta").await;
    sub.subscribe(1, "devices/+/telemetry", 0).await;
    let n = 3000;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match sub.recv().await {
                Some(m) if m.kind() == 3 => got += 1,
                Some(_) => {}
                None => break,
            }
        }
        got
    });
    // Two publishers blast QoS 0 bursts (many packets per socket read) at one subscriber
    // whose queue holds 50: without pausing their reads, most would be dropped.
    let mut pubs = Vec::new();
    for (id, tok) in [("d1", "t1"), ("d2", "t2")] {
        let mut p = login(&hub, Version::V311, id, tok).await;
        pubs.push(tokio::spawn(async move {
            let topic = format!("devices/{id}/telemetry");
            for _ in 0..n / 2 {
                p.publish(&topic, &[0u8; 32], 0, false, 0).await;
            }
            p
        }));
    }
    for p in pubs {
        let _keep = p.await.unwrap();
    }
    let got = reader.await.unwrap();
    let m = hub.broker.metrics();
    assert_eq!(got, n, "every message delivered: {m:?}");
    assert_eq!(m.messages_dropped, 0, "{m:?}");
    assert!(m.publisher_pauses > 0, "publishers were paced: {m:?}");
    assert_eq!(m.subscribers_stalled, 0, "{m:?}");
}

#[tokio::test]
async fn topic_alias_inbound_and_invalid_alias() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut s = login(&hub, Version::V5, "app", "ta").await;
    s.subscribe(1, "devices/d1/#", 0).await;
    let mut p = login(&hub, Version::V5, "d1", "t1").await;
    let t = b"devices/d1/a";
    let mut body = vec![0, t.len() as u8];
    body.extend_from_slice(t);
    body.extend_from_slice(&[3, 0x23, 0, 1, b'x']);
    p.send(&frame(0x30, &body)).await;
    p.send(&frame(0x30, &[0, 0, 3, 0x23, 0, 1, b'y'])).await;
    assert_eq!(
        s.recv().await.unwrap().publish(Version::V5),
        ("devices/d1/a".into(), b"x".to_vec())
    );
    assert_eq!(
        s.recv().await.unwrap().publish(Version::V5),
        ("devices/d1/a".into(), b"y".to_vec())
    );
    p.send(&frame(0x30, &[0, 0, 3, 0x23, 0, 9, b'z'])).await;
    let d = p.recv().await.unwrap();
    assert_eq!((d.kind(), d.body[0]), (14, 0x94));
}

#[tokio::test]
async fn connect_timeout_closes_idle_sockets() {
    tokio::time::pause();
    let cfg = BrokerConfig {
        connect_timeout: Duration::from_secs(2),
        ..BrokerConfig::default()
    };
    let hub = Hub::start_with(cfg).await;
    let mut raw = RawClient::tcp(hub.plain, Version::V5).await;
    // Paused time auto-advances once everything is idle: the timeout fires without waiting.
    assert!(raw.recv().await.is_none());
    let _ = Properties::default();
}

#[tokio::test]
async fn keep_alive_timeout_disconnects_with_0x8d() {
    let hub = Hub::start().await;
    devices(&hub);
    let mut c = connect_packet(Version::V5, "d1", Some(("d1", "t1")));
    c.keep_alive = 2;
    let (mut cl, code) = RawClient::connect(hub.plain, c).await;
    assert_eq!(code, 0);
    // Nothing sent: after 1.5 × keep alive (3 s of paused, auto-advancing time) the broker closes.
    tokio::time::pause();
    let d = cl.recv().await.unwrap();
    assert_eq!((d.kind(), d.body[0]), (14, 0x8D));
}

/// A hub tap receives what devices publish on its filter (with the publisher's client id),
/// refuses bad filters, drops (and counts) what overflows its queue, and ends with its
/// receiver.
#[tokio::test]
async fn hub_tap_receives_matching_publishes() {
    let hub = Hub::start().await;
    devices(&hub);
    assert!(hub.broker.tap("devices/#/x", 8).is_err());
    assert!(hub.broker.tap("$share/g/devices/+/ota/report", 8).is_err());
    let mut reports = hub.broker.tap("devices/+/ota/report", 8).unwrap();
    let mut d1 = login(&hub, Version::V311, "d1", "t1").await;
    d1.publish(
        "devices/d1/ota/report",
        b"{\"state\":\"idle\"}",
        1,
        false,
        1,
    )
    .await;
    assert_eq!(d1.recv().await.unwrap().kind(), 4, "PUBACK");
    d1.publish("devices/d1/telemetry", b"21.5", 0, false, 0)
        .await;
    let got = tokio::time::timeout(T, reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.topic, "devices/d1/ota/report");
    assert_eq!(got.publisher.as_deref(), Some("d1"));
    assert_eq!(&got.payload[..], b"{\"state\":\"idle\"}");

    // A full queue drops and counts; publishers are never held up.
    let mut small = hub.broker.tap("devices/d1/ota/report", 1).unwrap();
    for pid in 2..5 {
        d1.publish("devices/d1/ota/report", b"x", 1, false, pid)
            .await;
        assert_eq!(d1.recv().await.unwrap().kind(), 4);
    }
    assert!(small.recv().await.is_some());
    assert!(small.try_recv().is_err());
    assert_eq!(
        hub.broker.metrics().taps_dropped,
        2,
        "only the 1-slot tap overflowed"
    );
    for _ in 2..5 {
        assert!(reports.try_recv().is_ok(), "the roomy tap got all three");
    }
    drop(small);
    drop(reports);
    d1.publish("devices/d1/ota/report", b"y", 1, false, 9).await;
    assert_eq!(d1.recv().await.unwrap().kind(), 4);
    // Closed taps are forgotten, not counted as drops.
    assert_eq!(hub.broker.metrics().taps_dropped, 2);
}
