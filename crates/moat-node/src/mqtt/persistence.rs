//! The broker's durable state in the registry: retained messages and persistent sessions
//! survive a hub restart, and with sync durability a crash (see [`moat_broker::persistence`]).
//!
//! Each retained message and each session is one registry row, and each QoS 1/2 message
//! queued for a session one `mqtt_queue` row (sent under a packet id, released, deleted when
//! acknowledged); a batch of broker changes is one registry transaction. Values are a format
//! byte followed by the [`postcard`] encoding of the broker's own type. Postcard is compact
//! and keeps payloads as raw byte strings, but is not self-describing: a change to the
//! broker's stored types must bump [`FORMAT`] (and decode the old one, or accept losing that
//! state).
//!
//! A session row written before messages had rows of their own (the write-behind of earlier
//! versions) holds its queue inside; it is loaded as it is and rewritten in the new form at
//! once.
//!
//! A value that does not decode (a newer format after a downgrade, a corrupt row) is logged
//! and skipped at load, so one bad row cannot keep the hub from starting; the row stays
//! until the broker writes or removes that topic or session again.

use crate::error::{Context, Error};
use async_trait::async_trait;
use moat_broker::Error as BrokerError;
use moat_broker::Message;
use moat_broker::persistence::{Change, Delivery, Inflight, Persistence, StoredSession};
use moat_store::{MqttWrite, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use time::OffsetDateTime;

/// First byte of every stored value: the encoding of what follows.
const FORMAT: u8 = 1;

/// [`Persistence`] over the registry ([`Store`]): SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct RegistryPersistence {
    store: Arc<dyn Store>,
    /// On a cluster node, its name: it restores only the sessions whose client id it holds
    /// the claim of (see [`Self::claim`]).
    node: Option<String>,
}

impl RegistryPersistence {
    /// Persistence in `store`'s MQTT tables.
    pub fn new(store: Arc<dyn Store>) -> Self {
        RegistryPersistence { store, node: None }
    }

    /// Persistence of cluster node `node`, in the cluster's shared registry.
    pub fn of_node(store: Arc<dyn Store>, node: String) -> Self {
        RegistryPersistence {
            store,
            node: Some(node),
        }
    }

    /// Claims `client_id` for this (cluster) node: the epoch and the node it was on.
    pub(crate) async fn claim(
        &self,
        client_id: &str,
    ) -> Result<moat_store::ClientClaim, BrokerError> {
        let node = self.node.as_deref().unwrap_or_default();
        self.store
            .claim_client(client_id, node)
            .await
            .context("cannot claim the client id in the registry")
            .map_err(broker_error)
    }

    /// `client_id`'s stored session with its messages, if it has one.
    pub(crate) async fn load_session(
        &self,
        client_id: &str,
    ) -> Result<Option<StoredSession>, BrokerError> {
        let Some((value, rows)) = self
            .store
            .mqtt_session(client_id)
            .await
            .context("cannot load an MQTT session")
            .map_err(broker_error)?
        else {
            return Ok(None);
        };
        let mut s = match decode::<StoredSession>(&value) {
            Ok(s) if s.client_id == client_id => s,
            Ok(_) | Err(_) => {
                tracing::warn!(%client_id, "undecodable or misfiled MQTT session; starting a new one");
                return Ok(None);
            }
        };
        if !s.queued.is_empty() || !s.inflight.is_empty() {
            // The earlier form (queue inside the row): the owning node rewrites it at start.
            tracing::warn!(%client_id, "MQTT session in an earlier form; its messages are not moved");
            s.queued.clear();
            s.inflight.clear();
        }
        for row in rows {
            add_queued(&mut s, row);
        }
        Ok(Some(s))
    }
}

/// Puts one stored message row into its session (in flight, released, or queued).
fn add_queued(s: &mut StoredSession, row: moat_store::MqttQueued) {
    let mut d = match decode::<Delivery>(&row.value) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(client_id = %row.client_id, seq = row.seq, error = format!("{e:#}"), "undecodable queued MQTT message; skipped");
            return;
        }
    };
    d.seq = row.seq;
    match (row.packet_id, row.released) {
        (Some(pid), true) => s.inflight.push((pid, Inflight::Released)),
        (Some(pid), false) => s.inflight.push((pid, Inflight::Publish(d))),
        (None, _) => s.queued.push(d),
    }
}

