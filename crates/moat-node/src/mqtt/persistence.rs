//! The broker's durable state in the registry: retained messages and persistent sessions
//! survive a hub restart.
//!
//! The broker writes behind ([`moat_broker::persistence`]); this back end turns each
//! retained message or session into one registry row whose value is a format byte followed
//! by the [`postcard`] encoding of the broker's own type. Postcard is compact and keeps
//! payloads as raw byte strings, but is not self-describing: a change to the broker's stored
//! types must bump [`FORMAT`] (and decode the old one, or accept losing that state).
//!
//! A value that does not decode (a newer format after a downgrade, a corrupt row) is logged
//! and skipped at load, so one bad row cannot keep the hub from starting; the row stays
//! until the broker writes or removes that topic or session again.

use crate::error::{Context, Error};
use async_trait::async_trait;
use moat_broker::Error as BrokerError;
use moat_broker::Message;
use moat_broker::persistence::{Persistence, StoredSession};
use moat_store::Store;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use time::OffsetDateTime;

/// First byte of every stored value: the encoding of what follows.
const FORMAT: u8 = 1;

/// [`Persistence`] over the registry ([`Store`]): SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct RegistryPersistence {
    store: Arc<dyn Store>,
}

impl RegistryPersistence {
    /// Persistence in `store`'s MQTT tables.
    pub fn new(store: Arc<dyn Store>) -> Self {
        RegistryPersistence { store }
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

    async fn save_retained(&self, msg: &Message) -> Result<(), BrokerError> {
        let value = encode(msg)
            .with_context(|| format!("cannot encode the retained message of {}", msg.topic))
            .map_err(broker_error)?;
        self.store
            .put_mqtt_retained(&msg.topic, &value)
            .await
            .with_context(|| format!("cannot store the retained message of {}", msg.topic))
            .map_err(broker_error)
    }

    async fn remove_retained(&self, topic: &str) -> Result<(), BrokerError> {
        self.store
            .delete_mqtt_retained(topic)
            .await
            .with_context(|| format!("cannot delete the retained message of {topic}"))
            .map_err(broker_error)
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
        let rows = self
            .store
            .mqtt_sessions()
            .await
            .context("cannot load MQTT sessions")
            .map_err(broker_error)?;
        Ok(rows
            .into_iter()
            .filter_map(
                |(client_id, value)| match decode::<StoredSession>(&value) {
                    Ok(s) if s.client_id == client_id => Some(s),
                    Ok(s) => {
                        tracing::warn!(%client_id, stored_client_id = %s.client_id, "MQTT session stored under another client id; skipped");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(%client_id, error = format!("{e:#}"), "undecodable MQTT session; skipped");
                        None
                    }
                },
            )
            .collect())
    }

    async fn save_session(&self, session: &StoredSession) -> Result<(), BrokerError> {
        let id = &session.client_id;
        let value = encode(session)
            .with_context(|| format!("cannot encode MQTT session {id}"))
            .map_err(broker_error)?;
        self.store
            .put_mqtt_session(id, &value, session_end(session))
            .await
            .with_context(|| format!("cannot store MQTT session {id}"))
            .map_err(broker_error)
    }

    async fn remove_session(&self, client_id: &str) -> Result<(), BrokerError> {
        self.store
            .delete_mqtt_session(client_id)
            .await
            .with_context(|| format!("cannot delete MQTT session {client_id}"))
            .map_err(broker_error)
    }
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
                qos: 0,
                retain: false,
                subscription_ids: vec![],
            }],
            incoming_qos2: vec![3, 4],
        }
    }

    #[tokio::test]
    async fn retained_messages_round_trip_exactly() {
        let p = memory().await;
        let (a, b) = (message("devices/a/state"), message("devices/b/state"));
        p.save_retained(&a).await.unwrap();
        p.save_retained(&b).await.unwrap();
        let mut b2 = b.clone();
        b2.payload = Bytes::from_static(b"\0replaced\0");
        p.save_retained(&b2).await.unwrap();
        let mut loaded = p.load_retained().await.unwrap();
        loaded.sort_by(|x, y| x.topic.cmp(&y.topic));
        assert_eq!(loaded, [a.clone(), b2]);
        p.remove_retained("devices/b/state").await.unwrap();
        assert_eq!(p.load_retained().await.unwrap(), [a]);
    }

    #[tokio::test]
    async fn sessions_round_trip_exactly() {
        let p = memory().await;
        let offline = session("d1", Some(SystemTime::now()));
        let online = session("d2", None);
        p.save_session(&offline).await.unwrap();
        p.save_session(&online).await.unwrap();
        let mut loaded = p.load_sessions().await.unwrap();
        loaded.sort_by(|x, y| x.client_id.cmp(&y.client_id));
        assert_eq!(loaded, [offline.clone(), online]);
        p.remove_session("d2").await.unwrap();
        assert_eq!(p.load_sessions().await.unwrap(), [offline]);
    }

    #[tokio::test]
    async fn sessions_that_expired_while_down_are_not_loaded() {
        let p = memory().await;
        let long_ago = SystemTime::now() - Duration::from_secs(7200);
        p.save_session(&session("gone", Some(long_ago)))
            .await
            .unwrap();
        let mut never = session("never", Some(long_ago));
        never.expiry = u32::MAX;
        p.save_session(&never).await.unwrap();
        let kept = session("kept", Some(SystemTime::now()));
        p.save_session(&kept).await.unwrap();
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
    }

    #[tokio::test]
    async fn undecodable_rows_are_skipped_not_fatal() {
        let p = memory().await;
        let good = message("devices/ok/state");
        p.save_retained(&good).await.unwrap();
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
