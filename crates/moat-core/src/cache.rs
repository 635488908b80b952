//! Registry data that changes rarely but is read on every MQTT CONNECT (the client CAs, the
//! ACL policies), kept in memory for a short time.
//!
//! This node's own changes invalidate at once (the `Hub` method that writes also calls
//! [`Cached::invalidate`]); a change made through another node sharing the registry shows
//! within [`TTL`]. A load that raced with an invalidation is not kept, so an invalidation is
//! never undone by an older read.

use crate::Error;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How long a cached value is used before it is read again.
pub(crate) const TTL: Duration = Duration::from_secs(5);

/// One cached value.
#[derive(Debug)]
pub(crate) struct Cached<T> {
    slot: RwLock<Option<(Instant, Arc<T>)>>,
    /// Bumped by every invalidation.
    generation: AtomicU64,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached {
            slot: RwLock::new(None),
            generation: AtomicU64::new(0),
        }
    }
}

impl<T> Cached<T> {
    /// The cached value if fresh, else `load`'s (kept unless invalidated meanwhile).
    pub(crate) async fn get_or_load<F, Fut>(&self, load: F) -> Result<Arc<T>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        if let Some((at, v)) = self
            .slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            && at.elapsed() < TTL
        {
            return Ok(v.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let value = Arc::new(load().await?);
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) == generation {
            *slot = Some((Instant::now(), value.clone()));
        }
        Ok(value)
    }

    /// Drops the cached value: the next read goes to the registry.
    pub(crate) fn invalidate(&self) {
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        *slot = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caches_until_invalidated_and_never_keeps_a_raced_load() {
        let c: Cached<u32> = Cached::default();
        assert_eq!(*c.get_or_load(|| async { Ok(1) }).await.expect("load"), 1);
        assert_eq!(
            *c.get_or_load(|| async { Ok(2) }).await.expect("load"),
            1,
            "cached"
        );
        c.invalidate();
        assert_eq!(*c.get_or_load(|| async { Ok(3) }).await.expect("load"), 3);
        // A load that started before an invalidation returns its value but is not kept.
        c.invalidate();
        let v = c
            .get_or_load(|| async {
                c.invalidate();
                Ok(4)
            })
            .await
            .expect("load");
        assert_eq!(*v, 4);
        assert_eq!(*c.get_or_load(|| async { Ok(5) }).await.expect("load"), 5);
        let e = c.get_or_load(|| async { Err(Error::Internal("x".into())) });
        c.invalidate();
        assert!(e.await.is_err(), "errors are returned, not cached");
    }
}
