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
                // Still full of live windows: forget the oldest tenth at once rather than
                // grow. Evicting one key per new key would make a flood of fresh keys (any
                // client can claim a new MQTT identity per attempt) pay a full scan of the
                // map under this lock on every failure; this way it is one scan per
                // capacity/10 new keys.
                let evict = (self.capacity / 10).max(1);
                let mut ages: Vec<(Instant, K)> =
                    map.iter().map(|(k, (_, t))| (*t, k.clone())).collect();
                ages.select_nth_unstable_by_key(evict - 1, |(t, _)| *t);
                for (_, k) in ages.into_iter().take(evict) {
                    map.remove(&k);
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

    #[test]
    fn a_full_map_evicts_the_oldest_tenth_at_once() {
        let l = FailureLimiter::new(3, Duration::from_secs(60), 100);
        for k in 0..10u32 {
            l.record_failure(&k);
        }
        // Strictly older than the rest, whatever the clock's resolution.
        std::thread::sleep(Duration::from_millis(2));
        for k in 10..100u32 {
            l.record_failure(&k);
        }
        // Full of live windows: the next new key evicts the 10 oldest (0..10) …
        l.record_failure(&100);
        {
            let map = l.failures.lock().expect("lock");
            assert_eq!(map.len(), 91);
            assert!((0..10).all(|k| !map.contains_key(&k)));
            assert!((10..=100).all(|k| map.contains_key(&k)));
        }
        // … and the next nine fit without another eviction.
        for k in 101..110u32 {
            l.record_failure(&k);
        }
        assert_eq!(l.failures.lock().expect("lock").len(), 100);
    }
}
