//! The history of finished jobs: how many jobs reached `succeeded` and `failed` in each
//! [`STEP_SECS`] bucket of the last hour (`GET /v1/stats/history`).
//!
//! Each instance counts the completions the store accepted from its own workers, in a
//! [`Finishes`] ring the queue actor owns (plain integers on the actor: nothing is locked, and
//! the job pipeline pays a few additions per batch of completions). On a backend of one
//! process that ring is the whole history. A shared backend keeps a history of its own that
//! every instance adds to ([`crate::queue::QueueBackend::add_finished`]): each instance hands
//! it the deltas of its ring every [`FLUSH_EVERY`], never one write per job, so a busy
//! deployment costs the store one small write per instance every couple of seconds whatever
//! its throughput. A read merges the shared counts with the deltas not handed over yet.
//!
//! What is counted: attempts that ended a job, as the store accepted them (a stale attempt's
//! report is not). Jobs failed by the periodic step (a lease that expired on its last attempt,
//! an instance that restarted) are not, nor are cancelled ones: the history is the throughput
//! of the workers.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The width of a bucket, in seconds.
pub const STEP_SECS: i64 = 10;
/// Buckets in the history: an hour.
pub const POINTS: usize = 360;
/// How often an instance of a shared backend hands its counts over.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// A bucket's number: the seconds since the epoch at its start, divided by [`STEP_SECS`].
pub type Bucket = i64;

/// The bucket `at` falls in.
pub fn bucket_of(at: DateTime<Utc>) -> Bucket {
    at.timestamp().div_euclid(STEP_SECS)
}

/// The first and last bucket of the history as of `now` (the last is the current one).
pub fn window(now: DateTime<Utc>) -> (Bucket, Bucket) {
    let last = bucket_of(now);
    (last - POINTS as i64 + 1, last)
}

/// Jobs finished in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Jobs that reached `succeeded`.
    pub succeeded: u64,
    /// Jobs that reached `failed`.
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
    }

    fn is_zero(&self) -> bool {
        self.succeeded == 0 && self.failed == 0
    }
}

/// One point of the history.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "server", schema(as = HistoryPoint))]
pub struct Point {
    /// The start of the bucket.
    pub at: DateTime<Utc>,
    /// Jobs that reached `succeeded` in it.
    pub succeeded: u64,
    /// Jobs that reached `failed` in it.
    pub failed: u64,
}

/// The answer of `GET /v1/stats/history`.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct History {
    /// The width of a bucket, in seconds (10).
    pub step_secs: i64,
    /// The last hour's buckets, oldest first, the current one last; buckets without a
    /// finished job are there with zeros.
    pub points: Vec<Point>,
}

impl History {
    /// The history of the window ending at `now` from `counts` by bucket (buckets outside the
    /// window are left out, missing ones are zeros).
    pub fn from_counts(now: DateTime<Utc>, counts: &BTreeMap<Bucket, Counts>) -> Self {
        let (first, last) = window(now);
        let points = (first..=last)
            .map(|bucket| {
                let c = counts.get(&bucket).copied().unwrap_or_default();
                let at = DateTime::from_timestamp(bucket * STEP_SECS, 0).unwrap_or_default();
                Point { at, succeeded: c.succeeded, failed: c.failed }
            })
            .collect();
        History { step_secs: STEP_SECS, points }
    }
}

/// One slot of the ring: a bucket and its counts.
#[derive(Clone, Copy, Default)]
struct Slot {
    bucket: Bucket,
    counts: Counts,
}

/// This instance's counts of the last hour, a slot per bucket, and (for a shared backend) the
/// deltas not handed to the backend yet.
pub struct Finishes {
    ring: Box<[Slot; POINTS]>,
    /// Counts not handed to the shared history yet, by bucket; kept only when `shared`.
    pending: BTreeMap<Bucket, Counts>,
    shared: bool,
}

impl Finishes {
    /// An empty history; `shared` keeps deltas for [`Finishes::take_pending`].
    pub fn new(shared: bool) -> Self {
        Finishes { ring: Box::new([Slot::default(); POINTS]), pending: BTreeMap::new(), shared }
    }

