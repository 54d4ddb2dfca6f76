//! What a tool's refreshes found out, kept in the shared documents (Redis when configured) so
//! that every instance shows and uses the same: the upstream's rate-limit budget, the last
//! outcome, the upstream validators of the cached data, and counters of upstream requests by
//! outcome. Only the refresh job writes it, and at most one refresh of a tool runs at once
//! (its limit's concurrency is 1), so a read-modify-write does not lose updates.
//!
//! [`Served`] counts what this instance served from the cache: every instance counts its own
//! reads, which no shared write per read should cost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::JobId;

/// The shared state of one tool.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolState {
    /// Bumped by every refresh job that ended (succeeded, or failed for good): the refresh
    /// trigger's idempotency key names it, so every trigger that saw the same state shares one
    /// job, retries included.
    pub generation: u64,
    /// When the latest refresh attempt ended, whatever its outcome.
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// When the latest refresh got data or a 304 from the upstream.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The job of the latest refresh attempt.
    #[cfg_attr(feature = "server", schema(value_type = Option<String>))]
    pub last_job_id: Option<JobId>,
    /// The upstream's status in the latest refresh, when it answered.
    pub last_status: Option<u16>,
    /// What went wrong in the latest refresh; `None` once one succeeds again.
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// How long the latest upstream request took, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// What the upstream said of its rate limit.
    pub rate_limit: Budget,
    /// The upstream's validators of the cached data.
    pub upstream: Validators,
    /// Upstream requests by outcome, since the tool was created.
    pub requests: Outcomes,
}

/// The upstream's rate-limit budget as last seen.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Budget {
    /// Requests left in its window (`X-RateLimit-Remaining`, `RateLimit-Remaining`).
    pub remaining: Option<u64>,
    /// When the window resets.
    pub reset_at: Option<DateTime<Utc>>,
    /// Until when the tool's limit was held because the budget ran out (or a 429 came).
    pub held_until: Option<DateTime<Utc>>,
}

/// The upstream's `ETag` and `Last-Modified` of the cached data, sent back as `If-None-Match`
/// and `If-Modified-Since`, and which cached bytes they describe (our ETag of them): when the
/// cache entry is gone or holds other bytes, they are not sent, so a 304 always has a body to
/// keep.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Validators {
    /// The upstream's `ETag`.
    pub etag: Option<String>,
    /// The upstream's `Last-Modified`.
    pub last_modified: Option<String>,
    /// Our ETag of the cached bytes these validators belong to.
    pub for_etag: Option<String>,
}

/// Upstream requests by outcome.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outcomes {
    /// 2xx answers: new data stored.
    pub ok: u64,
    /// 304 answers: the cached data confirmed.
    pub not_modified: u64,
    /// 429 answers, and 403 with nothing remaining.
    pub rate_limited: u64,
    /// Every other failure: other statuses, connection errors, timeouts.
    pub errors: u64,
}

/// What this instance served of one tool.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ServedCounts {
    /// Reads answered with fresh data (200 or 304).
    pub fresh: u64,
    /// Reads answered with stale data (a refresh was triggered).
    pub stale: u64,
    /// Reads that found nothing cached (a refresh was triggered and waited for).
    pub misses: u64,
    /// Of the reads above, those answered 304.
    pub not_modified: u64,
}

/// How a read was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// From fresh data.
    Fresh,
    /// From stale data.
    Stale,
    /// Nothing was cached.
    Miss,
}

/// This instance's serving counters, by tool.
#[derive(Clone, Default)]
pub struct ServedCounters(Arc<Mutex<HashMap<String, ServedCounts>>>);

impl ServedCounters {
    /// Counts one read of `tool`.
    pub fn count(&self, tool: &str, served: Served, not_modified: bool) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let counts = match all.get_mut(tool) {
            Some(counts) => counts,
            None => all.entry(tool.to_owned()).or_default(),
        };
        match served {
            Served::Fresh => counts.fresh += 1,
            Served::Stale => counts.stale += 1,
            Served::Miss => counts.misses += 1,
        }
        counts.not_modified += u64::from(not_modified);
    }

    /// The counts of `tool`.
    pub fn get(&self, tool: &str) -> ServedCounts {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.get(tool).copied().unwrap_or_default()
    }

    /// Forgets `tool` (deleted).
    pub fn forget(&self, tool: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(tool);
    }
}
