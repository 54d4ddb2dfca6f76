//! Flow control: the limits jobs name (a rate, a concurrency, or both), fair share between the
//! groups of a queue, and paused queues. The types that cross the backend trait, and the pieces
//! of the claim order both backends follow (the memory store runs them from here; the Redis
//! claim script mirrors them, see `redis/lua/claim.lua`).
//!
//! # The claim order
//! A claim takes, slot after slot, the first job that may run now:
//! 1. highest priority first;
//! 2. within a priority, each queue takes turns between its groups (weighted fair queuing:
//!    a group's *pass* grows by `1 / weight` each time it is served, and the group with the
//!    lowest pass goes next; a group that was idle re-enters at the queue's current pass, so
//!    waiting builds no credit), then the oldest job of that group;
//! 3. across queues, the oldest job first.
//!
//! Ready jobs are kept in *lanes*: one per queue, kind, group, set of limits and cost. Every job
//! of a lane is held or let through by the same limits, so a claim checks a lane, not each job:
//! a lane whose limits say no is passed over whole, whatever it holds. That is why a claim never
//! waits behind throttled jobs, and costs the same with ten or a hundred thousand of them.
//!
//! # Rates are sliding windows
//! A rate of `tokens` per `per_ms` lets at most `tokens` tokens be taken in *any* window of
//! `per_ms` milliseconds: each token taken comes back `per_ms` after it was taken. A token bucket
//! refilled continuously would let twice as many through around a window's edge (a full bucket
//! spent at once, then refilled during the next `per_ms`), which is what an upstream counting its
//! own windows refuses with a 429. The window is a log of what each claim took (one entry per
//! claim and limit, not per job), so it costs a claim one entry whatever it takes.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Claimed, StateCounts};
use crate::job::spec::{validate_flow_name, SpecError};

/// Most tokens a rate may hold.
pub const MAX_TOKENS: u64 = 1_000_000_000;
/// Longest window of a rate: one year, in milliseconds.
pub const MAX_WINDOW_MS: u64 = 365 * 86_400_000;
/// Highest concurrency a limit may allow.
pub const MAX_CONCURRENCY: u64 = 1_000_000;
/// Highest weight of a group.
pub const MAX_WEIGHT: u32 = 1_000;
/// The longest a limit is held at once: a hold further ahead (a reset misread, an upstream's
/// error) is cut to this, so that no limit is held for good by mistake.
pub const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(86_400);

/// At most `tokens` tokens taken in any window of `per_ms` milliseconds (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Tokens a window allows (1 to 1 000 000 000). A job takes its `cost` of them.
    #[cfg_attr(feature = "server", schema(minimum = 1, maximum = 1_000_000_000))]
    pub tokens: u64,
    /// The window's length in milliseconds (1 up to one year).
    #[cfg_attr(feature = "server", schema(minimum = 1, maximum = 31_536_000_000_u64))]
    pub per_ms: u64,
}

/// What a limit allows: a rate, a concurrency, or both (at least one).
///
/// ```
/// use jobyard::queue::flow::{LimitSpec, Rate};
///
/// // GitHub's 5 000 requests an hour per token, and at most 4 calls in flight:
/// let spec: LimitSpec = serde_json::from_str(
///     r#"{"rate": {"tokens": 5000, "per_ms": 3600000}, "concurrency": 4}"#,
/// )?;
/// assert_eq!(spec.rate, Some(Rate { tokens: 5000, per_ms: 3_600_000 }));
/// assert!(spec.validate().is_ok());
/// assert!(LimitSpec::default().validate().is_err(), "a limit must limit something");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Tokens per window, taken by each job's `cost`.
    #[serde(
        default,
        deserialize_with = "crate::job::non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub rate: Option<Rate>,
    /// Most jobs under the limit running at once, on every instance together.
    #[serde(
        default,
        deserialize_with = "crate::job::non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false, minimum = 1, maximum = 1_000_000))]
    pub concurrency: Option<u64>,
}

