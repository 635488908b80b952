//! [`Store::write_mqtt`](crate::Store::write_mqtt) with few statements: a batch of broker
//! changes (thousands under load, one transaction) is applied kind by kind with multi-row
//! statements instead of one statement per change — on SQLite each statement is a round trip
//! to the connection's thread, which would cost more than the commit.
//!
//! Applying by kind reorders changes, so a batch is cut into rounds within which the order
//! of kinds (session deletions, session rows, queued messages, sends, releases,
//! acknowledgements, drops, retained messages) gives the same result as the batch's order:
//! a change that would overtake one already in the round — a session deleted after the round
//! touched it, a packet id sent again after the round acknowledged or released it — starts
//! the next round. A session row or retained message written twice in a round keeps its
//! last value. Under load a batch is one round: a packet id comes back only after 65,535
//! others.

use crate::MqttWrite;
use crate::codec::micros;
use std::collections::{HashMap, HashSet};

/// Rows per statement (the widest, a session row, binds 3 values per row).
pub(crate) const CHUNK: usize = 300;

/// One round of a batch, grouped by kind.
#[derive(Debug, Default)]
pub(crate) struct Round<'a> {
    pub removed: Vec<&'a str>,
    pub sessions: Vec<(&'a str, &'a [u8], Option<i64>)>,
    session_at: HashMap<&'a str, usize>,
    pub queued: Vec<(&'a str, i64, &'a [u8])>,
    pub sent: Vec<(&'a str, i64, i64)>,
    pub released: Vec<(&'a str, i64)>,
    pub acknowledged: Vec<(&'a str, i64)>,
    pub dropped: Vec<(&'a str, i64)>,
    pub retained: Vec<(&'a str, Option<&'a [u8]>)>,
    retained_at: HashMap<&'a str, usize>,
    touched: HashSet<&'a str>,
    pids: HashSet<(&'a str, u16)>,
}

/// A sequence number or packet id as the registry stores it (BIGINT / INTEGER).
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Cuts `writes` into rounds (see the module documentation).
pub(crate) fn rounds(writes: &[MqttWrite]) -> Vec<Round<'_>> {
    let mut out = Vec::new();
    let mut r = Round::default();
    for w in writes {
        let conflict = match w {
            MqttWrite::DeleteSession { client_id } => r.touched.contains(client_id.as_str()),
            MqttWrite::Sent {
                client_id,
                packet_id,
                ..
            } => r.pids.contains(&(client_id.as_str(), *packet_id)),
            _ => false,
        };
        if conflict {
            out.push(std::mem::take(&mut r));
        }
        match w {
            MqttWrite::PutRetained { topic, value } => r.retain(topic, Some(value)),
            MqttWrite::DeleteRetained { topic } => r.retain(topic, None),
            MqttWrite::PutSession {
                client_id,
                value,
                expires_at,
            } => {
                let row = (client_id.as_str(), value.as_slice(), expires_at.map(micros));
                match r.session_at.get(client_id.as_str()) {
                    Some(&i) => r.sessions[i] = row,
                    None => {
                        r.session_at.insert(client_id, r.sessions.len());
                        r.sessions.push(row);
                    }
                }
                r.touched.insert(client_id);
            }
            MqttWrite::DeleteSession { client_id } => {
                r.removed.push(client_id);
                r.touched.insert(client_id);
            }
            MqttWrite::Enqueue {
                client_id,
                seq,
                value,
            } => {
                r.queued.push((client_id, int(*seq), value));
                r.touched.insert(client_id);
            }
            MqttWrite::Sent {
                client_id,
                seq,
                packet_id,
            } => {
                r.sent.push((client_id, int(*seq), i64::from(*packet_id)));
                r.pids.insert((client_id, *packet_id));
                r.touched.insert(client_id);
            }
            MqttWrite::Released {
                client_id,
                packet_id,
            } => {
                r.released.push((client_id, i64::from(*packet_id)));
                r.pids.insert((client_id, *packet_id));
                r.touched.insert(client_id);
            }
            MqttWrite::Acknowledged {
                client_id,
                packet_id,
            } => {
                r.acknowledged.push((client_id, i64::from(*packet_id)));
                r.pids.insert((client_id, *packet_id));
                r.touched.insert(client_id);
            }
            MqttWrite::Finished { client_id, seq } => {
                r.dropped.push((client_id, int(*seq)));
                r.touched.insert(client_id);
            }
        }
    }
    out.push(r);
    out
}

impl<'a> Round<'a> {
    fn retain(&mut self, topic: &'a str, value: Option<&'a Vec<u8>>) {
        let row = (topic, value.map(Vec::as_slice));
        match self.retained_at.get(topic) {
            Some(&i) => self.retained[i] = row,
            None => {
                self.retained_at.insert(topic, self.retained.len());
                self.retained.push(row);
            }
        }
    }
}

/// `($1, $2), ($3, $4)…`: `rows` tuples of `width` numbered parameters.
pub(crate) fn tuples(rows: usize, width: usize) -> String {
    let mut s = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(r * width + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

/// `$1, $2…`: `n` numbered parameters.
pub(crate) fn list(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statements, for `n` rows; each binds its rows' values in tuple order. Row-value
/// `IN` lists, so both back ends look each row up by its index.
pub(crate) mod sql {
    use super::{list, tuples};

    pub(crate) fn delete_queues(n: usize) -> String {
        format!("DELETE FROM mqtt_queue WHERE client_id IN ({})", list(n))
    }
    pub(crate) fn delete_sessions(n: usize) -> String {
        format!("DELETE FROM mqtt_sessions WHERE client_id IN ({})", list(n))
    }
    pub(crate) fn put_sessions(n: usize) -> String {
        format!(
            "INSERT INTO mqtt_sessions (client_id, value, expires_at) VALUES {} \
             ON CONFLICT (client_id) DO UPDATE SET value = excluded.value, \
             expires_at = excluded.expires_at",
            tuples(n, 3)
        )
    }
    pub(crate) fn enqueue(n: usize) -> String {
        format!(
            "INSERT INTO mqtt_queue (client_id, seq, value) VALUES {}",
            tuples(n, 3)
        )
    }
    /// Binds (client id, seq, packet id) per row.
    pub(crate) fn sent(n: usize) -> String {
        format!(
            "WITH v (c, s, p) AS (VALUES {}) UPDATE mqtt_queue SET packet_id = \
             (SELECT p FROM v WHERE c = mqtt_queue.client_id AND s = mqtt_queue.seq) \
             WHERE (client_id, seq) IN (SELECT c, s FROM v)",
            tuples(n, 3)
        )
    }
    pub(crate) fn released(n: usize) -> String {
        format!(
            "UPDATE mqtt_queue SET released = TRUE WHERE (client_id, packet_id) IN (VALUES {})",
            tuples(n, 2)
        )
    }
    pub(crate) fn acknowledged(n: usize) -> String {
        format!(
            "DELETE FROM mqtt_queue WHERE (client_id, packet_id) IN (VALUES {})",
            tuples(n, 2)
        )
    }
    pub(crate) fn dropped(n: usize) -> String {
        format!(
            "DELETE FROM mqtt_queue WHERE (client_id, seq) IN (VALUES {})",
            tuples(n, 2)
        )
    }
    pub(crate) fn put_retained(n: usize) -> String {
        format!(
            "INSERT INTO mqtt_retained (topic, value) VALUES {} \
             ON CONFLICT (topic) DO UPDATE SET value = excluded.value",
            tuples(n, 2)
        )
    }
    pub(crate) fn delete_retained(n: usize) -> String {
        format!("DELETE FROM mqtt_retained WHERE topic IN ({})", list(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(pid: u16, seq: u64) -> MqttWrite {
        MqttWrite::Sent {
            client_id: "c".into(),
            seq,
            packet_id: pid,
        }
    }

    #[test]
    fn a_reused_packet_id_or_a_late_deletion_starts_a_round() {
        let ack = |pid| MqttWrite::Acknowledged {
            client_id: "c".into(),
            packet_id: pid,
        };
        let del = MqttWrite::DeleteSession {
            client_id: "c".into(),
        };
        let w = vec![
            del.clone(),
            sent(1, 0),
            ack(1),
            sent(2, 1),
            sent(1, 2),
            del,
            sent(1, 3),
        ];
        let r = rounds(&w);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].removed.len(), r[0].sent.len(), r[0].acknowledged.len()),
            (1, 2, 1)
        );
        assert_eq!((r[1].sent.len(), r[1].removed.len()), (1, 0));
        assert_eq!((r[2].removed.len(), r[2].sent.len()), (1, 1));
    }

    #[test]
    fn the_last_value_of_a_session_or_retained_topic_wins_within_a_round() {
        let put = |v: u8| MqttWrite::PutSession {
            client_id: "c".into(),
            value: vec![v],
            expires_at: None,
        };
        let ret = |v: Option<u8>| match v {
            Some(v) => MqttWrite::PutRetained {
                topic: "t".into(),
                value: vec![v],
            },
            None => MqttWrite::DeleteRetained { topic: "t".into() },
        };
        let w = vec![put(1), ret(Some(1)), put(2), ret(None), ret(Some(3))];
        let r = rounds(&w);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].sessions, [("c", &[2u8][..], None)]);
        assert_eq!(r[0].retained, [("t", Some(&[3u8][..]))]);
    }

    #[test]
    fn parameters_are_numbered_in_order() {
        assert_eq!(tuples(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(list(3), "$1, $2, $3");
    }
}