    /// Counts jobs finished at `now`.
    pub fn record(&mut self, now: DateTime<Utc>, counts: Counts) {
        if counts.is_zero() {
            return;
        }
        let bucket = bucket_of(now);
        let slot = &mut self.ring[bucket.rem_euclid(POINTS as i64) as usize];
        if slot.bucket != bucket {
            *slot = Slot { bucket, counts: Counts::default() };
        }
        slot.counts.add(counts);
        if self.shared {
            self.pending.entry(bucket).or_default().add(counts);
        }
    }

    /// This instance's counts in the window ending at `now`, by bucket.
    pub fn local(&self, now: DateTime<Utc>) -> BTreeMap<Bucket, Counts> {
        let (first, last) = window(now);
        let slots = self.ring.iter().filter(|s| (first..=last).contains(&s.bucket));
        slots.filter(|s| !s.counts.is_zero()).map(|s| (s.bucket, s.counts)).collect()
    }

    /// The deltas not handed over yet (to add to the shared counts read).
    pub fn pending(&self) -> &BTreeMap<Bucket, Counts> {
        &self.pending
    }

    /// Takes the deltas to hand over; [`Finishes::give_back`] returns them when that failed.
    pub fn take_pending(&mut self) -> BTreeMap<Bucket, Counts> {
        std::mem::take(&mut self.pending)
    }

    /// Deltas that could not be handed over: kept for the next time, those older than the
    /// window as of `now` dropped (nobody reads them any more).
    pub fn give_back(&mut self, deltas: BTreeMap<Bucket, Counts>, now: DateTime<Utc>) {
        let (first, _) = window(now);
        for (bucket, counts) in deltas.into_iter().filter(|(b, _)| *b >= first) {
            self.pending.entry(bucket).or_default().add(counts);
        }
    }
}

/// Adds `more` to `counts`, bucket by bucket.
pub fn merge(counts: &mut BTreeMap<Bucket, Counts>, more: &BTreeMap<Bucket, Counts>) {
    for (bucket, c) in more {
        counts.entry(*bucket).or_default().add(*c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    const ONE: Counts = Counts { succeeded: 1, failed: 0 };
    const FAIL: Counts = Counts { succeeded: 0, failed: 1 };

    #[test]
    fn jobs_count_in_the_bucket_of_their_end_and_the_window_is_an_hour() {
        let mut finishes = Finishes::new(false);
        finishes.record(at(0), ONE);
        finishes.record(at(9), ONE);
        finishes.record(at(9), FAIL);
        finishes.record(at(10), FAIL);
        let history = History::from_counts(at(15), &finishes.local(at(15)));
        assert_eq!(history.points.len(), POINTS);
        let [.., before, now] = &history.points[..] else { unreachable!() };
        assert_eq!((before.succeeded, before.failed), (2, 1));
        assert_eq!((now.succeeded, now.failed), (0, 1));
        assert_eq!(now.at, at(10), "a point starts at its bucket's start");
        assert!(history.points.windows(2).all(|w| w[0].at < w[1].at), "oldest first");
        // An hour later the first bucket's slot is reused: its counts are gone, not added to;
        // the bucket after it is still in the window.
        finishes.record(at(3600), ONE);
        let history = History::from_counts(at(3600), &finishes.local(at(3600)));
        let now = history.points.last().unwrap();
        assert_eq!((now.succeeded, now.failed), (1, 0));
        assert_eq!((history.points[0].succeeded, history.points[0].failed), (0, 1));
        let total: u64 = history.points.iter().map(|p| p.succeeded + p.failed).sum();
        assert_eq!(total, 2);
    }

    #[test]
    fn deltas_are_kept_only_for_a_shared_backend_and_given_back_when_not_handed_over() {
        let mut local = Finishes::new(false);
        local.record(at(0), ONE);
        assert!(local.pending().is_empty());
        let mut shared = Finishes::new(true);
        shared.record(at(0), ONE);
        shared.record(at(20), FAIL);
        let taken = shared.take_pending();
        assert_eq!(taken.len(), 2);
        assert!(shared.pending().is_empty());
        shared.record(at(20), FAIL);
        // Handing over failed an hour later: only what the window still shows is kept.
        shared.give_back(taken, at(3600 + 15));
        assert_eq!(
            shared.pending().values().copied().collect::<Vec<_>>(),
            [Counts { succeeded: 0, failed: 2 }]
        );
    }
}
