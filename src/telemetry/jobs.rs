//! Job metrics, recorded where jobs pass through this instance: submitted (by the client),
//! started, succeeded, failed, retried and cancelled (by the worker pool) per kind and queue,
//! and the run-time and queue-wait histograms per kind. They go to whatever `metrics` recorder
//! the process installed (the server installs the Prometheus one; without one they cost
//! nothing). Each instance counts what it does; Prometheus sums the instances.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram};

/// How an attempt ended, for its counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    /// Failed for good.
    Failed,
    /// Failed, and a retry is scheduled.
    Retried,
    Cancelled,
}

/// Counts jobs submitted (created, not answered from an idempotency key) of `kind` in `queue`.
pub fn submitted(kind: &Arc<str>, queue: &Arc<str>) {
    metrics::counter!("jobyard_jobs_submitted_total", labels(kind, queue)).increment(1);
}

/// Counts a job of `kind` in `queue` cancelled before it ran.
pub fn cancelled_before_running(kind: &Arc<str>, queue: &Arc<str>) {
    metrics::counter!("jobyard_jobs_cancelled_total", labels(kind, queue)).increment(1);
}

fn labels(kind: &Arc<str>, queue: &Arc<str>) -> Vec<metrics::Label> {
    vec![metrics::Label::new("kind", kind.clone()), metrics::Label::new("queue", queue.clone())]
}

/// The handles of one kind in one queue, registered once: the pool records every attempt
/// without looking its metrics up by name.
struct Meters {
    started: Counter,
    succeeded: Counter,
    failed: Counter,
    retried: Counter,
    cancelled: Counter,
    run: Histogram,
    wait: Histogram,
}

impl Meters {
    fn new(kind: &Arc<str>, queue: &Arc<str>) -> Self {
        let both = labels(kind, queue);
        let by_kind = vec![metrics::Label::new("kind", kind.clone())];
        Meters {
            started: metrics::counter!("jobyard_jobs_started_total", both.clone()),
            succeeded: metrics::counter!("jobyard_jobs_succeeded_total", both.clone()),
            failed: metrics::counter!("jobyard_jobs_failed_total", both.clone()),
            retried: metrics::counter!("jobyard_jobs_retried_total", both.clone()),
            cancelled: metrics::counter!("jobyard_jobs_cancelled_total", both.clone()),
            run: metrics::histogram!("jobyard_job_run_seconds", by_kind.clone()),
            wait: metrics::histogram!("jobyard_job_queue_wait_seconds", by_kind),
        }
    }
}

/// The worker pool's job metrics.
#[derive(Default)]
pub struct JobMeters {
    by_kind_and_queue: HashMap<(Arc<str>, Arc<str>), Meters>,
}

/// Kind and queue pairs with series of their own, at most; the jobs of further pairs count
/// under queue `other` (queue names are the clients' to choose, and each pair's series last
/// as long as the process).
const MOST_PAIRS: usize = 1_000;

impl JobMeters {
    fn meters(&mut self, kind: &Arc<str>, queue: &Arc<str>) -> &Meters {
        let key = (kind.clone(), queue.clone());
        let key = if self.by_kind_and_queue.len() < MOST_PAIRS
            || self.by_kind_and_queue.contains_key(&key)
        {
            key
        } else {
            (kind.clone(), Arc::from("other"))
        };
        self.by_kind_and_queue
            .entry(key)
            .or_insert_with_key(|(kind, queue)| Meters::new(kind, queue))
    }

    /// An attempt of `kind` in `queue` started after waiting `waited` since it was due.
    pub fn started(&mut self, kind: &Arc<str>, queue: &Arc<str>, waited: Duration) {
        let meters = self.meters(kind, queue);
        meters.started.increment(1);
        meters.wait.record(waited.as_secs_f64());
    }

    /// An attempt of `kind` in `queue` that ran for `ran` ended so.
    pub fn ended(&mut self, kind: &Arc<str>, queue: &Arc<str>, ran: Duration, ending: Ending) {
        let meters = self.meters(kind, queue);
        meters.run.record(ran.as_secs_f64());
        match ending {
            Ending::Succeeded => meters.succeeded.increment(1),
            Ending::Failed => meters.failed.increment(1),
            Ending::Retried => meters.retried.increment(1),
            Ending::Cancelled => meters.cancelled.increment(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_past_the_bound_share_one_series_per_kind() {
        let mut meters = JobMeters::default();
        let kind: Arc<str> = Arc::from("noop");
        for n in 0..MOST_PAIRS + 500 {
            let queue: Arc<str> = Arc::from(format!("q{n}"));
            meters.started(&kind, &queue, Duration::ZERO);
        }
        assert_eq!(meters.by_kind_and_queue.len(), MOST_PAIRS + 1, "the bound, and `other`");
        assert!(meters.by_kind_and_queue.contains_key(&(kind.clone(), Arc::from("other"))));
        // A pair seen before the bound keeps its own series.
        meters.ended(&kind, &Arc::from("q0"), Duration::ZERO, Ending::Succeeded);
        assert_eq!(meters.by_kind_and_queue.len(), MOST_PAIRS + 1);
    }
}
