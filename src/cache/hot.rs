//! Which keys are read most: sampled read counts, for cache warming.
//!
//! One read in [`SAMPLE`] is counted, so the hot path pays a random number most of the time
//! and a short mutex-held map update now and then; the table is bounded, dropping its coldest
//! half when full.

use std::collections::HashMap;
use std::sync::Mutex;

/// One read in this many is counted.
pub const SAMPLE: u32 = 8;
/// Most keys tracked at once.
const CAPACITY: usize = 10_000;

/// Sampled read counts per key.
#[derive(Default)]
pub struct HotKeys {
    counts: Mutex<HashMap<String, u64>>,
}

impl HotKeys {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a read of `key` (sampled).
    pub fn note(&self, key: &str) {
        if fastrand::u32(..SAMPLE) != 0 {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(key) {
            *count += 1;
            return;
        }
        if counts.len() >= CAPACITY {
            let mut all: Vec<u64> = counts.values().copied().collect();
            let (_, median, _) = all.select_nth_unstable(CAPACITY / 2);
            let median = *median;
            counts.retain(|_, c| *c > median);
        }
        counts.insert(key.to_owned(), 1);
    }

    /// The `limit` hottest keys with their estimated read counts, hottest first.
    pub fn top(&self, limit: usize) -> Vec<(String, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(String, u64)> =
            counts.iter().map(|(k, c)| (k.clone(), c * SAMPLE as u64)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_read_keys_come_first() {
        let hot = HotKeys::new();
        for _ in 0..4_000 {
            hot.note("hot");
        }
        for _ in 0..400 {
            hot.note("warm");
        }
        hot.note("cold");
        let top = hot.top(2);
        assert_eq!(top[0].0, "hot");
        assert_eq!(top[1].0, "warm");
        assert!(top[0].1 > top[1].1);
    }

    #[test]
    fn the_table_stays_bounded() {
        let hot = HotKeys::new();
        for i in 0..(CAPACITY * 4 * SAMPLE as usize) {
            hot.note(&format!("k{i}"));
        }
        assert!(hot.counts.lock().unwrap().len() <= CAPACITY);
    }
}
