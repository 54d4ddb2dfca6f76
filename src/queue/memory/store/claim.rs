//! The memory store's claim: which queued jobs a claim takes, in claim order (see
//! `queue::flow`), past the lanes their limits hold back; and which jobs those hold back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Lease, Store};
use crate::job::{JobRecord, JobStatus};
use crate::queue::flow::{Budget, Claims};
use crate::queue::memory::index::{Lane, Ready};
use crate::queue::{Changes, Claim, Claimed, LeaseRef};

/// A lane a claim may take from, and what it knows of it.
struct Candidate {
    kind: Arc<str>,
    lane: Lane,
    /// Whether its queue has lanes of more than one group in this claim: only then do groups
    /// take turns (and cost the bookkeeping).
    turns: bool,
    /// Its limits said no during this claim (they only tighten as it goes).
    blocked: bool,
}

impl Store {
    pub fn claim(&mut self, claim: &Claim, now: DateTime<Utc>) -> Claims {
        let mut changes = Changes::default();
        self.promote_due(now, &mut changes);
        let now_ms = now.timestamp_millis();
        let mut retry_at = None;
        let (mut candidates, mut budgets) = self.candidates(&claim.kinds, now_ms, &mut retry_at);
        let expires_ms = now_ms + claim.lease.as_millis() as i64;
        let mut claims = Claims::default();
        // Per limit: jobs taken and their tokens.
        let mut taken: HashMap<Arc<str>, (u64, u64)> = HashMap::new();
        for worker in &claim.workers {
            let Some(at) = self.next_claim(&mut candidates, &budgets, now_ms, &mut retry_at) else {
                break;
            };
            let lane = &candidates[at].lane;
            let id = self.idx.ready[&candidates[at].kind][lane].first().expect("a head").2;
            for limit in lane.limits.iter() {
                if let Some(budget) = budgets.get_mut(limit) {
                    budget.take(u64::from(lane.cost), now_ms);
                }
                let (jobs, tokens) = taken.entry(limit.clone()).or_default();
                *jobs += 1;
                *tokens += u64::from(lane.cost);
            }
            if candidates[at].turns {
                let weight = self.flow.weight(lane.group.as_deref());
                self.flow.turns.served(&lane.queue, &lane.group, weight);
            }
            let token = fastrand::u64(..);
            self.transition(id, JobStatus::Running, now, &mut changes, |e| {
                e.lease = Some(Lease { token, expires_ms });
                e.record.attempts += 1;
                e.record.started_at = Some(now);
                e.record.worker = Some(worker.clone());
            });
            claims.jobs.push(Claimed {
                record: self.jobs[&id].record.clone(),
                lease: LeaseRef { id, token },
            });
        }
        for (limit, (jobs, tokens)) in taken {
            self.flow.took(&limit, jobs, tokens, now_ms);
        }
        claims.retry_at = retry_at.and_then(DateTime::from_timestamp_millis);
        claims
    }

    /// The lanes of `kinds` that hold jobs, in queues that are not paused, with what their
    /// limits allow now; the lanes those hold back are marked blocked (noting when they may
    /// free). Groups take turns in a queue only where several of its groups have lanes that
    /// are not blocked (as the Redis claim, which does not even read those).
    fn candidates(
        &mut self,
        kinds: &[Arc<str>],
        now_ms: i64,
        retry_at: &mut Option<i64>,
    ) -> (Vec<Candidate>, HashMap<Arc<str>, Budget>) {
        let mut candidates = Vec::new();
        for kind in kinds {
            let Some(lanes) = self.idx.ready.get(kind) else { continue };
            for (lane, ready) in lanes {
                if !ready.is_empty() && !self.flow.is_paused(&lane.queue) {
                    let (kind, lane) = (kind.clone(), lane.clone());
                    candidates.push(Candidate { kind, lane, turns: false, blocked: false });
                }
            }
        }
        let names = candidates.iter().flat_map(|c| c.lane.limits.iter());
        let budgets = self.flow.budgets(names, now_ms);
        for candidate in candidates.iter_mut().filter(|c| !c.lane.limits.is_empty()) {
            if let Err(free_at) = allowed(&candidate.lane, &budgets, now_ms) {
                candidate.blocked = true;
                note_free(retry_at, free_at);
            }
        }
        let mut first_group: HashMap<&Arc<str>, &Option<Arc<str>>> = HashMap::new();
        let mut mixed = HashSet::new();
        for c in candidates.iter().filter(|c| !c.blocked) {
            match first_group.get(&c.lane.queue) {
                Some(group) if *group != &c.lane.group => {
                    mixed.insert(c.lane.queue.clone());
                }
                Some(_) => {}
                None => {
                    first_group.insert(&c.lane.queue, &c.lane.group);
                }
            }
        }
        if !mixed.is_empty() {
            for c in &mut candidates {
                c.turns = mixed.contains(&c.lane.queue);
            }
        }
        (candidates, budgets)
    }