#[async_trait]
impl Persistence for RegistryPersistence {
    async fn load_retained(&self) -> Result<Vec<Message>, BrokerError> {
        let rows = self
            .store
            .mqtt_retained()
            .await
            .context("cannot load retained messages")
            .map_err(broker_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|(topic, value)| match decode::<Message>(&value) {
                Ok(m) if m.topic == topic => Some(m),
                Ok(m) => {
                    tracing::warn!(%topic, stored_topic = %m.topic, "retained message stored under another topic; skipped");
                    None
                }
                Err(e) => {
                    tracing::warn!(%topic, error = format!("{e:#}"), "undecodable retained message; skipped");
                    None
                }
            })
            .collect())
    }

    async fn load_sessions(&self) -> Result<Vec<StoredSession>, BrokerError> {
        let expired = self
            .store
            .delete_expired_mqtt_sessions(OffsetDateTime::now_utc())
            .await
            .context("cannot delete expired MQTT sessions")
            .map_err(broker_error)?;
        if expired > 0 {
            tracing::info!(
                sessions = expired,
                "MQTT sessions expired while the hub was down"
            );
        }
        let rows = match &self.node {
            Some(node) => self.store.claimed_mqtt_sessions(node).await,
            None => self.store.mqtt_sessions().await,
        }
        .context("cannot load MQTT sessions")
        .map_err(broker_error)?;
        let mut sessions: BTreeMap<String, StoredSession> = BTreeMap::new();
        for (client_id, value) in rows {
            match decode::<StoredSession>(&value) {
                Ok(s) if s.client_id == client_id => {
                    sessions.insert(client_id, s);
                }
                Ok(s) => {
                    tracing::warn!(%client_id, stored_client_id = %s.client_id, "MQTT session stored under another client id; skipped");
                }
                Err(e) => {
                    tracing::warn!(%client_id, error = format!("{e:#}"), "undecodable MQTT session; skipped");
                }
            }
        }
        // Rows of the earlier form: the queue inside the session row.
        let upgrade: Vec<Change> = sessions
            .values()
            .filter(|s| !s.queued.is_empty() || !s.inflight.is_empty())
            .flat_map(|s| as_changes(s.clone()))
            .collect();
        if !upgrade.is_empty() {
            tracing::info!(
                changes = upgrade.len(),
                "rewriting MQTT sessions stored by an earlier version"
            );
            self.write(upgrade).await?;
            return Box::pin(self.load_sessions()).await;
        }
        let queue = self
            .store
            .mqtt_queue()
            .await
            .context("cannot load queued MQTT messages")
            .map_err(broker_error)?;
        for row in queue {
            if let Some(s) = sessions.get_mut(&row.client_id) {
                add_queued(s, row);
            }
        }
        Ok(sessions.into_values().collect())
    }

    async fn write(&self, changes: Vec<Change>) -> Result<(), BrokerError> {
        let writes = changes
            .into_iter()
            .map(to_write)
            .collect::<Result<Vec<_>, _>>()
            .context("cannot encode MQTT state")
            .map_err(broker_error)?;
        self.store
            .write_mqtt(writes)
            .await
            .context("cannot store MQTT state")
            .map_err(broker_error)
    }
}

/// The changes that store `s` whole: its row, then a row per message (in flight first, in
/// the order sent, then queued), numbered from 0.
fn as_changes(mut s: StoredSession) -> Vec<Change> {
    let (inflight, queued) = (
        std::mem::take(&mut s.inflight),
        std::mem::take(&mut s.queued),
    );
    let client_id = s.client_id.clone();
    let mut out = vec![Change::Session(s)];
    let mut seq = 0;
    for (packet_id, f) in inflight {
        // A released message's delivery was not kept, and is never sent again (only PUBREL
        // is): its row holds an empty stand-in.
        let mut delivery = match &f {
            Inflight::Publish(d) => d.clone(),
            Inflight::Released => released_stand_in(),
        };
        delivery.seq = seq;
        out.push(Change::Queued {
            client_id: client_id.clone(),
            delivery,
        });
        out.push(Change::Sent {
            client_id: client_id.clone(),
            seq,
            packet_id,
        });
        if matches!(f, Inflight::Released) {
            out.push(Change::Released {
                client_id: client_id.clone(),
                packet_id,
            });
        }
        seq += 1;
    }
    for mut delivery in queued {
        delivery.seq = seq;
        out.push(Change::Queued {
            client_id: client_id.clone(),
            delivery,
        });
        seq += 1;
    }
    out
}

