//! Retained messages and persistent sessions (with queued QoS 1 messages) survive a broker
//! restart through the `Persistence` trait.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use moat_broker::codec::Version;
use moat_broker::{Broker, BrokerConfig, Change, MemoryPersistence, Persistence};
use std::sync::Arc;
use std::time::Duration;

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

/// [`MemoryPersistence`] whose writes fail while `failing` is set (a full disk).
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryPersistence,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Persistence for Flaky {
    async fn load_retained(&self) -> Result<Vec<moat_broker::Message>, moat_broker::Error> {
        self.inner.load_retained().await
    }
    async fn load_sessions(
        &self,
    ) -> Result<Vec<moat_broker::persistence::StoredSession>, moat_broker::Error> {
        self.inner.load_sessions().await
    }
    async fn write(&self, changes: Vec<Change>) -> Result<(), moat_broker::Error> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(moat_broker::Error::Persistence(
                "no space left on device".into(),
            ));
        }
        self.inner.write(changes).await
    }
}

/// Sync durability: an acknowledgement waits for its write; while writes fail, new QoS 1
/// messages are refused (v5 0x97, v3.1.1 closed) and nothing acknowledged is lost; once
/// writes succeed again the held acknowledgement goes out and the message survives a restart.
#[tokio::test]
async fn a_failing_store_holds_acknowledgements_and_refuses_new_messages() {
    let store = Arc::new(Flaky::default());
    let auth = Arc::new(TestAuthority::default());
    auth.add("d1", "t1", &["devices/d1/#"], &[]);
    auth.add("d2", "t2", &["devices/d2/#"], &[]);
    auth.add("app", "ta", &[], &["devices/+/q"]);
    let b1 = Broker::with_persistence(BrokerConfig::default(), auth.clone(), store.clone());
    let hub1 = Hub::start_broker(b1, auth.clone()).await;
    let mut c = connect_packet(Version::V5, "app", Some(("app", "ta")));
    c.properties.session_expiry = Some(3600);
    let (mut s, _) = RawClient::connect(hub1.plain, c.clone()).await;
    assert_eq!(s.subscribe(1, "devices/+/q", 1).await, [1]);
    s.disconnect().await;
    wait_for(|| hub1.broker.sessions().is_empty()).await;

    store
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut p, _) = RawClient::connect(
        hub1.plain,
        connect_packet(Version::V5, "d1", Some(("d1", "t1"))),
    )
    .await;
    p.publish("devices/d1/q", b"kept", 1, false, 1).await;
    assert_eq!(
        p.recv_within(Duration::from_millis(600)).await,
        Err(()),
        "no PUBACK while the message is not written"
    );
    // The failed write is known now: a new message is refused at once.
    let (mut p2, _) = RawClient::connect(
        hub1.plain,
        connect_packet(Version::V5, "d2", Some(("d2", "t2"))),
    )
    .await;
    p2.publish("devices/d2/q", b"refused", 1, false, 7).await;
    let ack = p2.recv().await.unwrap();
    assert_eq!(
        (ack.kind(), ack.pid(), ack.body[2]),
        (4, 7, 0x97),
        "quota exceeded"
    );
    let (mut p3, _) = RawClient::connect(
        hub1.plain,
        connect_packet(Version::V311, "d2", Some(("d2", "t2"))),
    )
    .await;
    p3.publish("devices/d2/q", b"refused", 1, false, 8).await;
    assert!(p3.recv().await.is_none(), "v3.1.1: closed, no PUBACK");
    assert!(hub1.broker.metrics().messages_refused_storage >= 2);

    store
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let ack = p.recv().await.unwrap();
    assert_eq!(
        (ack.kind(), ack.pid()),
        (4, 1),
        "held PUBACK sent once written"
    );

    // What was acknowledged is on the store: a broker started from it delivers it.
    let b2 = Broker::with_persistence(BrokerConfig::default(), auth.clone(), store.clone());
    b2.restore().await.unwrap();
    let hub2 = Hub::start_broker(b2, auth).await;
    c.clean_start = false;
    let (mut s, code) = RawClient::connect(hub2.plain, c).await;
    assert_eq!(code, 0);
    let m = s.recv().await.unwrap();
    assert_eq!(
        m.publish(Version::V5),
        ("devices/d1/q".into(), b"kept".to_vec())
    );
    assert_eq!(
        s.recv_within(Duration::from_millis(300)).await,
        Err(()),
        "nothing refused was queued"
    );
}
