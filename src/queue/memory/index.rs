//! The secondary indexes of the in-memory store, one per state that needs ordering, kept in
//! step with each job's status by [`Indexes::add`] / [`Indexes::remove`].

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::job::{JobId, JobStatus};

use super::store::Entry;

/// The ordering key of a queued job: highest priority first, then submit order.
pub(super) type Ready = (Reverse<i32>, u64, JobId);

/// Ordering keys of a job in the indexes.
#[derive(Default)]
pub(super) struct Indexes {
    /// `queued` jobs per kind: highest priority first, then submit order.
    pub ready: HashMap<Arc<str>, BTreeSet<Ready>>,
    /// `scheduled` jobs by `run_at` (ms), then submit order.
    pub scheduled: BTreeSet<(i64, u64, JobId)>,
    /// `running` jobs by lease expiry (ms).
    pub leases: BTreeSet<(i64, JobId)>,
    /// Terminal jobs per queue by `finished_at` (ms), for retention.
    pub finished: HashMap<Arc<str>, BTreeSet<(i64, JobId)>>,
    /// Jobs per state per queue, for stats without a scan.
    pub counts: HashMap<Arc<str>, [u64; 7]>,
}

impl Indexes {
    /// Enters `entry` in the index of its current status.
    pub fn add(&mut self, entry: &Entry) {
        let record = &entry.record;
        let id = record.id;
        match record.status {
            JobStatus::Queued => {
                let ready = match self.ready.get_mut(&record.kind) {
                    Some(ready) => ready,
                    None => self.ready.entry(record.kind.clone()).or_default(),
                };
                ready.insert((Reverse(record.priority), entry.seq, id));
            }
            JobStatus::Scheduled => {
                self.scheduled.insert((run_at_ms(entry), entry.seq, id));
            }
            JobStatus::Running => {
                self.leases.insert((entry.lease_expiry(), id));
            }
            status if status.is_terminal() => {
                let finished = match self.finished.get_mut(&record.queue) {
                    Some(finished) => finished,
                    None => self.finished.entry(record.queue.clone()).or_default(),
                };
                finished.insert((finished_ms(entry), id));
            }
            _ => {}
        }
        self.count(entry, 1);
    }

    /// Removes `entry` from the index of its current status.
    pub fn remove(&mut self, entry: &Entry) {
        let record = &entry.record;
        let id = record.id;
        match record.status {
            JobStatus::Queued => {
                if let Some(ready) = self.ready.get_mut(&record.kind) {
                    ready.remove(&(Reverse(record.priority), entry.seq, id));
                }
            }
            JobStatus::Scheduled => {
                self.scheduled.remove(&(run_at_ms(entry), entry.seq, id));
            }
            JobStatus::Running => {
                self.leases.remove(&(entry.lease_expiry(), id));
            }
            status if status.is_terminal() => {
                if let Some(finished) = self.finished.get_mut(&record.queue) {
                    finished.remove(&(finished_ms(entry), id));
                }
            }
            _ => {}
        }
        self.count(entry, -1);
    }

    fn count(&mut self, entry: &Entry, delta: i64) {
        let queue = &entry.record.queue;
        let counts = match self.counts.get_mut(queue) {
            Some(counts) => counts,
            None => self.counts.entry(queue.clone()).or_default(),
        };
        let slot = &mut counts[entry.record.status.index()];
        *slot = slot.wrapping_add_signed(delta);
    }

    /// The first queued job among `kinds`, in claim order.
    pub fn next_ready(&self, kinds: &[Arc<str>]) -> Option<JobId> {
        kinds.iter().filter_map(|kind| self.ready.get(kind)?.first()).min().map(|&(_, _, id)| id)
    }

    /// The shared name of `queue`, so that every job of a queue points to one allocation.
    pub fn intern_queue(&self, queue: &Arc<str>) -> Arc<str> {
        self.counts
            .get_key_value(queue)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| queue.clone())
    }
}

fn run_at_ms(entry: &Entry) -> i64 {
    entry.record.run_at.map_or(0, |t| t.timestamp_millis())
}

fn finished_ms(entry: &Entry) -> i64 {
    entry.record.finished_at.map_or(0, |t| t.timestamp_millis())
}
