//! What this instance noted per tool for a short while: the copy of a tool's configuration its
//! reads trust, and when a stale read last triggered a refresh. One bounded map for both:
//! entries older than the period are dropped as the map fills.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Past this many entries, a note sweeps out those older than the period.
const SWEEP_AT: usize = 1_024;

/// Values noted by name, each trusted for `period` after it was noted; cheap to clone (clones
/// share the map).
#[derive(Clone)]
pub struct Recent<T> {
    period: Duration,
    noted: Arc<Mutex<HashMap<String, (Instant, T)>>>,
}

impl<T: Clone> Recent<T> {
    pub fn new(period: Duration) -> Self {
        Recent { period, noted: Arc::default() }
    }

    /// The value noted for `name` less than a period ago.
    pub fn get(&self, name: &str) -> Option<T> {
        let noted = self.noted();
        noted.get(name).filter(|(at, _)| at.elapsed() < self.period).map(|(_, v)| v.clone())
    }

    /// Notes `value` for `name` as of now.
    pub fn note(&self, name: &str, value: T) {
        let mut noted = self.noted();
        if noted.len() >= SWEEP_AT {
            noted.retain(|_, (at, _)| at.elapsed() < self.period);
        }
        noted.insert(name.to_owned(), (Instant::now(), value));
    }

    /// Forgets what was noted for `name`.
    pub fn forget(&self, name: &str) {
        self.noted().remove(name);
    }

    fn noted(&self) -> MutexGuard<'_, HashMap<String, (Instant, T)>> {
        self.noted.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_lasts_one_period_and_can_be_forgotten() {
        let recent = Recent::new(Duration::from_secs(3_600));
        assert_eq!(recent.get("a"), None);
        recent.note("a", 1);
        assert_eq!(recent.get("a"), Some(1));
        recent.forget("a");
        assert_eq!(recent.get("a"), None);
        let expired = Recent::new(Duration::ZERO);
        expired.note("a", 1);
        assert_eq!(expired.get("a"), None, "older than the period");
    }
}