impl LimitSpec {
    /// Checks the bounds, naming the field at fault.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.rate.is_none() && self.concurrency.is_none() {
            return Err(SpecError::invalid("rate", "a limit needs a rate, a concurrency or both"));
        }
        if let Some(rate) = self.rate {
            if !(1..=MAX_TOKENS).contains(&rate.tokens) {
                return Err(SpecError::invalid(
                    "rate.tokens",
                    format!("rate.tokens must be between 1 and {MAX_TOKENS}"),
                ));
            }
            if !(1..=MAX_WINDOW_MS).contains(&rate.per_ms) {
                return Err(SpecError::invalid(
                    "rate.per_ms",
                    format!("rate.per_ms must be between 1 and {MAX_WINDOW_MS} (one year)"),
                ));
            }
        }
        if let Some(concurrency) = self.concurrency {
            if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
                return Err(SpecError::invalid(
                    "concurrency",
                    format!("concurrency must be between 1 and {MAX_CONCURRENCY}"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks the name of a limit (as in a job's `limits`).
pub fn validate_limit_name(name: &str) -> Result<(), SpecError> {
    validate_flow_name("name", name)
}

/// Where a limit stands now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct LimitState {
    /// Tokens that may be taken now (`None` without a rate).
    pub tokens_left: Option<u64>,
    /// Jobs under the limit running now, on every instance.
    pub running: u64,
    /// When the oldest token taken in the window comes back (`None` when none is out).
    pub next_token_at: Option<DateTime<Utc>>,
    /// Until when an upstream said no more calls may be made (`None`, or past: not held).
    pub held_until: Option<DateTime<Utc>>,
}

/// A limit as stored, with its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Limit {
    /// Its name, as jobs name it.
    pub name: String,
    /// What it allows.
    #[serde(flatten)]
    #[cfg_attr(feature = "server", schema(value_type = LimitBounds))]
    pub spec: LimitSpec,
    /// Where it stands now.
    pub state: LimitState,
    /// When it was first created.
    pub created_at: DateTime<Utc>,
    /// When it was last replaced.
    pub updated_at: DateTime<Utc>,
}

/// What a [`Limit`] shows of its spec, for the OpenAPI document: [`LimitSpec`]'s fields without
/// its refusal of other fields, which in the document would refuse the fields of the limit
/// itself (a flattened schema is one part of an `allOf`).
#[cfg(feature = "server")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Never built: only its schema is used.
struct LimitBounds {
    /// Tokens per window, taken by each job's `cost`.
    rate: Option<Rate>,
    /// Most jobs under the limit running at once, on every instance together.
    concurrency: Option<u64>,
}

/// A queue, its counts and whether it is paused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// Jobs per state, and how many of the queued ones a limit holds.
    #[serde(flatten)]
    pub counts: StateCounts,
    /// A paused queue accepts submits and starts nothing until resumed.
    pub paused: bool,
}

/// The weight of a group: served `weight` times as often as a group of weight 1 when both
/// have jobs ready in the same queue and priority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct GroupWeight {
    /// The group's name, as jobs name it.
    pub name: String,
    /// 1 to 1 000 (a group without one weighs 1).
    pub weight: u32,
}

/// Checks a group's weight.
pub fn validate_weight(weight: u32) -> Result<(), SpecError> {
    if !(1..=MAX_WEIGHT).contains(&weight) {
        return Err(SpecError::invalid(
            "weight",
            format!("weight must be between 1 and {MAX_WEIGHT}"),
        ));
    }
    Ok(())
}

/// What a claim gave: the jobs, and when a limit that held some back frees next.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// The claimed jobs, in claim order.
    pub jobs: Vec<Claimed>,
    /// When a rate or hold that kept ready jobs back lets the next one through: an idle pool
    /// claims again then (a concurrency limit frees when a job ends, which wakes pools anyway).
    pub retry_at: Option<DateTime<Utc>>,
}

/// What one limit still allows within a claim.
#[derive(Clone, Copy, Debug, Default)]
pub struct Budget {
    /// Held until this time (ms), when in the future.
    pub held_until: Option<i64>,
    /// Tokens left in the window (`None`: no rate).
    pub tokens: Option<u64>,
    /// No token of the window is out: a job costing more than the rate's tokens (the rate was
    /// lowered after it was submitted) may run, alone in its window.
    pub idle: bool,
    /// The rate's window, in ms (0 without a rate).
    pub per_ms: i64,
    /// Jobs that may still start (`None`: no concurrency).
    pub slots: Option<u64>,
    /// When the oldest token out comes back (ms).
    pub next_token: Option<i64>,
}

