//! At-least-once delivery of OTA reports: a report is published at QoS 1 and stays in the
//! outbox until the hub's PUBACK for its packet id. After a reconnect, everything still in
//! the outbox is published again, oldest first, with the same packet id and the DUP flag
//! (MQTT 3.1.1 §4.4, 5.0 §4.4). The hub applies reports idempotently (a device's state in a
//! campaign only moves forward, inventory is replaced), so a duplicate changes nothing.

use bytes::{Bytes, BytesMut};
use moat_mqtt::{self as codec, Packet, Properties, Publish, Version};
use std::collections::VecDeque;

/// Reports waiting for their PUBACK.
#[derive(Debug)]
pub struct ReportOutbox {
    topic: String,
    last_pid: u16,
    /// (packet id, payload), oldest first.
    pending: VecDeque<(u16, Bytes)>,
    /// Most reports kept; past it the oldest is dropped (a later report of the same update
    /// supersedes it on the hub anyway).
    cap: usize,
}

impl ReportOutbox {
    /// An empty outbox for reports on `topic`, holding at most `cap` (at least 1).
    pub fn new(topic: impl Into<String>, cap: usize) -> Self {
        ReportOutbox {
            topic: topic.into(),
            last_pid: 0,
            pending: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Keeps `payload` until acknowledged and appends its first PUBLISH to `out`. Returns
    /// its packet id (never 0, never one still waiting).
    pub fn push(&mut self, out: &mut BytesMut, v: Version, payload: Bytes) -> u16 {
        if self.pending.len() >= self.cap
            && let Some((pid, _)) = self.pending.pop_front()
        {
            tracing::warn!(pid, "report outbox full; dropping the oldest report");
        }
        let mut pid = self.last_pid;
        loop {
            pid = pid.wrapping_add(1).max(1);
            if !self.pending.iter().any(|(p, _)| *p == pid) {
                break;
            }
        }
        self.last_pid = pid;
        self.encode(out, v, pid, payload.clone(), false);
        self.pending.push_back((pid, payload));
        pid
    }

    /// The hub acknowledged `pid`: forget it. False if it was not waiting.
    pub fn ack(&mut self, pid: u16) -> bool {
        match self.pending.iter().position(|(p, _)| *p == pid) {
            Some(i) => {
                self.pending.remove(i);
                true
            }
            None => false,
        }
    }

    /// After a reconnect: appends every waiting report to `out` again (DUP set), oldest
    /// first. Returns how many.
    pub fn resend(&self, out: &mut BytesMut, v: Version) -> usize {
        for (pid, payload) in &self.pending {
            self.encode(out, v, *pid, payload.clone(), true);
        }
        self.pending.len()
    }

    /// Whether every report was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    fn encode(&self, out: &mut BytesMut, v: Version, pid: u16, payload: Bytes, dup: bool) {
        let p = Publish {
            dup,
            qos: 1,
            retain: false,
            topic: self.topic.clone(),
            pid,
            properties: Properties::default(),
            payload,
        };
        codec::encode(&Packet::Publish(p), v, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(buf: BytesMut) -> Vec<Publish> {
        let mut out = Vec::new();
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let Ok(codec::Framed::Header(f)) = codec::frame(rest, usize::MAX) else {
                panic!("not a whole packet");
            };
            match codec::decode(&rest[..f.total()], Some(Version::V311)) {
                Ok(Packet::Publish(p)) => out.push(p),
                other => panic!("not a publish: {other:?}"),
            }
            rest = &rest[f.total()..];
        }
        out
    }

    #[test]
    fn reports_wait_for_their_puback_and_are_resent_with_dup() {
        let v = Version::V311;
        let mut ob = ReportOutbox::new("devices/d/ota/report", 8);
        let mut out = BytesMut::new();
        let a = ob.push(&mut out, v, Bytes::from_static(b"downloading"));
        let b = ob.push(&mut out, v, Bytes::from_static(b"installed"));
        let c = ob.push(&mut out, v, Bytes::from_static(b"confirmed"));
        let first = decode(out);
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|p| p.qos == 1 && !p.dup));
        assert!(ob.ack(a));
        assert!(!ob.ack(a), "acknowledged once");
        // The connection dropped before b and c were acknowledged.
        let mut out = BytesMut::new();
        assert_eq!(ob.resend(&mut out, v), 2);
        let again = decode(out);
        assert_eq!(
            again
                .iter()
                .map(|p| (p.pid, p.payload.clone(), p.dup))
                .collect::<Vec<_>>(),
            vec![
                (b, Bytes::from_static(b"installed"), true),
                (c, Bytes::from_static(b"confirmed"), true)
            ],
            "oldest first, same packet ids, DUP set"
        );
        assert!(ob.ack(c) && ob.ack(b) && ob.is_empty());
    }

    #[test]
    fn packet_ids_skip_zero_and_those_in_flight_and_the_outbox_is_bounded() {
        let v = Version::V311;
        let mut ob = ReportOutbox::new("t", 2);
        ob.last_pid = u16::MAX - 1;
        let mut out = BytesMut::new();
        let a = ob.push(&mut out, v, Bytes::from_static(b"1"));
        let b = ob.push(&mut out, v, Bytes::from_static(b"2"));
        assert_eq!((a, b), (u16::MAX, 1));
        let c = ob.push(&mut out, v, Bytes::from_static(b"3"));
        assert_eq!(ob.len(), 2, "the oldest was dropped");
        assert!(!ob.ack(a) && ob.ack(b) && ob.ack(c));
        // Wrapping onto an id still waiting skips it.
        let mut ob = ReportOutbox::new("t", 4);
        let first = ob.push(&mut out, v, Bytes::new());
        ob.last_pid = first - 1;
        assert_ne!(ob.push(&mut out, v, Bytes::new()), first);
    }
}
