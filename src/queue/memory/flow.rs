//! The memory store's flow control: limits with their windows, holds and running counts, paused
//! queues, group weights and turns. The store asks it what a claim may take
//! ([`Flow::budgets`]) and tells it what was taken and what ended.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::job::NewJob;
use crate::queue::flow::{Budget, GroupWeight, Limit, LimitSpec, LimitState, Turns};
use crate::queue::QueueError;

/// The window's entries are joined within a hundredth of the window (see [`Flow::took`]; the
/// Redis claim script does the same).
const WINDOW_SLOTS: i64 = 100;

/// One limit as stored.
struct Stored {
    spec: LimitSpec,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Held until this time (ms).
    held_until: Option<i64>,
    /// What claims took, oldest first: (when, tokens). Each entry's tokens come back `per_ms`
    /// after it was taken.
    window: VecDeque<(i64, u64)>,
    /// Tokens in the window.
    used: u64,
}

impl Stored {
    /// Drops the entries of the window whose tokens came back by `now_ms`.
    fn slide(&mut self, now_ms: i64) {
        let per_ms = self.spec.rate.map_or(0, |r| r.per_ms as i64);
        while let Some(&(at, tokens)) = self.window.front() {
            if at + per_ms > now_ms {
                break;
            }
            self.window.pop_front();
            self.used -= tokens.min(self.used);
        }
    }

    fn next_token(&self) -> Option<i64> {
        let rate = self.spec.rate?;
        self.window.front().map(|&(at, _)| at + rate.per_ms as i64)
    }
}

/// The flow-control state of one memory store.
#[derive(Default)]
pub(super) struct Flow {
    limits: BTreeMap<String, Stored>,
    /// Jobs running under each limit name, whether or not the limit exists (a limit deleted
    /// and created again while its jobs run must count them).
    running: HashMap<Arc<str>, u64>,
    paused: HashSet<Arc<str>>,
    weights: BTreeMap<String, u32>,
    pub turns: Turns,
}

impl Flow {
    /// Refuses a job that names a limit that does not exist, or costs more than one of its
    /// rates allows per window.
    pub fn check(&self, job: &NewJob) -> Result<(), QueueError> {
        for name in job.limits.iter() {
            let stored = self
                .limits
                .get(&**name)
                .ok_or_else(|| QueueError::UnknownLimit(name.to_string()))?;
            if let Some(rate) = stored.spec.rate.filter(|r| r.tokens < u64::from(job.cost)) {
                return Err(QueueError::CostOverLimit {
                    limit: name.to_string(),
                    cost: job.cost,
                    tokens: rate.tokens,
                });
            }
        }
        Ok(())
    }

    pub fn is_paused(&self, queue: &str) -> bool {
        !self.paused.is_empty() && self.paused.contains(queue)
    }

    pub fn pause(&mut self, queue: &str, paused: bool) {
        if paused {
            self.paused.insert(Arc::from(queue));
        } else {
            self.paused.remove(queue);
        }
    }

    pub fn paused(&self) -> impl Iterator<Item = &Arc<str>> {
        self.paused.iter()
    }

    pub fn weight(&self, group: Option<&str>) -> u32 {
        match group {
            Some(group) if !self.weights.is_empty() => {
                self.weights.get(group).copied().unwrap_or(1)
            }
            _ => 1,
        }
    }

    pub fn set_weight(&mut self, group: &str, weight: Option<u32>) {
        match weight {
            Some(weight) if weight != 1 => {
                self.weights.insert(group.to_owned(), weight);
            }
            _ => {
                self.weights.remove(group);
            }
        }
    }

    pub fn weights(&self) -> Vec<GroupWeight> {
        let weights = self.weights.iter();
        weights.map(|(name, &weight)| GroupWeight { name: name.clone(), weight }).collect()
    }

