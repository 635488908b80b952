//! A log-linear latency histogram (HDR-style): 64 linear sub-buckets per power of two, so a
//! reported percentile is within 1/64 (≈1.6 %) of the true value, in a fixed 30 KiB.

/// Sub-buckets per power of two (as a shift).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are counted exactly.
const LINEAR: u64 = 2 * SUB;
/// Exponents 7..=63 above the linear range.
const BUCKETS: usize = (LINEAR + (63 - 7 + 1) * SUB) as usize;

/// Counts of values (nanoseconds, by convention) in log-linear buckets.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // ≥ 7
    let shift = e - SUB_BITS;
    let sub = (v >> shift) - SUB; // 0..SUB
    (LINEAR + u64::from(e - 7) * SUB + sub) as usize
}

/// Lowest and highest value that land in bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < LINEAR {
        return (i, i);
    }
    let e = (i - LINEAR) / SUB + 7;
    let sub = (i - LINEAR) % SUB + SUB;
    let shift = e - u64::from(SUB_BITS);
    let lo = sub << shift;
    (lo, lo + ((1u64 << shift) - 1))
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest value, if any.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Smallest value, if any.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// Arithmetic mean, if any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0.0..=1.0) by the nearest-rank method: the smallest value
    /// such that at least `q` of all values are at or below it. Reported as the middle of its
    /// bucket, clamped to the observed minimum and maximum.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(i);
                let mid = lo + (hi - lo) / 2;
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_once_and_in_order() {
        let mut prev_hi = None;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds(i);
            assert!(lo <= hi);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "gap before bucket {i}");
            }
            assert_eq!(index(lo), i);
            assert_eq!(index(hi), i);
            prev_hi = Some(hi);
        }
        assert_eq!(prev_hi, Some(u64::MAX));
    }

    #[test]
    fn percentiles_of_a_uniform_range_are_within_bucket_error() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000); // 1 µs .. 100 ms in ns
        }
        for (q, want) in [
            (0.5, 50_000_000.0),
            (0.99, 99_000_000.0),
            (0.999, 99_900_000.0),
        ] {
            let got = h.quantile(q).map(|v| v as f64).unwrap_or(0.0);
            let err = (got - want).abs() / want;
            assert!(err < 1.0 / 64.0, "q={q}: got {got}, want {want}");
        }
        assert_eq!(h.quantile(1.0), Some(100_000_000));
        // The lowest rank lands in the bucket of 1000 ns, reported as its middle.
        let low = h.quantile(0.0).unwrap_or(0);
        assert!((1000..1000 + 1000 / 64).contains(&low), "q=0: {low}");
        assert_eq!(h.count(), 100_000);
    }

    #[test]
    fn small_values_are_exact_and_nearest_rank_is_used() {
        let mut h = Histogram::new();
        for v in [5u64, 1, 3, 2, 4] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(3));
        assert_eq!(h.quantile(0.2), Some(1));
        assert_eq!(h.quantile(0.21), Some(2));
        assert_eq!(h.quantile(0.99), Some(5));
        assert_eq!(h.mean(), Some(3.0));
    }

    #[test]
    fn empty_has_no_percentiles_and_merge_adds() {
        let mut a = Histogram::new();
        assert_eq!(a.quantile(0.5), None);
        assert_eq!(a.max(), None);
        let mut b = Histogram::new();
        b.record(10);
        b.record(1_000_000);
        a.merge(&b);
        a.merge(&Histogram::new());
        assert_eq!(a.count(), 2);
        assert_eq!(a.min(), Some(10));
        assert_eq!(a.max(), Some(1_000_000));
        assert_eq!(a.quantile(0.5), Some(10));
    }
}
