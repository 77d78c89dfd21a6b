//! A fixed log-linear histogram of latencies: recording is a few atomic adds, never an
//! allocation or a lock, so the reply path can record every stall.
//!
//! Values are microseconds. Below [`EXACT_US`] each value has its own bucket; above, every
//! power of two is cut into [`SUB_BUCKETS`] equal buckets (HdrHistogram's layout), so a bucket
//! is at most 1/64 of its lower bound wide and a percentile, reported as its bucket's middle,
//! is within 0.8% of the true value. The maximum and the total are kept exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Values below this many µs are counted exactly (it must be `2 * SUB_BUCKETS`, where the
/// log-linear part begins).
const EXACT_US: u64 = 2 * SUB_BUCKETS as u64;
/// Buckets per power of two above [`EXACT_US`]: 64 keeps the relative error under 1%.
const SUB_BUCKETS: usize = 64;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// The first power of two of the log-linear part (2^7 = [`EXACT_US`]).
const FIRST_EXP: u32 = SUB_BITS + 1;
/// The last power of two with buckets of its own: 2^40 µs is 12.7 days; longer stalls share
/// the last bucket (the maximum still records them exactly).
const LAST_EXP: u32 = 40;
const BUCKETS: usize = EXACT_US as usize + (LAST_EXP - FIRST_EXP + 1) as usize * SUB_BUCKETS;

/// See the module doc.
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    total_us: AtomicU64,
    max_us: AtomicU64,
}

/// The upper bounds, in µs, of the coarse buckets a summary carries for exporters
/// (Prometheus): the powers of two from 2^10 µs (about 1 ms) to 2^25 µs (about 34 s). Each is
/// where a power of two of the log-linear layout begins, so its count is exact, not
/// interpolated: a coarse bucket is a run of whole fine buckets. Stalls shorter than a
/// millisecond are cache-speed answers; longer than half a minute, the read timeout's domain.
pub const COARSE_BOUNDS_US: [u64; 16] = {
    let mut b = [0u64; 16];
    let mut i = 0;
    while i < b.len() {
        b[i] = 1 << (10 + i);
        i += 1;
    }
    b
};

/// A histogram's summary, as status and reports show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Values below each of [`COARSE_BOUNDS_US`] (cumulative, so never decreasing, and at
    /// most `count`), counted in the same pass as `count`.
    pub below: [u64; COARSE_BOUNDS_US.len()],
    /// Their sum.
    pub total: Duration,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest value.
    pub max: Duration,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < EXACT_US {
        return us as usize;
    }
    let exp = us.ilog2();
    if exp > LAST_EXP {
        return BUCKETS - 1;
    }
    let sub = (us >> (exp - SUB_BITS)) as usize & (SUB_BUCKETS - 1);
    EXACT_US as usize + (exp - FIRST_EXP) as usize * SUB_BUCKETS + sub
}

/// The middle of bucket `index`, in µs.
fn middle_of(index: usize) -> u64 {
    if index < EXACT_US as usize {
        return index as u64;
    }
    let k = index - EXACT_US as usize;
    let exp = (k / SUB_BUCKETS) as u32 + FIRST_EXP;
    let width = 1u64 << (exp - SUB_BITS);
    let low = (SUB_BUCKETS + k % SUB_BUCKETS) as u64 * width;
    low + width / 2
}

impl LatencyHistogram {
    /// An empty histogram (allocates its fixed buckets once, about 18 KiB).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one value.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The nearest-rank `q` quantile (`0 < q <= 1`), within 0.8% (exact below 128 µs); zero
    /// when empty. Never above the maximum.
    pub fn quantile(&self, q: f64) -> Duration {
        let counts = || self.buckets.iter().map(|b| b.load(Ordering::Relaxed));
        let n: u64 = counts().sum();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        let index = counts()
            .position(|c| {
                seen += c;
                seen >= rank
            })
            .unwrap_or(BUCKETS - 1);
        Duration::from_micros(middle_of(index).min(self.max_us.load(Ordering::Relaxed)))
    }

    /// Count, coarse buckets, total, p50, p99 and maximum.
    pub fn summary(&self) -> LatencySummary {
        let mut below = [0u64; COARSE_BOUNDS_US.len()];
        let mut count = 0u64;
        let mut next = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            // Fine bucket `i` holds values of at least `i`'s lower bound; a coarse bound is
            // the lower bound of the first fine bucket past it.
            while next < below.len() && i == bucket_of(COARSE_BOUNDS_US[next]) {
                below[next] = count;
                next += 1;
            }
            count += b.load(Ordering::Relaxed);
        }
        below[next..].fill(count);
        LatencySummary {
            count,
            below,
            total: Duration::from_micros(self.total_us.load(Ordering::Relaxed)),
            p50: self.quantile(0.5),
            p99: self.quantile(0.99),
            max: Duration::from_micros(self.max_us.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_in_order() {
        let mut last = 0;
        for us in (0..1 << 20).step_by(7).chain([u64::MAX / 2, u64::MAX]) {
            let b = bucket_of(us);
            assert!(b >= last && b < BUCKETS, "{us}");
            last = b;
            if us < 1 << LAST_EXP {
                let m = middle_of(b);
                assert!(
                    m.abs_diff(us) as f64 <= us as f64 / 128.0 + 0.5,
                    "{us} -> {m}"
                );
            }
        }
    }

    /// Percentiles against a sorted reference, over stalls from 10 µs to 10 s.
    #[test]
    fn percentiles_match_a_sorted_reference() {
        let h = LatencyHistogram::new();
        let mut values = Vec::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            // xorshift, then a log-uniform value: latencies spread over decades.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let us = (10.0 * 1e6f64.powf((x >> 11) as f64 / (1u64 << 53) as f64)) as u64;
            values.push(us);
            h.record(Duration::from_micros(us));
        }
        values.sort_unstable();
        let summary = h.summary();
        assert_eq!(summary.count, values.len() as u64);
        assert_eq!(summary.max, Duration::from_micros(*values.last().unwrap()));
        assert_eq!(
            summary.total,
            Duration::from_micros(values.iter().sum::<u64>())
        );
        for q in [0.01, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let want = values[rank - 1] as f64;
            let got = h.quantile(q).as_micros() as f64;
            assert!(
                (got - want).abs() <= want * 0.02,
                "q{q}: {got} µs, reference {want} µs"
            );
        }
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
        for (bound, below) in COARSE_BOUNDS_US.iter().zip(summary.below) {
            let want = values.iter().filter(|&&v| v < *bound).count() as u64;
            assert_eq!(below, want, "values below {bound} µs are counted exactly");
        }
    }

    #[test]
    fn coarse_buckets_cut_at_their_bounds() {
        let h = LatencyHistogram::new();
        for us in [0, 1023, 1024, 2047, 2048, 1 << 25, u64::MAX] {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 7);
        assert_eq!(s.below[0], 2, "0 and 1023 µs are below 1024");
        assert_eq!(s.below[1], 4, "1024 and 2047 µs are below 2048");
        assert_eq!(s.below[2], 5, "2048 µs is below 4096");
        assert_eq!(s.below[15], 5, "2^25 µs itself is not below 2^25");
    }
}