    /// The candidate whose head goes next in claim order (`queue::flow`): highest priority;
    /// within it, per queue, the group whose turn it is, then the oldest; across queues the
    /// oldest. Lanes whose limits say no are marked blocked, noting when they may free.
    fn next_claim(
        &self,
        candidates: &mut [Candidate],
        budgets: &HashMap<Arc<str>, Budget>,
        now_ms: i64,
        retry_at: &mut Option<i64>,
    ) -> Option<usize> {
        // The best head so far per queue, at the best priority seen: (candidate, pass, seq,
        // queue).
        let mut best: Vec<(usize, f64, u64, &Arc<str>)> = Vec::new();
        let mut top = None;
        for (at, candidate) in candidates.iter_mut().enumerate() {
            if candidate.blocked {
                continue;
            }
            let lane = &candidate.lane;
            let Some(&(Reverse(priority), seq, _)) = self
                .idx
                .ready
                .get(&candidate.kind)
                .and_then(|l| l.get(lane))
                .and_then(|r| r.first())
            else {
                continue;
            };
            if top.is_some_and(|top| priority < top) {
                continue;
            }
            if let Err(free_at) = allowed(lane, budgets, now_ms) {
                candidate.blocked = true;
                note_free(retry_at, free_at);
                continue;
            }
            if top.is_none_or(|top| priority > top) {
                top = Some(priority);
                best.clear();
            }
            let pass =
                if candidate.turns { self.flow.turns.pass(&lane.queue, &lane.group) } else { 0.0 };
            let queue = &lane.queue;
            match best.iter_mut().find(|(_, _, _, other)| *other == queue) {
                Some(slot) if (pass, seq) < (slot.1, slot.2) => *slot = (at, pass, seq, queue),
                Some(_) => {}
                None => best.push((at, pass, seq, queue)),
            }
        }
        best.iter().min_by_key(|(_, _, seq, _)| *seq).map(|(at, _, _, _)| *at)
    }

    /// Queued jobs a limit holds back now, per queue (queues with none left out): the jobs of
    /// the lanes whose limits say no.
    pub fn throttled(&mut self, now: DateTime<Utc>) -> BTreeMap<String, u64> {
        let now_ms = now.timestamp_millis();
        let lanes = self.idx.ready.values().flat_map(|lanes| lanes.iter());
        let limited: Vec<(&Lane, usize)> = lanes
            .filter(|(lane, ready)| !lane.limits.is_empty() && !ready.is_empty())
            .map(|(lane, ready)| (lane, ready.len()))
            .collect();
        let names = limited.iter().flat_map(|(lane, _)| lane.limits.iter());
        let budgets = self.flow.budgets(names, now_ms);
        let mut throttled = BTreeMap::new();
        for (lane, held) in limited {
            if allowed(lane, &budgets, now_ms).is_err() {
                *throttled.entry(lane.queue.to_string()).or_default() += held as u64;
            }
        }
        throttled
    }

    /// The queued jobs naming limit `name` that it holds back now, at most `most`, highest
    /// priority first, then oldest; `None` when there is no such limit.
    pub fn limit_jobs(
        &mut self,
        name: &str,
        most: usize,
        now: DateTime<Utc>,
    ) -> Option<Vec<JobRecord>> {
        let now_ms = now.timestamp_millis();
        let name: Arc<str> = Arc::from(name);
        let budget = *self.flow.budgets(std::iter::once(&name), now_ms).get(&name)?;
        let lanes = self.idx.ready.values().flat_map(|lanes| lanes.iter());
        let mut held: Vec<&Ready> = Vec::new();
        for (lane, ready) in lanes.filter(|(lane, _)| lane.limits.contains(&name)) {
            if budget.allows(u64::from(lane.cost), now_ms).is_err() {
                held.extend(ready.iter().take(most));
            }
        }
        // `Ready` sorts highest priority first, then in submit order.
        held.sort_unstable();
        let records = held.iter().take(most).filter_map(|(_, _, id)| self.jobs.get(id));
        Some(records.map(|e| e.record.clone()).collect())
    }
}

/// Whether every limit of `lane` lets its next job start now; when not, when one may (`None`:
/// when a running job ends). Limits that do not exist (deleted) allow anything.
fn allowed(
    lane: &Lane,
    budgets: &HashMap<Arc<str>, Budget>,
    now_ms: i64,
) -> Result<(), Option<i64>> {
    // The lane waits for the last of its limits to free (a limit that frees only when a job
    // ends adds no time: that end wakes the workers anyway).
    let (mut blocked, mut free_at) = (false, None);
    for limit in lane.limits.iter() {
        if let Some(Err(at)) = budgets.get(limit).map(|b| b.allows(u64::from(lane.cost), now_ms)) {
            blocked = true;
            free_at = free_at.max(at);
        }
    }
    if blocked {
        Err(free_at)
    } else {
        Ok(())
    }
}

/// Lowers `retry_at` to `free_at` when that is earlier.
fn note_free(retry_at: &mut Option<i64>, free_at: Option<i64>) {
    if let Some(free_at) = free_at {
        *retry_at = Some(retry_at.map_or(free_at, |r| r.min(free_at)));
    }
}
