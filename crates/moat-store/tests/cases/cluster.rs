//! The cluster's event log (appends from several nodes at once are gap-free and commit in
//! sequence order; read back after a position; pruned by age) and node status rows.

use crate::common::{TestDb, t0};
use moat_store::{Error, NodeStatus};
use std::collections::BTreeSet;
use time::Duration;

pub async fn cluster_event_log(db: &TestDb) {
    let s = &db.store;
    assert_eq!(s.last_event_seq().await.unwrap(), 0);
    assert!(s.events_after(0, 10).await.unwrap().is_empty());
    let first = s
        .append_events("a", &["e1".into(), "e2".into()], t0())
        .await
        .unwrap();
    assert_eq!(first, 1);
    assert_eq!(s.last_event_seq().await.unwrap(), 2);

    // Eight "nodes" append at once: every seq is handed out once, none is skipped.
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut firsts = Vec::new();
            for i in 0..10 {
                let events = vec![format!("{n}-{i}-x"), format!("{n}-{i}-y")];
                let at = t0() + Duration::seconds(i);
                firsts.push(
                    store
                        .append_events(&format!("n{n}"), &events, at)
                        .await
                        .unwrap(),
                );
            }
            firsts
        }));
    }
    let mut firsts = BTreeSet::new();
    for t in tasks {
        firsts.extend(t.await.unwrap());
    }
    assert_eq!(firsts.len(), 80);
    assert_eq!(s.last_event_seq().await.unwrap(), 2 + 160);
    let all = s.events_after(0, 1000).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=162).collect::<Vec<u64>>());
    // A batch keeps its order and stays together.
    for f in &firsts {
        let pair = &all[(*f - 1) as usize..(*f + 1) as usize];
        assert_eq!(pair[0].node, pair[1].node);
        assert!(
            pair[0].event.ends_with("-x") && pair[1].event.ends_with("-y"),
            "{pair:?}"
        );
    }
    assert_eq!((all[0].node.as_str(), all[0].event.as_str()), ("a", "e1"));
    // Paging after a position.
    let page = s.events_after(100, 5).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![101, 102, 103, 104, 105]
    );

    // Pruning by age keeps the sequence: the head does not move back.
    let pruned = s.prune_events(t0() + Duration::seconds(5)).await.unwrap();
    assert_eq!(pruned, 2 + 8 * 5 * 2);
    assert_eq!(s.last_event_seq().await.unwrap(), 162);
    let next = s.append_events("a", &["after".into()], t0()).await.unwrap();
    assert_eq!(next, 163);
    let rest = s.events_after(0, 1000).await.unwrap();
    assert_eq!(rest.len(), 162 - 82 + 1);
    assert!(
        rest.iter()
            .all(|e| e.at >= t0() + Duration::seconds(5) || e.seq == 163)
    );
}

pub async fn cluster_node_status(db: &TestDb) {
    let s = &db.store;
    let mut a = NodeStatus {
        name: "node-a".into(),
        started_at: t0(),
        heartbeat_at: t0(),
        heartbeat_interval: std::time::Duration::from_millis(500),
        sessions: 3,
        applied_seq: 7,
        nats_ok: true,
        mqtt: "127.0.0.1:8883".into(),
        api: "https://127.0.0.1:8443".into(),
    };
    s.record_node(&a).await.unwrap();
    a.sessions = 5;
    a.nats_ok = false;
    a.heartbeat_at = t0() + Duration::seconds(5);
    s.record_node(&a).await.unwrap();
    let b = NodeStatus {
        name: "node-b".into(),
        ..a.clone()
    };
    s.record_node(&b).await.unwrap();
    assert_eq!(s.nodes().await.unwrap(), vec![a.clone(), b]);
    assert!(a.alive(t0() + Duration::milliseconds(6400)));
    assert!(!a.alive(t0() + Duration::milliseconds(6600)));
    s.forget_node("node-b").await.unwrap();
    assert_eq!(s.nodes().await.unwrap(), vec![a]);
    assert!(matches!(
        s.forget_node("node-b").await,
        Err(Error::NotFound(_))
    ));
}

pub async fn cluster_client_claims(db: &TestDb) {
    use moat_store::{ClientClaim, MqttWrite};
    let s = &db.store;
    let c = s.claim_client("dev-1", "node-a").await.unwrap();
    assert_eq!(
        c,
        ClientClaim {
            epoch: 1,
            previous: None
        }
    );
    let c = s.claim_client("dev-1", "node-b").await.unwrap();
    assert_eq!(
        c,
        ClientClaim {
            epoch: 2,
            previous: Some("node-a".into())
        }
    );
    s.claim_client("dev-2", "node-a").await.unwrap();
    // Racing claims: each gets its own epoch, and each names the one before it.
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = s.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_client("dev-3", &format!("n{n}")).await.unwrap()
        }));
    }
    let mut epochs = Vec::new();
    for t in tasks {
        epochs.push(t.await.unwrap().epoch);
    }
    epochs.sort_unstable();
    assert_eq!(epochs, (1..=8).collect::<Vec<u64>>());

    // A node restores the sessions it holds the claim of; one session loads with its queue.
    s.write_mqtt(vec![
        MqttWrite::PutSession {
            client_id: "dev-1".into(),
            value: b"s1".to_vec(),
            expires_at: None,
        },
        MqttWrite::PutSession {
            client_id: "dev-2".into(),
            value: b"s2".to_vec(),
            expires_at: None,
        },
        MqttWrite::Enqueue {
            client_id: "dev-1".into(),
            seq: 7,
            value: b"m7".to_vec(),
        },
        MqttWrite::Enqueue {
            client_id: "dev-1".into(),
            seq: 3,
            value: b"m3".to_vec(),
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        s.claimed_mqtt_sessions("node-a").await.unwrap(),
        vec![("dev-2".to_string(), b"s2".to_vec())]
    );
    assert_eq!(
        s.claimed_mqtt_sessions("node-b").await.unwrap(),
        vec![("dev-1".to_string(), b"s1".to_vec())]
    );
    let (value, queue) = s.mqtt_session("dev-1").await.unwrap().expect("stored");
    assert_eq!(value, b"s1");
    assert_eq!(queue.iter().map(|q| q.seq).collect::<Vec<_>>(), vec![3, 7]);
    assert!(s.mqtt_session("dev-9").await.unwrap().is_none());
}

pub async fn cluster_leases(db: &TestDb) {
    let s = &db.store;
    let at = |secs: i64| t0() + Duration::seconds(secs);
    assert!(s.lease("leader").await.unwrap().is_none());
    assert!(s.acquire_lease("leader", "a", at(0), at(10)).await.unwrap());
    assert!(
        !s.acquire_lease("leader", "b", at(5), at(15)).await.unwrap(),
        "held by a"
    );
    assert!(
        s.acquire_lease("leader", "a", at(6), at(16)).await.unwrap(),
        "a renews"
    );
    assert_eq!(
        s.lease("leader").await.unwrap(),
        Some(("a".to_string(), at(16)))
    );
    assert!(
        !s.acquire_lease("leader", "b", at(15), at(25))
            .await
            .unwrap()
    );
    assert!(
        s.acquire_lease("leader", "b", at(16), at(26))
            .await
            .unwrap(),
        "expired: b takes it"
    );
    assert!(
        !s.acquire_lease("leader", "a", at(17), at(27))
            .await
            .unwrap()
    );
    assert!(
        s.acquire_lease("other", "a", at(17), at(27)).await.unwrap(),
        "leases are by name"
    );
}
