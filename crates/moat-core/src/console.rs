//! What the web console reads beyond the other services: the device list (one page with its
//! total, the certificate expiry, firmware version and last-seen time of each row) and the
//! audit search; and device presence, which [`Hub::note_connected`] records.
//!
//! Presence costs the CONNECT path nothing most of the time: each hub process remembers when
//! it last recorded each device ([`PresenceThrottle`]) and writes at most once per device
//! per [`PRESENCE_INTERVAL`], so a device that reconnects within it touches no registry.
//! The registry keeps the latest time any node wrote, so "last seen" is the last accepted
//! CONNECT, late by at most the interval. Disconnections are not recorded: the broker tells
//! the hub of none.

use crate::{Error, Hub};
use moat_store::{AuditEntry, AuditFilter, DevicePage, DeviceQuery};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// A device's presence is written at most once per this, per hub process.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Longest device search text (longer than any id, serial, owner or model it could match).
pub const MAX_SEARCH_LEN: usize = 256;
/// Devices the presence throttle remembers before it forgets those older than the interval.
const PRESENCE_CAPACITY: usize = 100_000;

/// When this process last recorded each device's presence.
#[derive(Debug)]
pub(crate) struct PresenceThrottle {
    interval: Duration,
    /// Entries kept at most (plus the one being added).
    capacity: usize,
    seen: Mutex<HashMap<String, Instant>>,
}

impl Default for PresenceThrottle {
    fn default() -> Self {
        Self::new(PRESENCE_INTERVAL, PRESENCE_CAPACITY)
    }
}

impl PresenceThrottle {
    fn new(interval: Duration, capacity: usize) -> Self {
        PresenceThrottle {
            interval,
            capacity,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `device_id`'s presence should be written at `now`; if so, it counts as written
    /// (call [`PresenceThrottle::forget`] if the write fails).
    fn due(&self, device_id: &str, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = seen.get_mut(device_id) {
            if now.saturating_duration_since(*last) < self.interval {
                return false;
            }
            *last = now;
            return true;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, last| now.saturating_duration_since(*last) < self.interval);
            if seen.len() >= self.capacity / 2 {
                // Mostly devices seen within the interval: start afresh (each of them writes
                // once more) rather than sweep again at every new device.
                seen.clear();
            }
        }
        seen.insert(device_id.to_owned(), now);
        true
    }

    /// Forgets `device_id`, so that its next connection writes again.
    fn forget(&self, device_id: &str) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(device_id);
    }
}

/// `Some(s)` only for a non-empty `s`: the console sends empty fields for "any".
fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).cloned()
}

impl Hub {
    /// One page of the device list: devices matching `q` by id, skipping `offset`, at most
    /// `limit` (1..=500), with how many match in all. [`Error::Invalid`] for a search text
    /// longer than [`MAX_SEARCH_LEN`].
    pub async fn device_page(
        &self,
        q: &DeviceQuery,
        offset: u64,
        limit: u32,
    ) -> Result<DevicePage, Error> {
        if q.text.as_ref().is_some_and(|t| t.len() > MAX_SEARCH_LEN) {
            return Err(Error::Invalid(format!(
                "search text must be at most {MAX_SEARCH_LEN} bytes"
            )));
        }
        Ok(self
            .store()
            .device_page(q, offset, limit.clamp(1, 500))
            .await?)
    }

    /// Audit entries matching `f` (empty fields match anything), newest first, with id <
    /// `before` if given, at most `limit` (1..=1000).
    pub async fn audit_search(
        &self,
        f: &AuditFilter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, Error> {
        let f = AuditFilter {
            actor: non_empty(&f.actor),
            action: non_empty(&f.action),
            target: non_empty(&f.target),
            outcome: non_empty(&f.outcome),
        };
        Ok(self
            .store()
            .audit_search(&f, before, limit.clamp(1, 1000))
            .await?)
    }

    /// Records that `device_id` connected now, unless this process did within
    /// [`PRESENCE_INTERVAL`] (then nothing is written, nor read).
    pub(crate) async fn note_presence(&self, device_id: &str) -> Result<(), Error> {
        if !self.presence.due(device_id, Instant::now()) {
            return Ok(());
        }
        let written = self
            .store()
            .touch_presence(device_id, OffsetDateTime::now_utc())
            .await;
        if written.is_err() {
            self.presence.forget(device_id);
        }
        Ok(written?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_is_due_once_per_interval_per_device() {
        let t = PresenceThrottle::new(Duration::from_secs(300), 100);
        let t0 = Instant::now();
        assert!(t.due("a", t0));
        assert!(!t.due("a", t0 + Duration::from_secs(299)));
        assert!(t.due("b", t0 + Duration::from_secs(1)), "per device");
        assert!(t.due("a", t0 + Duration::from_secs(300)));
        assert!(
            !t.due("a", t0 + Duration::from_secs(599)),
            "from the last write"
        );
        t.forget("a");
        assert!(
            t.due("a", t0 + Duration::from_secs(599)),
            "a failed write is retried"
        );
    }

    #[test]
    fn presence_throttle_stays_bounded() {
        let t = PresenceThrottle::new(Duration::from_secs(300), 4);
        let t0 = Instant::now();
        let len = || t.seen.lock().map(|s| s.len()).unwrap_or(usize::MAX);
        for id in ["a", "b", "c", "d"] {
            assert!(t.due(id, t0));
        }
        // Full of old entries: they are forgotten, the recent one kept.
        assert!(t.due("e", t0 + Duration::from_secs(400)));
        assert!(t.due("f", t0 + Duration::from_secs(400)));
        assert_eq!(len(), 2);
        assert!(!t.due("e", t0 + Duration::from_secs(401)));
        // Full of recent entries: it starts afresh rather than grow.
        for id in ["g", "h"] {
            assert!(t.due(id, t0 + Duration::from_secs(401)));
        }
        assert_eq!(len(), 4);
        assert!(t.due("i", t0 + Duration::from_secs(402)));
        assert_eq!(len(), 1);
        for n in 0..100 {
            t.due(&format!("x{n}"), t0 + Duration::from_secs(403));
            assert!(len() <= 4);
        }
    }
}
