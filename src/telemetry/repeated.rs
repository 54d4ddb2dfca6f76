//! Warnings that repeat while a backend is away. A Redis outage makes every refused submit,
//! readiness probe, claim and scheduler pass fail the same way, hundreds of times a second: each
//! kind of warning is logged the first time, then counted, and the count is logged once per
//! period (when the next one arrives after it) and when the backend returns ([`settle`]).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long the repeats of one kind of warning are counted before the count is logged.
const PERIOD: Duration = Duration::from_secs(30);

struct Window {
    started: Instant,
    /// Repeats not logged since `started`.
    repeats: u64,
}

/// The windows of each kind of warning.
struct Repeated {
    period: Duration,
    windows: Mutex<HashMap<&'static str, Window>>,
}

/// What to log of a warning.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing: it is counted.
    Counted,
    /// The warning, after the count of repeats of its kind over the previous window (when
    /// there were any).
    Log { repeats: u64, over: Duration },
}

impl Repeated {
    fn new(period: Duration) -> Self {
        Repeated { period, windows: Mutex::new(HashMap::new()) }
    }

    fn note(&self, kind: &'static str, now: Instant) -> Verdict {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get_mut(kind) {
            Some(window) if now.duration_since(window.started) < self.period => {
                window.repeats += 1;
                Verdict::Counted
            }
            Some(window) => {
                let verdict = Verdict::Log {
                    repeats: window.repeats,
                    over: now.duration_since(window.started),
                };
                *window = Window { started: now, repeats: 0 };
                verdict
            }
            None => {
                windows.insert(kind, Window { started: now, repeats: 0 });
                Verdict::Log { repeats: 0, over: Duration::ZERO }
            }
        }
    }

    /// The counts not logged yet, by kind; every window starts afresh.
    fn settle(&self) -> Vec<(&'static str, u64)> {
        let windows = std::mem::take(&mut *self.windows.lock().unwrap_or_else(|e| e.into_inner()));
        let mut repeated: Vec<(&'static str, u64)> = windows
            .into_iter()
            .filter(|(_, w)| w.repeats > 0)
            .map(|(k, w)| (k, w.repeats))
            .collect();
        repeated.sort_unstable();
        repeated
    }
}

static WARNINGS: LazyLock<Repeated> = LazyLock::new(|| Repeated::new(PERIOD));

/// Whether to log a warning of this `kind` now: no when one was logged less than a period ago
/// (it is counted instead). After a period, logs the count of the repeats first. `kind` names
/// what failed, as the counts show it (`"claims failed"`). The caller logs the warning itself,
/// so that it keeps its module as its target.
///
/// ```
/// if jobyard::telemetry::repeated::admit("claims failed") {
///     tracing::warn!("claiming jobs failed (retrying): redis is unreachable");
/// }
/// ```
pub fn admit(kind: &'static str) -> bool {
    match WARNINGS.note(kind, Instant::now()) {
        Verdict::Counted => false,
        Verdict::Log { repeats, over } => {
            if repeats > 0 {
                tracing::warn!(repeats, "{kind}: {repeats} more in the last {} s", over.as_secs());
            }
            true
        }
    }
}

/// Logs the counts not logged yet and starts afresh: called when the backend returns, so the
/// log says how much failed while it was away.
pub fn settle() {
    for (kind, repeats) in WARNINGS.settle() {
        tracing::info!(repeats, "{kind}: {repeats} more while it was away");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_a_period_are_counted_then_summarised() {
        let repeated = Repeated::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let first = Verdict::Log { repeats: 0, over: Duration::ZERO };
        assert_eq!(repeated.note("a", t0), first);
        assert_eq!(repeated.note("a", t0 + Duration::from_secs(1)), Verdict::Counted);
        assert_eq!(repeated.note("a", t0 + Duration::from_secs(29)), Verdict::Counted);
        assert_eq!(repeated.note("b", t0 + Duration::from_secs(2)), first, "kinds apart");
        let later = t0 + Duration::from_secs(31);
        let summary = Verdict::Log { repeats: 2, over: Duration::from_secs(31) };
        assert_eq!(repeated.note("a", later), summary, "the next period logs the count");
        assert_eq!(repeated.note("a", later + Duration::from_secs(1)), Verdict::Counted);
        assert_eq!(repeated.settle(), vec![("a", 1)]);
        assert_eq!(repeated.note("a", later + Duration::from_secs(2)), first, "afresh");
    }
}
