//! Failed-authentication limiting, keyed by address or claimed identity: after `max`
//! failures within `window`, further attempts are refused until the window passes. Used by
//! the admin API and the MQTT hub alike.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts failures per key in a fixed window.
#[derive(Debug)]
pub struct FailureLimiter<K> {
    max: u32,
    window: Duration,
    /// Keys tracked at most; the expired windows are swept when it is reached, so an
    /// attacker cycling keys cannot grow memory without bound.
    capacity: usize,
    failures: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    /// Allows `max` failures per key per `window`.
    pub fn new(max: u32, window: Duration, capacity: usize) -> Self {
        FailureLimiter {
            max,
            window,
            capacity,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` has used up its failures in the current window.
    pub fn is_limited(&self, key: &K) -> bool {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .is_some_and(|(n, since)| *n >= self.max && since.elapsed() < self.window)
    }

    /// Counts one failure for `key`.
    pub fn record_failure(&self, key: &K) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity && !map.contains_key(key) {
            map.retain(|_, (_, since)| since.elapsed() < self.window);
            if map.len() >= self.capacity {
                // Still full of live windows: forget the oldest one rather than grow.
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(key.clone()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets `key`'s failures (after a success).
    pub fn clear(&self, key: &K) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_after_max_failures_and_stays_bounded() {
        let l = FailureLimiter::new(3, Duration::from_secs(60), 2);
        for _ in 0..3 {
            assert!(!l.is_limited(&"a"));
            l.record_failure(&"a");
        }
        assert!(l.is_limited(&"a"));
        l.clear(&"a");
        assert!(!l.is_limited(&"a"));
        for k in ["x", "y", "z"] {
            l.record_failure(&k);
        }
        assert!(l.failures.lock().expect("lock").len() <= 2);
    }
}
