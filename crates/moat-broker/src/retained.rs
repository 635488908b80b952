//! Retained messages: the last retained PUBLISH per topic, bounded in count and size.

use crate::persistence::Message;
use crate::topic;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

/// The retained store. Changes are tracked for write-behind persistence.
#[derive(Debug, Default)]
pub(crate) struct Retained {
    map: HashMap<String, Arc<Message>>,
    dirty: HashSet<String>,
}

/// What happened to a retained PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RetainOutcome {
    /// Stored (or replaced).
    Stored,
    /// An empty payload cleared the topic.
    Cleared,
    /// Over `max_retained_messages` or `max_retained_payload`: routed but not retained.
    Refused,
}

impl Retained {
    pub(crate) fn set(
        &mut self,
        msg: Arc<Message>,
        max_count: usize,
        max_payload: usize,
    ) -> RetainOutcome {
        if msg.payload.is_empty() {
            if self.map.remove(&msg.topic).is_some() {
                self.dirty.insert(msg.topic.clone());
            }
            return RetainOutcome::Cleared;
        }
        if msg.payload.len() > max_payload
            || (self.map.len() >= max_count && !self.map.contains_key(&msg.topic))
        {
            return RetainOutcome::Refused;
        }
        self.dirty.insert(msg.topic.clone());
        self.map.insert(msg.topic.clone(), msg);
        RetainOutcome::Stored
    }

    /// `topic`'s current value is in persistence already (another node of a cluster wrote
    /// it): nothing to write for it.
    pub(crate) fn written(&mut self, topic: &str) {
        self.dirty.remove(topic);
    }

    /// Makes the store what persistence holds (`stored`), except for the topics this store
    /// changed and has not written yet (their values are newer): topics cleared elsewhere
    /// go, the others take the stored value.
    pub(crate) fn reload(&mut self, stored: Vec<Message>) {
        let dirty = &self.dirty;
        let keep: HashSet<&String> = stored.iter().map(|m| &m.topic).collect();
        self.map
            .retain(|t, _| dirty.contains(t) || keep.contains(t));
        for msg in stored {
            if !self.dirty.contains(&msg.topic) {
                self.map.insert(msg.topic.clone(), Arc::new(msg));
            }
        }
    }

    /// Unexpired retained messages whose topic `filter` matches.
    pub(crate) fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = SystemTime::now();
        self.map
            .values()
            .filter(|m| !m.expired(now) && topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    /// Number of retained topics.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Changed topics since the last call: `Some` to save, `None` to remove.
    pub(crate) fn take_dirty(&mut self) -> Vec<(String, Option<Arc<Message>>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|t| {
                let m = self.map.get(&t).cloned();
                (t, m)
            })
            .collect()
    }

    /// Drops expired messages.
    pub(crate) fn purge_expired(&mut self) {
        let now = SystemTime::now();
        let expired: Vec<String> = self
            .map
            .values()
            .filter(|m| m.expired(now))
            .map(|m| m.topic.clone())
            .collect();
        for t in expired {
            self.map.remove(&t);
            self.dirty.insert(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(payload),
            qos: 0,
            retain: true,
            properties: Default::default(),
            expires_at: None,
            publisher: None,
        })
    }

    #[test]
    fn limits_and_clearing() {
        let mut r = Retained::default();
        assert_eq!(r.set(msg("a", b"1"), 2, 4), RetainOutcome::Stored);
        assert_eq!(r.set(msg("b", b"12345"), 2, 4), RetainOutcome::Refused);
        assert_eq!(r.set(msg("b", b"1"), 2, 4), RetainOutcome::Stored);
        assert_eq!(r.set(msg("c", b"1"), 2, 4), RetainOutcome::Refused);
        assert_eq!(r.set(msg("a", b"2"), 2, 4), RetainOutcome::Stored);
        assert_eq!(r.matching("#").len(), 2);
        assert_eq!(r.set(msg("a", b""), 2, 4), RetainOutcome::Cleared);
        assert_eq!(r.matching("a").len(), 0);
        let mut d = r.take_dirty();
        d.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(d.len(), 2);
        assert!(d[0].1.is_none());
        assert!(d[1].1.is_some());
    }

    #[test]
    fn reload_takes_what_is_stored_but_keeps_unwritten_changes() {
        let mut r = Retained::default();
        r.reload(vec![
            Message::clone(&msg("gone", b"1")),
            Message::clone(&msg("old", b"1")),
        ]);
        assert_eq!(r.set(msg("mine", b"2"), 10, 10), RetainOutcome::Stored);
        r.reload(vec![
            Message::clone(&msg("old", b"3")),
            Message::clone(&msg("mine", b"stale")),
            Message::clone(&msg("new", b"4")),
        ]);
        let mut topics: Vec<(String, Vec<u8>)> = r
            .matching("#")
            .iter()
            .map(|m| (m.topic.clone(), m.payload.to_vec()))
            .collect();
        topics.sort();
        assert_eq!(
            topics,
            vec![
                ("mine".into(), b"2".to_vec()),
                ("new".into(), b"4".to_vec()),
                ("old".into(), b"3".to_vec()),
            ]
        );
    }
}
