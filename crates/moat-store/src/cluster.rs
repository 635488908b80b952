//! The cluster's shared records (migration `0012_cluster`): the event log every node appends
//! its domain events to and reads the others' back from, and one status row per node. A
//! supertrait of [`Store`](crate::Store). Events are opaque text here (moat-core's JSON).

use crate::Error;
use crate::codec::RowExt;
use async_trait::async_trait;
use time::OffsetDateTime;

/// One entry of the cluster's event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Position in the log: increasing, gap-free, in commit order.
    pub seq: u64,
    /// The node that emitted it.
    pub node: String,
    /// The event (JSON).
    pub event: String,
    /// When it was appended.
    pub at: OffsetDateTime,
}

/// A node as its last heartbeat described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its name (unique in the cluster).
    pub name: String,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// Its last heartbeat.
    pub heartbeat_at: OffsetDateTime,
    /// How often it records itself.
    pub heartbeat_interval: std::time::Duration,
    /// Live MQTT sessions on it.
    pub sessions: u64,
    /// The last cluster event it had applied.
    pub applied_seq: u64,
    /// Whether it was connected to NATS.
    pub nats_ok: bool,
    /// Its MQTT over TLS address.
    pub mqtt: String,
    /// Its admin API URL.
    pub api: String,
}

impl NodeStatus {
    /// Whether the node recorded itself within three of its heartbeat intervals of `now`.
    pub fn alive(&self, now: OffsetDateTime) -> bool {
        let silent = now - self.heartbeat_at;
        silent < self.heartbeat_interval * 3
    }
}

/// The cluster's records.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Appends `events` (from `node`) in order, atomically; returns the seq of the first.
    /// Appends from all nodes are serialised: they commit in seq order.
    async fn append_events(
        &self,
        node: &str,
        events: &[String],
        at: OffsetDateTime,
    ) -> Result<u64, Error>;
    /// Entries after `seq`, in order, at most `limit`.
    async fn events_after(&self, seq: u64, limit: u32) -> Result<Vec<LoggedEvent>, Error>;
    /// The seq of the last entry appended (0 before the first).
    async fn last_event_seq(&self) -> Result<u64, Error>;
    /// Deletes entries appended before `before`; returns how many.
    async fn prune_events(&self, before: OffsetDateTime) -> Result<u64, Error>;
    /// Records (inserts or replaces) a node's status.
    async fn record_node(&self, status: &NodeStatus) -> Result<(), Error>;
    /// Every node that ever recorded itself, by name.
    async fn nodes(&self) -> Result<Vec<NodeStatus>, Error>;
    /// Forgets a node's status row (a node removed for good). [`Error::NotFound`] if absent.
    async fn forget_node(&self, name: &str) -> Result<(), Error>;
    /// Claims `client_id` for `node` (a CONNECT there): returns the claim's epoch (higher
    /// than every earlier claim of that client id) and the node that held it before.
    async fn claim_client(&self, client_id: &str, node: &str) -> Result<ClientClaim, Error>;
    /// The stored persistent sessions whose client id `node` holds the claim of, as
    /// (client id, value), by client id.
    async fn claimed_mqtt_sessions(&self, node: &str) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Takes or renews lease `name` for `holder` until `until`: true if `holder` holds it
    /// now (it was free, expired at `now`, or already `holder`'s).
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, Error>;
    /// Who holds lease `name`, and until when (it may have expired).
    async fn lease(&self, name: &str) -> Result<Option<(String, OffsetDateTime)>, Error>;
    /// One stored session's value and its message rows in queueing order (none: no stored
    /// session).
    async fn mqtt_session(
        &self,
        client_id: &str,
    ) -> Result<Option<(Vec<u8>, Vec<crate::MqttQueued>)>, Error>;
}

/// What [`ClusterStore::claim_client`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientClaim {
    /// The new claim's epoch.
    pub epoch: u64,
    /// The node that held the client id before, if any.
    pub previous: Option<String>,
}

