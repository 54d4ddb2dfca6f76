//! The runtime's notion of now. Every time the runtime hands its queue backend (when a job is
//! due, when a lease expires, when a retry or a cron tick comes) is read here, so that a test
//! can move it forward ([`crate::testing::TestClock`]) instead of sleeping. Timers that only
//! pace the runtime's own work (lease renewal every third of a lease, the scheduler's
//! half-second step) run on real time: after a jump they find the new now at their next turn.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

/// Called after the clock moved (the scheduler steps at once rather than at its next turn).
type OnAdvance = Box<dyn Fn() + Send + Sync>;

/// The system clock, or in tests the system clock plus the time skipped by hand.
#[derive(Clone, Default)]
pub(crate) struct Clock {
    skipped: Option<Arc<Skipped>>,
}

#[derive(Default)]
struct Skipped {
    millis: AtomicI64,
    on_advance: Mutex<Vec<OnAdvance>>,
}

impl Clock {
    /// A clock that time can be skipped on.
    pub(crate) fn manual() -> Self {
        Clock { skipped: Some(Arc::default()) }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        match &self.skipped {
            None => now,
            Some(skipped) => {
                let delta = chrono::Duration::milliseconds(skipped.millis.load(Ordering::SeqCst));
                now.checked_add_signed(delta).unwrap_or(now)
            }
        }
    }

    /// Moves a manual clock `by` forward (a system clock cannot be moved: nothing happens).
    pub(crate) fn advance(&self, by: std::time::Duration) {
        let Some(skipped) = &self.skipped else { return };
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        skipped.millis.fetch_add(millis, Ordering::SeqCst);
        for call in skipped.on_advance.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            call();
        }
    }

    /// Calls `call` after each advance of a manual clock.
    pub(crate) fn on_advance(&self, call: impl Fn() + Send + Sync + 'static) {
        if let Some(skipped) = &self.skipped {
            skipped.on_advance.lock().unwrap_or_else(PoisonError::into_inner).push(Box::new(call));
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.skipped {
            None => f.write_str("Clock(system)"),
            Some(skipped) => write!(f, "Clock(+{} ms)", skipped.millis.load(Ordering::SeqCst)),
        }
    }
}
