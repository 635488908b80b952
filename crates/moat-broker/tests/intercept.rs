//! Publish interceptors and reserved user properties, over real sockets with a raw client:
//! the publisher's acknowledgement carries the interceptor's decision, refused messages are
//! never delivered, routed ones go out as the interceptor made them, in order; `moat-*`
//! properties a client sends never reach a subscriber.
#![allow(clippy::unwrap_used)]

mod common;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use common::*;
use moat_broker::codec::{self, Packet, Properties, Publish, Version};
use moat_broker::intercept::{Interceptor, Publisher, Refused, Verdict};
use moat_broker::{BrokerConfig, Message, SecurityEvent, reason};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Refuses payloads starting with "bad" (0x87), waits 200 ms for "slow…", never answers
/// "hang…"; routes the rest to `out/{rest of the topic}` with a user property naming the
/// publisher.
#[derive(Debug, Default)]
struct Gate {
    /// Each message asked about: its publisher and user properties.
    seen: Mutex<Vec<(String, UserProperties)>>,
}

type UserProperties = Vec<(String, String)>;

#[async_trait]
impl Interceptor for Gate {
    async fn intercept(&self, publisher: &Publisher, mut m: Message) -> Verdict {
        self.seen
            .lock()
            .unwrap()
            .push((publisher.identity.clone(), m.properties.user.clone()));
        if m.payload.starts_with(b"bad") {
            return Verdict::Refuse(Refused {
                code: reason::NOT_AUTHORIZED,
                reason: "refused by the gate".into(),
            });
        }
        if m.payload.starts_with(b"slow") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if m.payload.starts_with(b"hang") {
            std::future::pending::<()>().await;
        }
        m.topic = format!("out/{}", m.topic.trim_start_matches("relay/"));
        m.properties
            .user
            .push(("moat-from".into(), publisher.identity.clone()));
        Verdict::Route(Box::new(m))
    }
}

async fn hub_with_gate(cfg: BrokerConfig) -> (Hub, Arc<Gate>) {
    let hub = Hub::start_with(cfg).await;
    hub.auth.add("gw", "tg", &["relay/#", "free/#"], &[]);
    hub.auth
        .add("app", "ta", &[], &["out/#", "relay/#", "free/#"]);
    let gate = Arc::new(Gate::default());
    hub.broker.intercept("relay/#", gate.clone()).unwrap();
    (hub, gate)
}

async fn login(hub: &Hub, v: Version, id: &str, tok: &str) -> RawClient {
    let (c, code) = RawClient::connect(hub.plain, connect_packet(v, id, Some((id, tok)))).await;
    assert_eq!(code, 0, "{id} refused");
    c
}

/// Publishes with v5 user properties.
async fn publish_props(
    c: &mut RawClient,
    topic: &str,
    payload: &[u8],
    qos: u8,
    pid: u16,
    user: &[(&str, &str)],
) {
    let p = Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pid,
        properties: Properties {
            user: user
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Properties::default()
        },
        payload: Bytes::copy_from_slice(payload),
    });
    let mut out = BytesMut::new();
    codec::encode(&p, c.v, &mut out);
    c.send(&out).await;
}

/// The next packet, decoded.
async fn next(c: &mut RawClient) -> Packet {
    let raw = c.recv().await.expect("a packet");
    codec::decode(&frame(raw.first, &raw.body), Some(c.v)).unwrap()
}

fn ack_code(p: &Packet) -> (u16, u8) {
    match p {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubComp(a) => (a.pid, a.reason),
        other => panic!("not an ack: {other:?}"),
    }
}

