//! Retained messages and persistent sessions (with queued QoS 1 messages) survive a broker
//! restart through the `Persistence` trait.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use moat_broker::codec::Version;
use moat_broker::{Broker, BrokerConfig, MemoryPersistence};
use std::sync::Arc;

#[tokio::test]
async fn state_survives_a_restart() {
    let store = Arc::new(MemoryPersistence::default());
    let auth = Arc::new(TestAuthority::default());
    auth.add("d1", "t1", &["devices/d1/#"], &["devices/d1/#"]);
    auth.add("app", "ta", &[], &["devices/+/telemetry", "devices/d1/#"]);
    let b1 = Broker::with_persistence(BrokerConfig::default(), auth.clone(), store.clone());
    let mut hub1 = Hub::start_broker(b1, auth.clone()).await;

    let mut c = connect_packet(Version::V5, "app", Some(("app", "ta")));
    c.properties.session_expiry = Some(3600);
    let (mut s, code) = RawClient::connect(hub1.plain, c.clone()).await;
    assert_eq!(code, 0);
    s.subscribe(1, "devices/d1/#", 1).await;
    s.disconnect().await;
    wait_for(|| hub1.broker.sessions().is_empty()).await;
    let (mut p, _) = RawClient::connect(
        hub1.plain,
        connect_packet(Version::V311, "d1", Some(("d1", "t1"))),
    )
    .await;
    p.publish("devices/d1/state", b"on", 1, true, 1).await;
    assert_eq!(p.recv().await.unwrap().kind(), 4);
    p.publish("devices/d1/q", b"queued", 1, false, 2).await;
    assert_eq!(p.recv().await.unwrap().kind(), 4);

    // Shut the first broker down (its listeners flush state on the way out).
    hub1.shutdown.cancel();
    for t in hub1.tasks.drain(..) {
        tokio::time::timeout(T, t).await.unwrap().unwrap();
    }
    assert!(p.recv().await.is_none(), "connections closed at shutdown");

    let b2 = Broker::with_persistence(BrokerConfig::default(), auth.clone(), store);
    b2.restore().await.unwrap();
    let hub2 = Hub::start_broker(b2, auth).await;
    c.clean_start = false;
    let mut s = RawClient::tcp(hub2.plain, Version::V5).await;
    s.send(&moat_broker::codec::encode_connect(&c)).await;
    let ack = s.recv().await.unwrap();
    assert_eq!(
        (ack.body[0], ack.body[1]),
        (1, 0),
        "session present after restart"
    );
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = s.recv().await.unwrap();
        got.push(m.publish(Version::V5).1);
        s.puback(m.pid()).await;
    }
    assert_eq!(got, vec![b"on".to_vec(), b"queued".to_vec()]);
    // The retained message reaches a new subscriber.
    let (mut late, _) = RawClient::connect(
        hub2.plain,
        connect_packet(Version::V311, "d1", Some(("d1", "t1"))),
    )
    .await;
    late.subscribe(1, "devices/d1/state", 0).await;
    assert_eq!(
        late.recv().await.unwrap().publish(Version::V311).1,
        b"on".to_vec()
    );
}
