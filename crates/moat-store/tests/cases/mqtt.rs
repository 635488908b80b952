//! The MQTT broker's durable state: retained messages and persistent sessions, stored as
//! opaque values that must come back byte for byte.

use crate::common::{TestDb, at};
use moat_store::MqttWrite;

/// Every byte value, NUL and invalid UTF-8 included.
fn all_bytes() -> Vec<u8> {
    (0..=255u8).rev().chain(0..=255u8).collect()
}

pub async fn mqtt_retained_messages(db: &TestDb) {
    let s = &db.store;
    assert!(s.mqtt_retained().await.unwrap().is_empty());
    s.put_mqtt_retained("devices/b/state", &all_bytes())
        .await
        .unwrap();
    s.put_mqtt_retained("devices/a/state", b"one")
        .await
        .unwrap();
    s.put_mqtt_retained("devices/c/empty", b"").await.unwrap();
    // Replacing keeps one row per topic.
    s.put_mqtt_retained("devices/a/state", b"two")
        .await
        .unwrap();
    assert_eq!(
        s.mqtt_retained().await.unwrap(),
        vec![
            ("devices/a/state".to_owned(), b"two".to_vec()),
            ("devices/b/state".to_owned(), all_bytes()),
            ("devices/c/empty".to_owned(), Vec::new()),
        ]
    );
    s.delete_mqtt_retained("devices/b/state").await.unwrap();
    // Forgetting what is not there is not an error.
    s.delete_mqtt_retained("devices/b/state").await.unwrap();
    s.delete_mqtt_retained("never/stored").await.unwrap();
    let left: Vec<String> = s
        .mqtt_retained()
        .await
        .unwrap()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(left, ["devices/a/state", "devices/c/empty"]);
}

pub async fn mqtt_sessions_and_expiry(db: &TestDb) {
    let s = &db.store;
    assert!(s.mqtt_sessions().await.unwrap().is_empty());
    let big: Vec<u8> = all_bytes().into_iter().cycle().take(1 << 20).collect();
    s.put_mqtt_session("expires-soon", b"a", Some(at(5)))
        .await
        .unwrap();
    s.put_mqtt_session("expires-later", &big, Some(at(60)))
        .await
        .unwrap();
    s.put_mqtt_session("connected", b"c", None).await.unwrap();
    s.put_mqtt_session("was-expiring", b"d", Some(at(1)))
        .await
        .unwrap();
    // Saved again while connected: the old expiry must not linger.
    s.put_mqtt_session("was-expiring", b"d2", None)
        .await
        .unwrap();
    assert_eq!(
        s.mqtt_sessions().await.unwrap(),
        vec![
            ("connected".to_owned(), b"c".to_vec()),
            ("expires-later".to_owned(), big.clone()),
            ("expires-soon".to_owned(), b"a".to_vec()),
            ("was-expiring".to_owned(), b"d2".to_vec()),
        ]
    );

    assert_eq!(s.delete_expired_mqtt_sessions(at(4)).await.unwrap(), 0);
    // At the expiry instant itself the session is gone.
    assert_eq!(s.delete_expired_mqtt_sessions(at(5)).await.unwrap(), 1);
    assert_eq!(s.delete_expired_mqtt_sessions(at(5)).await.unwrap(), 0);
    let ids: Vec<String> = s
        .mqtt_sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["connected", "expires-later", "was-expiring"]);

    s.delete_mqtt_session("connected").await.unwrap();
    s.delete_mqtt_session("connected").await.unwrap();
    s.delete_mqtt_session("never-stored").await.unwrap();
    // A second handle on the same database sees what was written (durable on return).
    let reopened = moat_store::open(&db.url).await.unwrap();
    assert_eq!(
        reopened.mqtt_sessions().await.unwrap(),
        vec![
            ("expires-later".to_owned(), big),
            ("was-expiring".to_owned(), b"d2".to_vec()),
        ]
    );
    assert_eq!(
        reopened
            .delete_expired_mqtt_sessions(at(3600))
            .await
            .unwrap(),
        1,
        "only the session with an expiry goes"
    );
}