#[tokio::test]
async fn the_acknowledgement_carries_the_decision_and_refused_messages_never_arrive() {
    let (hub, gate) = hub_with_gate(BrokerConfig::default()).await;
    let mut app = login(&hub, Version::V5, "app", "ta").await;
    assert_eq!(app.subscribe(1, "out/#", 2).await, vec![2]);
    assert_eq!(app.subscribe(2, "relay/#", 2).await, vec![2]);
    assert_eq!(app.subscribe(3, "free/#", 0).await, vec![0]);
    let mut gw = login(&hub, Version::V5, "gw", "tg").await;

    // QoS 1 refused: PUBACK 0x87 with the reason string (problem information is on by
    // default), nothing delivered.
    gw.publish("relay/d1/t", b"bad one", 1, false, 1).await;
    match next(&mut gw).await {
        Packet::PubAck(a) => {
            assert_eq!((a.pid, a.reason), (1, 0x87));
            assert_eq!(
                a.properties.reason_string.as_deref(),
                Some("refused by the gate")
            );
        }
        other => panic!("{other:?}"),
    }
    // QoS 2 refused: PUBREC 0x87 ends the exchange.
    gw.publish("relay/d1/t", b"bad two", 2, false, 2).await;
    assert_eq!(ack_code(&next(&mut gw).await), (2, 0x87));
    // Accepted at QoS 1 and 2, and 0; in order, rewritten, with the interceptor's property.
    gw.publish("relay/d1/t", b"slow first", 1, false, 3).await;
    gw.publish("relay/d1/t", b"then this", 2, false, 4).await;
    gw.publish("relay/d1/t", b"and this", 0, false, 0).await;
    assert_eq!(ack_code(&next(&mut gw).await), (3, 0));
    assert_eq!(ack_code(&next(&mut gw).await), (4, 0));
    gw.send(&frame(0x62, &[0, 4, 0])).await; // PUBREL 4
    assert_eq!(ack_code(&next(&mut gw).await), (4, 0));
    let mut got = Vec::new();
    while got.len() < 3 {
        match next(&mut app).await {
            Packet::Publish(p) => {
                if p.qos == 1 {
                    app.puback(p.pid).await;
                } else if p.qos == 2 {
                    app.send(&frame(0x50, &p.pid.to_be_bytes())).await;
                }
                got.push((p.topic, p.payload.to_vec(), p.properties.user));
            }
            Packet::PubRel(a) => app.send(&frame(0x70, &a.pid.to_be_bytes())).await,
            other => panic!("{other:?}"),
        }
    }
    let from = vec![("moat-from".to_string(), "gw".to_string())];
    assert_eq!(
        got,
        vec![
            ("out/d1/t".into(), b"slow first".to_vec(), from.clone()),
            ("out/d1/t".into(), b"then this".to_vec(), from.clone()),
            ("out/d1/t".into(), b"and this".to_vec(), from),
        ],
        "only the accepted messages, in order, as the interceptor made them"
    );
    // Nothing else arrives (no refused message, nothing on relay/#); only the PUBREL of the
    // QoS 2 exchange may still come.
    while let Ok(Some(raw)) = app.recv_within(Duration::from_millis(200)).await {
        match codec::decode(&frame(raw.first, &raw.body), Some(app.v)).unwrap() {
            Packet::PubRel(a) => app.send(&frame(0x70, &a.pid.to_be_bytes())).await,
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(gate.seen.lock().unwrap().len(), 5);
    let m = hub.broker.metrics();
    assert_eq!((m.intercepted_routed, m.intercepted_refused), (3, 2));

    // A resent QoS 2 packet id the session holds is acknowledged without asking again.
    gw.publish("relay/d1/t", b"twice", 2, false, 9).await;
    assert_eq!(ack_code(&next(&mut gw).await), (9, 0));
    gw.publish("relay/d1/t", b"twice", 2, false, 9).await;
    assert_eq!(ack_code(&next(&mut gw).await), (9, 0));
    assert_eq!(gate.seen.lock().unwrap().len(), 6);

    // MQTT 3.1.1 has no reason codes: a refused QoS 1 message gets a plain PUBACK.
    let mut gw3 = login(&hub, Version::V311, "gw", "tg").await;
    gw3.publish("relay/d1/t", b"bad three", 1, false, 5).await;
    let raw = gw3.recv().await.unwrap();
    assert_eq!((raw.kind(), raw.body.as_slice()), (4, &[0u8, 5][..]));
    // Topics no interceptor covers are routed as usual.
    gw3.publish("free/x", b"plain", 0, false, 0).await;
    let (topic, payload) = loop {
        match next(&mut app).await {
            Packet::Publish(p) if p.topic == "free/x" => break (p.topic, p.payload),
            // "twice", once.
            Packet::Publish(p) if p.topic == "out/d1/t" && p.qos == 2 => {
                app.send(&frame(0x50, &p.pid.to_be_bytes())).await;
            }
            Packet::PubRel(a) => app.send(&frame(0x70, &a.pid.to_be_bytes())).await,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((topic.as_str(), &payload[..]), ("free/x", &b"plain"[..]));
}

#[tokio::test]
async fn an_interceptor_that_does_not_answer_in_time_refuses_and_the_connection_goes_on() {
    let (hub, _gate) = hub_with_gate(BrokerConfig {
        intercept_timeout: Duration::from_millis(200),
        ..BrokerConfig::default()
    })
    .await;
    let mut gw = login(&hub, Version::V5, "gw", "tg").await;
    gw.publish("relay/d1/t", b"hang", 1, false, 1).await;
    gw.publish("relay/d1/t", b"fine", 1, false, 2).await;
    assert_eq!(ack_code(&next(&mut gw).await), (1, reason::UNSPECIFIED));
    assert_eq!(ack_code(&next(&mut gw).await), (2, 0));
}

#[tokio::test]
async fn reserved_user_properties_are_stripped_and_reported_once_per_connection() {
    let (hub, gate) = hub_with_gate(BrokerConfig {
        reserved_user_properties: vec!["moat-".into()],
        ..BrokerConfig::default()
    })
    .await;
    let mut app = login(&hub, Version::V5, "app", "ta").await;
    assert_eq!(app.subscribe(1, "free/#", 1).await, vec![1]);
    assert_eq!(app.subscribe(2, "out/#", 1).await, vec![1]);
    let mut gw = login(&hub, Version::V5, "gw", "tg").await;
    let spoof = [("moat-device", "d9"), ("keep", "me"), ("moat-gateway", "x")];
    publish_props(&mut gw, "free/a", b"one", 1, 1, &spoof).await;
    publish_props(&mut gw, "free/b", b"two", 1, 2, &spoof).await;
    // The interceptor sees the message without them, and adds its own after.
    publish_props(&mut gw, "relay/c", b"three", 1, 3, &spoof).await;
    for pid in 1..=3 {
        assert_eq!(ack_code(&next(&mut gw).await), (pid, 0));
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        match next(&mut app).await {
            Packet::Publish(p) => {
                app.puback(p.pid).await;
                got.push((p.topic, p.properties.user));
            }
            other => panic!("{other:?}"),
        }
    }
    let keep = ("keep".to_string(), "me".to_string());
    assert_eq!(
        got,
        vec![
            ("free/a".into(), vec![keep.clone()]),
            ("free/b".into(), vec![keep.clone()]),
            (
                "out/c".into(),
                vec![keep.clone(), ("moat-from".into(), "gw".into())]
            ),
        ]
    );
    assert_eq!(gate.seen.lock().unwrap()[0].1, vec![keep]);
    assert_eq!(hub.broker.metrics().reserved_properties_stripped, 3);
    let reported: Vec<SecurityEvent> = hub
        .auth
        .events()
        .into_iter()
        .filter(|e| matches!(e, SecurityEvent::ReservedPropertiesStripped { .. }))
        .collect();
    assert_eq!(reported.len(), 1, "{reported:?}");
    match &reported[0] {
        SecurityEvent::ReservedPropertiesStripped {
            identity,
            topic,
            names,
            ..
        } => {
            assert_eq!((identity.as_str(), topic.as_str()), ("gw", "free/a"));
            assert_eq!(names, &["moat-device", "moat-gateway"]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_publish_outside_the_acl_is_reported_once_per_connection() {
    let (hub, _gate) = hub_with_gate(BrokerConfig::default()).await;
    let mut gw = login(&hub, Version::V5, "gw", "tg").await;
    for pid in 1..=2 {
        gw.publish("devices/d1/t", b"x", 1, false, pid).await;
        assert_eq!(ack_code(&next(&mut gw).await), (pid, 0x87));
    }
    let denied: Vec<SecurityEvent> = hub
        .auth
        .events()
        .into_iter()
        .filter(|e| matches!(e, SecurityEvent::PublishDenied { .. }))
        .collect();
    assert!(
        matches!(&denied[..], [SecurityEvent::PublishDenied { identity, topic, .. }] if identity == "gw" && topic == "devices/d1/t"),
        "{denied:?}"
    );
}
