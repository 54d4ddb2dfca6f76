//! Cache metrics: hits and misses per layer, Redis errors, fallbacks,
//! evictions and get/set latency histograms. Plain atomics, kept by the layers themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the latency buckets, in microseconds (the last bucket is unbounded).
pub const BUCKETS_US: [u64; 16] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of a histogram, for stats.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in µs; `counts` has one more entry, for slower calls.
    pub le_us: Vec<u64>,
    /// Calls per bucket: `counts[i]` took at most `le_us[i]` µs (and more than the bound before
    /// it); the last entry counts the calls slower than every bound.
    pub counts: Vec<u64>,
    /// Calls recorded: the sum of `counts`.
    pub count: u64,
    /// Total time of those calls, in microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// The upper bound of the bucket holding quantile `q` (0..=1), in µs; `None` when empty or
    /// beyond the last bound.
    #[cfg(test)]
    fn quantile_le_us(&self, q: f64) -> Option<u64> {
        let rank = (self.count as f64 * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return self.le_us.get(i).copied();
            }
        }
        None
    }
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let us = elapsed.as_micros() as u64;
        let bucket = BUCKETS_US.iter().position(|&le| us <= le).unwrap_or(BUCKETS_US.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        HistogramSnapshot {
            le_us: BUCKETS_US.to_vec(),
            count: counts.iter().sum(),
            counts,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The counters of one cache.
#[derive(Default)]
pub struct CacheMetrics {
    /// Reads answered by any layer, and by none.
    pub hits: AtomicU64,
    /// Reads answered by no layer.
    pub misses: AtomicU64,
    /// Reads the memory layer answered.
    pub l1_hits: AtomicU64,
    /// Reads the memory layer could not answer.
    pub l1_misses: AtomicU64,
    /// Reads Redis answered.
    pub redis_hits: AtomicU64,
    /// Reads that found nothing in Redis.
    pub redis_misses: AtomicU64,
    /// Calls that could not use Redis and were served from memory instead.
    pub fallbacks: AtomicU64,
    /// Entries pushed out of memory by the size bound.
    pub evictions: AtomicU64,
    /// Values found in Redis that could not be decoded (read as misses).
    pub corrupt: AtomicU64,
    /// Warming passes run (one at start when there are keys to warm), and the entries they
    /// loaded into memory.
    pub warmings: AtomicU64,
    /// Entries the warming passes loaded into memory.
    pub warmed: AtomicU64,
    /// Latency of reads.
    pub get_latency: Histogram,
    /// Latency of writes.
    pub set_latency: Histogram,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_call_in_its_bucket() {
        let h = Histogram::default();
        h.record(Duration::from_nanos(500));
        h.record(Duration::from_micros(7));
        h.record(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[3], 1, "7 µs falls in the ≤10 µs bucket");
        assert_eq!(s.counts[BUCKETS_US.len()], 1, "3 s is beyond the last bound");
        assert_eq!(s.quantile_le_us(0.5), Some(10));
        assert_eq!(s.quantile_le_us(1.0), None);
        assert_eq!(Histogram::default().snapshot().quantile_le_us(0.5), None, "empty");
    }
}
