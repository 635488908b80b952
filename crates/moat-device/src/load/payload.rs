//! Benchmark payloads: a send timestamp and a sequence number up front, zero padding after.
//! The timestamp is wall-clock nanoseconds since the Unix epoch, so a publisher and a
//! subscriber in different processes on one machine agree on it.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes taken by the header (timestamp + sequence number); payloads are at least this long.
pub const HEADER: usize = 16;

/// Wall-clock nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A payload of `size` bytes (at least [`HEADER`]) stamped now.
pub fn stamped(size: usize, seq: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER));
    b.put_u64(now_ns());
    b.put_u64(seq);
    b.resize(size.max(HEADER), 0);
    b.freeze()
}

/// The send timestamp of a payload made by [`stamped`], if it is long enough.
pub fn sent_at(payload: &[u8]) -> Option<u64> {
    let b: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_pads() {
        let before = now_ns();
        let p = stamped(100, 7);
        assert_eq!(p.len(), 100);
        let t = sent_at(&p).unwrap_or(0);
        assert!(t >= before && t <= now_ns());
        assert_eq!(stamped(3, 0).len(), HEADER);
        assert_eq!(sent_at(&[1, 2, 3]), None);
    }
}
