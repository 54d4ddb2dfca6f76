//! Cache metrics: hits and misses per layer, Redis errors, fallbacks and evictions (plain
//! atomics kept by the layers themselves, read by `/v1/stats` and exported on `/metrics`), and
//! get/set latency histograms (recorded with the `metrics` crate, on `/metrics` only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The latency histograms of one cache, registered once with the process's `metrics` recorder
/// (`jobyard_cache_operation_seconds{op}` on `/metrics`); without a recorder they cost nothing.
pub struct Latency {
    get: ::metrics::Histogram,
    set: ::metrics::Histogram,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            get: ::metrics::histogram!("jobyard_cache_operation_seconds", "op" => "get"),
            set: ::metrics::histogram!("jobyard_cache_operation_seconds", "op" => "set"),
        }
    }
}

impl Latency {
    /// A read that took `elapsed`.
    pub fn get(&self, elapsed: Duration) {
        self.get.record(elapsed.as_secs_f64());
    }

    /// A write that took `elapsed`.
    pub fn set(&self, elapsed: Duration) {
        self.set.record(elapsed.as_secs_f64());
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
    /// Latency of reads and writes.
    pub latency: Latency,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