pub(crate) mod sql {
    pub(crate) const BUMP_HEAD: &str =
        "UPDATE cluster_log_head SET seq = seq + $1 WHERE id = 1 RETURNING seq";
    pub(crate) const INSERT_EVENT: &str =
        "INSERT INTO cluster_events (seq, node, event, at) VALUES ($1, $2, $3, $4)";
    pub(crate) const EVENTS_AFTER: &str = "SELECT seq, node, event, at FROM cluster_events \
         WHERE seq > $1 ORDER BY seq LIMIT $2";
    pub(crate) const HEAD: &str = "SELECT seq FROM cluster_log_head WHERE id = 1";
    pub(crate) const PRUNE: &str = "DELETE FROM cluster_events WHERE at < $1";
    pub(crate) const RECORD_NODE: &str = "INSERT INTO cluster_nodes \
         (name, started_at, heartbeat_at, heartbeat_ms, sessions, applied_seq, nats_ok, mqtt, \
         api) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at, \
         heartbeat_at = excluded.heartbeat_at, heartbeat_ms = excluded.heartbeat_ms, \
         sessions = excluded.sessions, \
         applied_seq = excluded.applied_seq, nats_ok = excluded.nats_ok, \
         mqtt = excluded.mqtt, api = excluded.api";
    pub(crate) const NODES: &str = "SELECT name, started_at, heartbeat_at, heartbeat_ms, sessions, \
         applied_seq, nats_ok, mqtt, api FROM cluster_nodes ORDER BY name";
    pub(crate) const FORGET_NODE: &str = "DELETE FROM cluster_nodes WHERE name = $1";
    pub(crate) const CLAIM_CLIENT: &str = "INSERT INTO mqtt_client_claims \
         (client_id, node, epoch, prev_node) VALUES ($1, $2, 1, NULL) \
         ON CONFLICT (client_id) DO UPDATE SET prev_node = mqtt_client_claims.node, \
         node = excluded.node, epoch = mqtt_client_claims.epoch + 1 \
         RETURNING epoch, prev_node";
    pub(crate) const CLAIMED_SESSIONS: &str = "SELECT s.client_id, s.value FROM mqtt_sessions s \
         JOIN mqtt_client_claims c ON c.client_id = s.client_id WHERE c.node = $1 \
         ORDER BY s.client_id";
    pub(crate) const ACQUIRE_LEASE: &str = "INSERT INTO cluster_leases (name, holder, expires_at) \
         VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
         expires_at = excluded.expires_at \
         WHERE cluster_leases.holder = excluded.holder OR cluster_leases.expires_at <= $4 \
         RETURNING holder";
    pub(crate) const LEASE: &str = "SELECT holder, expires_at FROM cluster_leases WHERE name = $1";
    pub(crate) const SESSION: &str = "SELECT value FROM mqtt_sessions WHERE client_id = $1";
    pub(crate) const SESSION_QUEUE: &str = "SELECT client_id, seq, packet_id, released, value \
         FROM mqtt_queue WHERE client_id = $1 ORDER BY seq";
}

fn unsigned(v: i64, col: &'static str) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::Corrupt(col))
}

pub(crate) fn logged_event(row: &impl RowExt) -> Result<LoggedEvent, Error> {
    Ok(LoggedEvent {
        seq: unsigned(row.int("seq")?, "cluster_events.seq")?,
        node: row.text("node")?,
        event: row.text("event")?,
        at: row.ts("at")?,
    })
}

pub(crate) fn node_status(row: &impl RowExt) -> Result<NodeStatus, Error> {
    Ok(NodeStatus {
        name: row.text("name")?,
        started_at: row.ts("started_at")?,
        heartbeat_at: row.ts("heartbeat_at")?,
        heartbeat_interval: std::time::Duration::from_millis(unsigned(
            row.int("heartbeat_ms")?,
            "cluster_nodes.heartbeat_ms",
        )?),
        sessions: unsigned(row.int("sessions")?, "cluster_nodes.sessions")?,
        applied_seq: unsigned(row.int("applied_seq")?, "cluster_nodes.applied_seq")?,
        nats_ok: row.boolean("nats_ok")?,
        mqtt: row.text("mqtt")?,
        api: row.text("api")?,
    })
}