/// Many saves at once (on SQLite: group-committed together) each land.
pub async fn concurrent_mqtt_saves(db: &TestDb) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = db.store.clone();
            tokio::spawn(async move {
                s.put_mqtt_retained(&format!("t/{i:02}"), &[i as u8; 3])
                    .await
                    .unwrap();
                s.put_mqtt_session(&format!("c{i:02}"), &[i as u8], Some(at(i)))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let retained = db.store.mqtt_retained().await.unwrap();
    assert_eq!(retained.len(), 32);
    assert!(
        retained
            .iter()
            .enumerate()
            .all(|(i, (t, v))| *t == format!("t/{i:02}") && *v == [i as u8; 3])
    );
    assert_eq!(db.store.mqtt_sessions().await.unwrap().len(), 32);
    assert_eq!(
        db.store.delete_expired_mqtt_sessions(at(15)).await.unwrap(),
        16
    );
}

/// A batch of broker changes: sessions, their message rows through sent, released,
/// acknowledged and dropped, a packet id reused within the batch, a session deleted and
/// made again, retained messages — as if applied in order, atomically.
pub async fn mqtt_write_batches(db: &TestDb) {
    let s = &db.store;
    let id = |c: &str| c.to_string();
    let put = |c: &str, v: &[u8]| MqttWrite::PutSession {
        client_id: id(c),
        value: v.to_vec(),
        expires_at: None,
    };
    let enq = |c: &str, seq: u64| MqttWrite::Enqueue {
        client_id: id(c),
        seq,
        value: vec![seq as u8],
    };
    let sent = |c: &str, seq: u64, packet_id: u16| MqttWrite::Sent {
        client_id: id(c),
        seq,
        packet_id,
    };
    let ack = |c: &str, packet_id: u16| MqttWrite::Acknowledged {
        client_id: id(c),
        packet_id,
    };
    let mut batch = vec![put("a", b"a1"), put("b", b"b1"), put("gone", b"g")];
    batch.extend((0..700).map(|n| enq("a", n)));
    batch.extend([
        enq("gone", 0),
        enq("b", 0),
        enq("b", 1),
        sent("a", 0, 1),
        sent("a", 1, 2),
        sent("a", 2, 3),
        ack("a", 1),
        // Packet id 1 again, for another message: must not take the first one's fate.
        sent("a", 3, 1),
        MqttWrite::Released {
            client_id: id("a"),
            packet_id: 2,
        },
        MqttWrite::Finished {
            client_id: id("a"),
            seq: 4,
        },
        put("a", b"a2"),
        MqttWrite::DeleteSession {
            client_id: id("gone"),
        },
        MqttWrite::DeleteSession { client_id: id("b") },
        put("b", b"b2"),
        enq("b", 5),
        MqttWrite::PutRetained {
            topic: "t/1".into(),
            value: b"r1".to_vec(),
        },
        MqttWrite::PutRetained {
            topic: "t/2".into(),
            value: b"r2".to_vec(),
        },
        MqttWrite::DeleteRetained {
            topic: "t/1".into(),
        },
    ]);
    s.write_mqtt(batch).await.unwrap();
    let rows = s.mqtt_queue().await.unwrap();
    let view: Vec<(&str, u64, Option<u16>, bool)> = rows
        .iter()
        .map(|r| (r.client_id.as_str(), r.seq, r.packet_id, r.released))
        .filter(|r| r.0 != "a" || r.1 < 6)
        .collect();
    assert_eq!(
        view,
        [
            ("a", 1, Some(2), true),
            ("a", 2, Some(3), false),
            ("a", 3, Some(1), false),
            ("a", 5, None, false),
            ("b", 5, None, false),
        ]
    );
    assert_eq!(rows.iter().filter(|r| r.client_id == "a").count(), 698);
    assert_eq!(rows[3].value, [5]);
    assert_eq!(
        s.mqtt_sessions().await.unwrap(),
        [(id("a"), b"a2".to_vec()), (id("b"), b"b2".to_vec())]
    );
    assert_eq!(
        s.mqtt_retained().await.unwrap(),
        [("t/2".to_string(), b"r2".to_vec())]
    );
    // A failing batch leaves nothing: a message for a session that does not exist.
    let bad = vec![enq("a", 9999), enq("nobody", 0)];
    assert!(s.write_mqtt(bad).await.is_err());
    assert!(s.mqtt_queue().await.unwrap().iter().all(|r| r.seq != 9999));
}