/// The delivery row of a QoS 2 message released before queue rows existed.
fn released_stand_in() -> Delivery {
    Delivery {
        message: Arc::new(Message {
            topic: String::new(),
            payload: Default::default(),
            qos: 2,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            publisher: None,
        }),
        qos: 2,
        retain: false,
        subscription_ids: Vec::new(),
        seq: 0,
    }
}

/// The registry write of one broker change.
fn to_write(c: Change) -> Result<MqttWrite, postcard::Error> {
    Ok(match c {
        Change::Retained {
            topic,
            message: Some(m),
        } => MqttWrite::PutRetained {
            value: encode(&*m)?,
            topic,
        },
        Change::Retained {
            topic,
            message: None,
        } => MqttWrite::DeleteRetained { topic },
        Change::Session(s) => MqttWrite::PutSession {
            value: encode(&s)?,
            expires_at: session_end(&s),
            client_id: s.client_id,
        },
        Change::SessionRemoved { client_id } => MqttWrite::DeleteSession { client_id },
        Change::Queued {
            client_id,
            delivery,
        } => MqttWrite::Enqueue {
            seq: delivery.seq,
            value: encode(&delivery)?,
            client_id,
        },
        Change::Sent {
            client_id,
            seq,
            packet_id,
        } => MqttWrite::Sent {
            client_id,
            seq,
            packet_id,
        },
        Change::Released {
            client_id,
            packet_id,
        } => MqttWrite::Released {
            client_id,
            packet_id,
        },
        Change::Acknowledged {
            client_id,
            packet_id,
        } => MqttWrite::Acknowledged {
            client_id,
            packet_id,
        },
        Change::Finished { client_id, seq } => MqttWrite::Finished { client_id, seq },
    })
}

/// The broker's error for a failure here, keeping the whole cause chain.
fn broker_error(e: Error) -> BrokerError {
    BrokerError::Persistence(Box::new(e))
}

/// [`FORMAT`], then the postcard encoding of `value`.
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, vec![FORMAT])
}

/// The value [`encode`] wrote; an unknown format byte or trailing bytes are errors.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => {
            let (value, trailing) = postcard::take_from_bytes::<T>(rest)?;
            if !trailing.is_empty() {
                return Err(Error::Corrupt(format!("{} trailing bytes", trailing.len())));
            }
            Ok(value)
        }
        Some((other, _)) => Err(Error::Corrupt(format!("unknown format {other}"))),
        None => Err(Error::Corrupt("empty value".into())),
    }
}