/// A count or seq as the BIGINT column stores it.
pub(crate) fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Implements [`ClusterStore`] for `$store`.
macro_rules! impl_cluster_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::cluster::ClusterStore for $store {
            async fn append_events(
                &self,
                node: &str,
                events: &[String],
                at: OffsetDateTime,
            ) -> Result<u64, Error> {
                use $crate::cluster::signed;
                if events.is_empty() {
                    return self.last_event_seq().await.map(|s| s + 1);
                }
                let (node, events) = (node.to_string(), events.to_vec());
                write_op!(self, Tx::Needed, |conn| async {
                    let n = signed(events.len() as u64);
                    // The head row's lock is held to the commit: appends are serialised.
                    let last: i64 = sqlx::query_scalar(cluster::sql::BUMP_HEAD)
                        .bind(n)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    let first = last - n + 1;
                    for (i, e) in events.iter().enumerate() {
                        sqlx::query(cluster::sql::INSERT_EVENT)
                            .bind(first + i as i64)
                            .bind(&node)
                            .bind(e)
                            .bind(micros(at))
                            .execute(&mut *conn)
                            .await
                            .map_err(Error::Database)?;
                    }
                    u64::try_from(first).map_err(|_| Error::Corrupt("cluster_log_head.seq"))
                })
            }

            async fn events_after(
                &self,
                seq: u64,
                limit: u32,
            ) -> Result<Vec<$crate::cluster::LoggedEvent>, Error> {
                sqlx::query(cluster::sql::EVENTS_AFTER)
                    .bind($crate::cluster::signed(seq))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(cluster::logged_event)
                    .collect()
            }

            async fn last_event_seq(&self) -> Result<u64, Error> {
                let seq: i64 = sqlx::query_scalar(cluster::sql::HEAD)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(Error::Database)?;
                u64::try_from(seq).map_err(|_| Error::Corrupt("cluster_log_head.seq"))
            }

            async fn prune_events(&self, before: OffsetDateTime) -> Result<u64, Error> {
                write_op!(self, Tx::NotNeeded, |conn| async {
                    sqlx::query(cluster::sql::PRUNE)
                        .bind(micros(before))
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)
                        .map(|r| r.rows_affected())
                })
            }

            async fn record_node(&self, s: &$crate::cluster::NodeStatus) -> Result<(), Error> {
                use $crate::cluster::signed;
                let s = s.clone();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    sqlx::query(cluster::sql::RECORD_NODE)
                        .bind(&s.name)
                        .bind(micros(s.started_at))
                        .bind(micros(s.heartbeat_at))
                        .bind(signed(s.heartbeat_interval.as_millis() as u64))
                        .bind(signed(s.sessions))
                        .bind(signed(s.applied_seq))
                        .bind(s.nats_ok)
                        .bind(&s.mqtt)
                        .bind(&s.api)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)
                        .map(drop)
                })
            }

            async fn nodes(&self) -> Result<Vec<$crate::cluster::NodeStatus>, Error> {
                sqlx::query(cluster::sql::NODES)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(cluster::node_status)
                    .collect()
            }

            async fn forget_node(&self, name: &str) -> Result<(), Error> {
                let name = name.to_string();
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let done = sqlx::query(cluster::sql::FORGET_NODE)
                        .bind(&name)
                        .execute(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    if done.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("cluster node {name}")));
                    }
                    Ok(())
                })
            }

            async fn claim_client(
                &self,
                client_id: &str,
                node: &str,
            ) -> Result<$crate::cluster::ClientClaim, Error> {
                let (client_id, node) = (client_id.to_string(), node.to_string());
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let row = sqlx::query(cluster::sql::CLAIM_CLIENT)
                        .bind(&client_id)
                        .bind(&node)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    Ok($crate::cluster::ClientClaim {
                        epoch: u64::try_from(row.int("epoch")?)
                            .map_err(|_| Error::Corrupt("mqtt_client_claims.epoch"))?,
                        previous: row.opt_text("prev_node")?,
                    })
                })
            }

            async fn claimed_mqtt_sessions(
                &self,
                node: &str,
            ) -> Result<Vec<(String, Vec<u8>)>, Error> {
                sqlx::query(cluster::sql::CLAIMED_SESSIONS)
                    .bind(node)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| Ok((r.text("client_id")?, r.bytes("value")?)))
                    .collect()
            }

            async fn acquire_lease(
                &self,
                name: &str,
                holder: &str,
                now: OffsetDateTime,
                until: OffsetDateTime,
            ) -> Result<bool, Error> {
                let (name, holder) = (name.to_string(), holder.to_string());
                write_op!(self, Tx::NotNeeded, |conn| async {
                    let got = sqlx::query(cluster::sql::ACQUIRE_LEASE)
                        .bind(&name)
                        .bind(&holder)
                        .bind(micros(until))
                        .bind(micros(now))
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(Error::Database)?;
                    Ok(got.is_some())
                })
            }

            async fn lease(&self, name: &str) -> Result<Option<(String, OffsetDateTime)>, Error> {
                sqlx::query(cluster::sql::LEASE)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .map(|r| Ok((r.text("holder")?, r.ts("expires_at")?)))
                    .transpose()
            }

            async fn mqtt_session(
                &self,
                client_id: &str,
            ) -> Result<Option<(Vec<u8>, Vec<$crate::MqttQueued>)>, Error> {
                let Some(row) = sqlx::query(cluster::sql::SESSION)
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(Error::Database)?
                else {
                    return Ok(None);
                };
                let queue = sqlx::query(cluster::sql::SESSION_QUEUE)
                    .bind(client_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(Error::Database)?
                    .iter()
                    .map(|r| codec::mqtt_queued(r))
                    .collect::<Result<Vec<_>, Error>>()?;
                Ok(Some((row.bytes("value")?, queue)))
            }
        }
    };
}

pub(crate) use impl_cluster_store;