    /// What each of `names` allows now (limits that do not exist allow anything: absent).
    pub fn budgets<'a>(
        &mut self,
        names: impl Iterator<Item = &'a Arc<str>>,
        now_ms: i64,
    ) -> HashMap<Arc<str>, Budget> {
        let mut budgets = HashMap::new();
        for name in names {
            if budgets.contains_key(name) {
                continue;
            }
            if let Some(budget) = self.budget(name, now_ms) {
                budgets.insert(name.clone(), budget);
            }
        }
        budgets
    }

    fn budget(&mut self, name: &str, now_ms: i64) -> Option<Budget> {
        let running = self.running.get(name).copied().unwrap_or(0);
        let stored = self.limits.get_mut(name)?;
        stored.slide(now_ms);
        Some(Budget {
            held_until: stored.held_until.filter(|&until| until > now_ms),
            tokens: stored.spec.rate.map(|r| r.tokens.saturating_sub(stored.used)),
            idle: stored.window.is_empty(),
            per_ms: stored.spec.rate.map_or(0, |r| r.per_ms as i64),
            slots: stored.spec.concurrency.map(|c| c.saturating_sub(running)),
            next_token: stored.next_token(),
        })
    }

    /// Records what a claim took under limit `name`: `jobs` jobs costing `tokens` in all. A
    /// claim within a hundredth of the window after the newest entry joins it, moved to the
    /// later time (those tokens come back a little late, never early), so a window holds about
    /// a hundred entries at most whatever the rate of claims.
    pub fn took(&mut self, name: &Arc<str>, jobs: u64, tokens: u64, now_ms: i64) {
        *self.running.entry(name.clone()).or_default() += jobs;
        let Some(stored) = self.limits.get_mut(&**name) else { return };
        let Some(rate) = stored.spec.rate else { return };
        let slot = rate.per_ms as i64 / WINDOW_SLOTS;
        match stored.window.back_mut() {
            Some((at, taken)) if *at >= now_ms - slot => {
                *at = now_ms.max(*at);
                *taken += tokens;
            }
            _ => stored.window.push_back((now_ms, tokens)),
        }
        stored.used += tokens;
    }

    /// An attempt under `limits` ended: their running counts go down.
    pub fn ended(&mut self, limits: &[Arc<str>]) {
        for name in limits {
            if let Some(running) = self.running.get_mut(name) {
                *running = running.saturating_sub(1);
                if *running == 0 {
                    self.running.remove(name);
                }
            }
        }
    }

    pub fn put(&mut self, name: &str, spec: LimitSpec, now: DateTime<Utc>) -> (Limit, bool) {
        let created = match self.limits.get_mut(name) {
            Some(stored) => {
                stored.spec = spec;
                stored.updated_at = now;
                false
            }
            None => {
                let stored = Stored {
                    spec,
                    created_at: now,
                    updated_at: now,
                    held_until: None,
                    window: VecDeque::new(),
                    used: 0,
                };
                self.limits.insert(name.to_owned(), stored);
                true
            }
        };
        (self.get(name, now).expect("just stored"), created)
    }

    pub fn get(&mut self, name: &str, now: DateTime<Utc>) -> Option<Limit> {
        let now_ms = now.timestamp_millis();
        let running = self.running.get(name).copied().unwrap_or(0);
        let stored = self.limits.get_mut(name)?;
        stored.slide(now_ms);
        let time = |ms: i64| DateTime::from_timestamp_millis(ms);
        Some(Limit {
            name: name.to_owned(),
            spec: stored.spec,
            state: LimitState {
                tokens_left: stored.spec.rate.map(|r| r.tokens.saturating_sub(stored.used)),
                running,
                next_token_at: stored.next_token().and_then(time),
                held_until: stored.held_until.filter(|&until| until > now_ms).and_then(time),
            },
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        })
    }

    pub fn list(&mut self, now: DateTime<Utc>) -> Vec<Limit> {
        let names: Vec<String> = self.limits.keys().cloned().collect();
        names.iter().filter_map(|name| self.get(name, now)).collect()
    }

    pub fn delete(&mut self, name: &str) -> bool {
        self.limits.remove(name).is_some()
    }

    pub fn hold(&mut self, name: &str, until: DateTime<Utc>) -> Result<(), QueueError> {
        let stored =
            self.limits.get_mut(name).ok_or_else(|| QueueError::LimitNotFound(name.to_owned()))?;
        let until = until.timestamp_millis();
        stored.held_until = Some(stored.held_until.map_or(until, |held| held.max(until)));
        Ok(())
    }
}
