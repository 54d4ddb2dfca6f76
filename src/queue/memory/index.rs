//! The secondary indexes of the in-memory store, one per state that needs ordering, kept in
//! step with each job's status by [`Indexes::add`] / [`Indexes::remove`].

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::job::{JobId, JobRecord, JobStatus};

use super::store::Entry;

/// The ordering key of a queued job: highest priority first, then submit order.
pub(super) type Ready = (Reverse<i32>, u64, JobId);

/// A lane of ready jobs: every job in it is held back or let through by the same limits, and
/// takes its group's turn (see `queue::flow`). Within a kind, jobs of one queue, group, set of
/// limits and cost share a lane.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Lane {
    pub queue: Arc<str>,
    pub group: Option<Arc<str>>,
    pub limits: Arc<[Arc<str>]>,
    /// The jobs' cost (1 for jobs under no limit: nothing counts it).
    pub cost: u32,
}

impl Lane {
    pub fn of(record: &JobRecord) -> Lane {
        Lane {
            queue: record.queue.clone(),
            group: record.group.clone(),
            limits: record.limits.clone(),
            cost: if record.limits.is_empty() { 1 } else { record.cost },
        }
    }
}

/// Ordering keys of a job in the indexes.
#[derive(Default)]
pub(super) struct Indexes {
    /// `queued` jobs per kind and lane: highest priority first, then submit order. Lanes that
    /// empty stay until the next periodic step ([`Indexes::prune`]): a busy lane empties and
    /// fills again all the time.
    pub ready: HashMap<Arc<str>, HashMap<Lane, BTreeSet<Ready>>>,
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
                let lanes = match self.ready.get_mut(&record.kind) {
                    Some(lanes) => lanes,
                    None => self.ready.entry(record.kind.clone()).or_default(),
                };
                let ready = lanes.entry(Lane::of(record)).or_default();
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
                if let Some(lanes) = self.ready.get_mut(&record.kind) {
                    if let Some(ready) = lanes.get_mut(&Lane::of(record)) {
                        ready.remove(&(Reverse(record.priority), entry.seq, id));
                    }
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

    /// Drops the lanes (and kinds) that hold no job, so that claims, which look at every lane
    /// of their kinds, do not grow with every group or limit ever used.
    pub fn prune(&mut self) {
        self.ready.retain(|_, lanes| {
            lanes.retain(|_, ready| !ready.is_empty());
            !lanes.is_empty()
        });
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