impl Budget {
    /// Whether a job of `cost` may start now; when not, the time it may (ms; `None` when only
    /// a job's end frees it).
    pub fn allows(&self, cost: u64, now_ms: i64) -> Result<(), Option<i64>> {
        if let Some(until) = self.held_until.filter(|&until| until > now_ms) {
            return Err(Some(until));
        }
        if self.slots == Some(0) {
            return Err(None);
        }
        match self.tokens {
            Some(tokens) if tokens < cost && !self.idle => Err(self.next_token),
            _ => Ok(()),
        }
    }

    /// Takes what a job of `cost` uses, at `now_ms`.
    pub fn take(&mut self, cost: u64, now_ms: i64) {
        if let Some(tokens) = self.tokens.as_mut() {
            *tokens -= cost.min(*tokens);
            self.idle = false;
            // What is taken now comes back one window later.
            self.next_token = self.next_token.or(Some(now_ms + self.per_ms));
        }
        if let Some(slots) = self.slots.as_mut() {
            *slots = slots.saturating_sub(1);
        }
    }
}

/// The turns of groups within each queue (weighted fair queuing, see the module doc): each
/// group's pass and each queue's current pass.
#[derive(Debug, Default)]
pub struct Turns {
    pass: HashMap<(Arc<str>, Option<Arc<str>>), f64>,
    current: HashMap<Arc<str>, f64>,
}

impl Turns {
    /// The pass a group of `queue` would be served at now.
    pub fn pass(&self, queue: &Arc<str>, group: &Option<Arc<str>>) -> f64 {
        let current = self.current.get(queue).copied().unwrap_or(0.0);
        let key = (queue.clone(), group.clone());
        self.pass.get(&key).copied().unwrap_or(0.0).max(current)
    }

    /// Records that `group` of `queue` was served, at its pass, with `weight`.
    pub fn served(&mut self, queue: &Arc<str>, group: &Option<Arc<str>>, weight: u32) {
        let at = self.pass(queue, group);
        self.current.insert(queue.clone(), at);
        self.pass.insert((queue.clone(), group.clone()), at + 1.0 / f64::from(weight.max(1)));
    }

    /// Forgets the groups whose pass the queue's current pass has caught up with: they would
    /// re-enter there anyway, so the table holds only groups served ahead of the rest.
    pub fn prune(&mut self) {
        let current = &self.current;
        self.pass.retain(|(queue, _), pass| current.get(queue).is_some_and(|c| *pass > *c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_take_turns_by_weight() {
        let mut turns = Turns::default();
        let queue: Arc<str> = Arc::from("q");
        let (a, b) = (Some(Arc::from("a")), Some(Arc::from("b")));
        let mut served = String::new();
        for _ in 0..8 {
            let next = if turns.pass(&queue, &a) <= turns.pass(&queue, &b) { &a } else { &b };
            let weight = if next == &a { 3 } else { 1 };
            served.push_str(next.as_deref().unwrap());
            turns.served(&queue, next, weight);
        }
        assert_eq!(served.matches('a').count(), 6, "{served}");
        // An idle group comes back at the current pass, with no credit saved up.
        let c = Some(Arc::from("c"));
        assert_eq!(turns.pass(&queue, &c), turns.current[&queue]);
    }

    #[test]
    fn a_budget_says_when_it_frees() {
        let held = Budget { held_until: Some(500), ..Budget::default() };
        assert_eq!(held.allows(1, 100), Err(Some(500)));
        assert_eq!(held.allows(1, 500), Ok(()));
        let mut rate = Budget { tokens: Some(3), next_token: Some(900), ..Budget::default() };
        assert_eq!(rate.allows(3, 0), Ok(()));
        rate.take(3, 0);
        assert_eq!(rate.allows(1, 0), Err(Some(900)));
        let mut slots = Budget { slots: Some(1), ..Budget::default() };
        slots.take(1, 0);
        assert_eq!(slots.allows(1, 0), Err(None));
        // A rate lowered below a queued job's cost: it runs alone, once no token is out.
        let mut lowered =
            Budget { tokens: Some(3), idle: true, per_ms: 1_000, ..Budget::default() };
        assert_eq!(lowered.allows(5, 0), Ok(()));
        lowered.take(5, 10);
        assert_eq!(lowered.allows(1, 20), Err(Some(1_010)), "back a window after it was taken");
    }
}