/// When a session ends if its client stays away: its disconnection plus its expiry
/// interval. `None` while connected (the broker saves it again on disconnect), for
/// `u32::MAX` (never), and for times the registry cannot represent.
fn session_end(s: &StoredSession) -> Option<OffsetDateTime> {
    if s.expiry == u32::MAX {
        return None;
    }
    let end = s
        .disconnected_at?
        .checked_add(Duration::from_secs(u64::from(s.expiry)))?;
    let nanos = end.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(nanos).ok()?).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::Bytes;
    use moat_broker::codec::{Properties, SubscriptionOptions};
    use moat_broker::persistence::{Delivery, Inflight, StoredSubscription};
    use std::time::SystemTime;

    async fn memory() -> RegistryPersistence {
        RegistryPersistence::new(moat_store::open("sqlite::memory:").await.unwrap())
    }

    /// Every byte value, NUL and invalid UTF-8 included.
    fn all_bytes() -> Bytes {
        (0..=255u8)
            .chain((0..=255u8).rev())
            .collect::<Vec<_>>()
            .into()
    }

    fn message(topic: &str) -> Message {
        Message {
            topic: topic.to_owned(),
            payload: all_bytes(),
            qos: 1,
            retain: true,
            properties: Properties {
                payload_format: Some(0),
                content_type: Some("application/octet-stream".into()),
                response_topic: Some("devices/d1/replies".into()),
                correlation_data: Some(Bytes::from_static(&[0, 1, 0xff])),
                user: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
                ..Properties::default()
            },
            expires_at: Some(UNIX_EPOCH + Duration::new(1_900_000_000, 123_456_789)),
            publisher: Some("d1".into()),
        }
    }

    fn session(client_id: &str, disconnected_at: Option<SystemTime>) -> StoredSession {
        let m = Arc::new(message("devices/d1/q"));
        StoredSession {
            client_id: client_id.to_owned(),
            identity: client_id.to_owned(),
            expiry: 3600,
            disconnected_at,
            subscriptions: vec![StoredSubscription {
                filter: "$share/g/devices/d1/#".into(),
                options: SubscriptionOptions {
                    qos: 2,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 1,
                },
                id: Some(7),
            }],
            inflight: vec![
                (
                    1,
                    Inflight::Publish(Delivery {
                        message: m.clone(),
                        qos: 1,
                        retain: false,
                        subscription_ids: vec![7, 9],
                        seq: 0,
                    }),
                ),
                (65535, Inflight::Released),
            ],
            queued: vec![Delivery {
                message: Arc::new(Message {
                    payload: Bytes::new(),
                    publisher: None,
                    expires_at: None,
                    ..message("devices/d1/empty")
                }),
                qos: 1,
                retain: false,
                subscription_ids: vec![],
                seq: 0,
            }],
            incoming_qos2: vec![3, 4],
        }
    }

    /// `s` as loaded after [`as_changes`]: each message numbered in that order.
    fn numbered(mut s: StoredSession) -> StoredSession {
        let mut seq = 0;
        for (_, f) in &mut s.inflight {
            if let Inflight::Publish(d) = f {
                d.seq = seq;
            }
            seq += 1;
        }
        for d in &mut s.queued {
            d.seq = seq;
            seq += 1;
        }
        s
    }

    #[tokio::test]
    async fn retained_messages_round_trip_exactly() {
        let p = memory().await;
        let (a, b) = (message("devices/a/state"), message("devices/b/state"));
        let mut b2 = b.clone();
        b2.payload = Bytes::from_static(b"\0replaced\0");
        let put = |m: &Message| Change::Retained {
            topic: m.topic.clone(),
            message: Some(Arc::new(m.clone())),
        };
        p.write(vec![put(&a), put(&b), put(&b2)]).await.unwrap();
        let mut loaded = p.load_retained().await.unwrap();
        loaded.sort_by(|x, y| x.topic.cmp(&y.topic));
        assert_eq!(loaded, [a.clone(), b2]);
        p.write(vec![Change::Retained {
            topic: "devices/b/state".into(),
            message: None,
        }])
        .await
        .unwrap();
        assert_eq!(p.load_retained().await.unwrap(), [a]);
    }

    #[tokio::test]
    async fn sessions_and_their_messages_round_trip_exactly() {
        let p = memory().await;
        let offline = session("d1", Some(SystemTime::now()));
        let online = session("d2", None);
        let mut changes = as_changes(offline.clone());
        changes.extend(as_changes(online.clone()));
        p.write(changes).await.unwrap();
        let mut loaded = p.load_sessions().await.unwrap();
        loaded.sort_by(|x, y| x.client_id.cmp(&y.client_id));
        assert_eq!(loaded, [numbered(offline.clone()), numbered(online)]);
        p.write(vec![Change::SessionRemoved {
            client_id: "d2".into(),
        }])
        .await
        .unwrap();
        assert_eq!(p.load_sessions().await.unwrap(), [numbered(offline)]);
        let rows = p.store.mqtt_queue().await.unwrap();
        assert!(
            rows.iter().all(|r| r.client_id == "d1"),
            "d2's messages went with it"
        );
    }

    #[tokio::test]
    async fn message_changes_move_rows_through_their_life() {
        let p = memory().await;
        let mut s = session("d", None);
        let d = match &s.inflight[0].1 {
            Inflight::Publish(d) => d.clone(),
            Inflight::Released => unreachable!(),
        };
        s.inflight.clear();
        s.queued.clear();
        let id = || "d".to_string();
        let nth = |seq| Delivery { seq, ..d.clone() };
        let mut changes = vec![Change::Session(s.clone())];
        for seq in 0..4 {
            changes.push(Change::Queued {
                client_id: id(),
                delivery: nth(seq),
            });
        }
        changes.extend([
            Change::Sent {
                client_id: id(),
                seq: 0,
                packet_id: 1,
            },
            Change::Sent {
                client_id: id(),
                seq: 1,
                packet_id: 2,
            },
            Change::Acknowledged {
                client_id: id(),
                packet_id: 1,
            },
            Change::Released {
                client_id: id(),
                packet_id: 2,
            },
            Change::Finished {
                client_id: id(),
                seq: 2,
            },
        ]);
        p.write(changes).await.unwrap();
        let loaded = p.load_sessions().await.unwrap();
        s.inflight = vec![(2, Inflight::Released)];
        s.queued = vec![nth(3)];
        assert_eq!(loaded, [s]);
    }

    #[tokio::test]
    async fn a_session_stored_whole_by_an_earlier_version_is_rewritten_with_message_rows() {
        let p = memory().await;
        let old = session("d1", Some(SystemTime::now()));
        p.store
            .put_mqtt_session("d1", &encode(&old).unwrap(), None)
            .await
            .unwrap();
        assert_eq!(p.load_sessions().await.unwrap(), [numbered(old.clone())]);
        let (_, row) = p.store.mqtt_sessions().await.unwrap().remove(0);
        let row: StoredSession = decode(&row).unwrap();
        assert!(
            row.queued.is_empty() && row.inflight.is_empty(),
            "rewritten"
        );
        assert_eq!(p.store.mqtt_queue().await.unwrap().len(), 3);
        assert_eq!(p.load_sessions().await.unwrap(), [numbered(old)], "again");
    }

    #[tokio::test]
    async fn sessions_that_expired_while_down_are_not_loaded() {
        let p = memory().await;
        let long_ago = SystemTime::now() - Duration::from_secs(7200);
        let mut never = session("never", Some(long_ago));
        never.expiry = u32::MAX;
        let mut changes = as_changes(session("gone", Some(long_ago)));
        changes.extend(as_changes(never));
        changes.extend(as_changes(session("kept", Some(SystemTime::now()))));
        p.write(changes).await.unwrap();
        let mut ids: Vec<_> = p
            .load_sessions()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.client_id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["kept", "never"]);
        assert_eq!(p.store.mqtt_sessions().await.unwrap().len(), 2, "deleted");
        let rows = p.store.mqtt_queue().await.unwrap();
        assert!(
            rows.iter().all(|r| r.client_id != "gone"),
            "with its messages"
        );
    }

    #[tokio::test]
    async fn undecodable_rows_are_skipped_not_fatal() {
        let p = memory().await;
        let good = message("devices/ok/state");
        p.write(vec![Change::Retained {
            topic: good.topic.clone(),
            message: Some(Arc::new(good.clone())),
        }])
        .await
        .unwrap();
        let mut truncated = encode(&message("devices/cut/state")).unwrap();
        truncated.truncate(truncated.len() / 2);
        p.store
            .put_mqtt_retained("devices/cut/state", &truncated)
            .await
            .unwrap();
        let mut future = encode(&message("devices/new/state")).unwrap();
        future[0] = FORMAT + 1;
        p.store
            .put_mqtt_retained("devices/new/state", &future)
            .await
            .unwrap();
        p.store
            .put_mqtt_retained("devices/elsewhere", &encode(&good).unwrap())
            .await
            .unwrap();
        assert_eq!(p.load_retained().await.unwrap(), [good]);
    }

    #[test]
    fn decode_rejects_trailing_bytes_and_empty_values() {
        let mut v = encode(&message("t")).unwrap();
        assert!(decode::<Message>(&v).is_ok());
        v.push(0);
        assert!(decode::<Message>(&v).is_err());
        assert!(decode::<Message>(&[]).is_err());
    }

    #[test]
    fn session_end_is_disconnection_plus_expiry() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut s = session("d", Some(at));
        assert_eq!(
            session_end(&s),
            Some(OffsetDateTime::from_unix_timestamp(1_700_003_600).unwrap())
        );
        s.expiry = u32::MAX;
        assert_eq!(session_end(&s), None);
        s.expiry = 10;
        s.disconnected_at = None;
        assert_eq!(session_end(&s), None);
    }
}
