//! The instance registry and takeovers: the types crossing [`super::QueueBackend`] for them.
//!
//! Every instance heartbeats its [`InstanceInfo`] into the backend it shares with the others,
//! every [`HEARTBEAT_EVERY`]; one unseen for [`GONE_AFTER`] is gone. The registry is what
//! keeps names unique (a heartbeat does not take a name another live run holds:
//! [`Registration::Held`]) and what tells a restarted instance that its predecessor died, so it
//! takes that run's attempts back at once ([`TakeoverCause::InstanceRestarted`]) instead of
//! waiting for their leases ([`TakeoverCause::LeaseExpired`]). Both kinds of takeover are
//! reported per attempt ([`Takeover`], in [`super::Changes::taken_over`]) and counted in the
//! backend ([`TakeoverCounts`]), so on a shared backend the counts are the cluster's.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::JobId;

/// How often an instance heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// An instance unseen for this long (3 heartbeats) is gone: no longer listed, and its name is
/// free.
pub const GONE_AFTER: Duration = Duration::from_secs(3);

/// A gone instance's entry is removed from the registry after this long: longer than any
/// lease (at most an hour), so whatever it ran was taken back by then.
pub const PRUNE_AFTER: Duration = Duration::from_secs(3_600);

/// One instance as its latest heartbeat described it (`GET /v1/instances` lists them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct InstanceInfo {
    /// Its name (`JOBYARD_INSTANCE`, or the host name); its workers are `<name>/w<N>`.
    pub name: String,
    /// The run that holds the name: a new one per start, so a restart is told from the
    /// instance before it.
    pub run_id: String,
    /// The jobyard version it runs.
    pub version: String,
    /// When this run started.
    pub started_at: DateTime<Utc>,
    /// Its latest heartbeat.
    pub last_seen: DateTime<Utc>,
    /// The kinds it runs (none when it runs no jobs: `JOBYARD_CONCURRENCY=0`).
    pub kinds: Vec<String>,
    /// Its worker slots, busy and in all.
    pub workers: InstanceWorkers,
    /// True once its shutdown began: it takes no new jobs.
    pub draining: bool,
}

/// Busy and total worker slots of an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct InstanceWorkers {
    /// Slots running an attempt.
    pub busy: usize,
    /// Slots in all (`JOBYARD_CONCURRENCY`).
    pub total: usize,
}

/// What a heartbeat did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Written. `replaced` is the entry of another run that held the name until now: gone, or
    /// the run the heartbeat was allowed to displace.
    Recorded {
        /// The entry of the run that held the name before, when it was another run.
        replaced: Option<InstanceInfo>,
    },
    /// Nothing written: another run holds the name and was seen within [`GONE_AFTER`].
    Held(InstanceInfo),
}

/// Why a running attempt was taken from its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverCause {
    /// Its lease ran out: its worker stopped renewing it (any instance's periodic step).
    LeaseExpired,
    /// Its instance restarted under the same name (the restarted instance, at start).
    InstanceRestarted,
}

impl TakeoverCause {
    /// `lease_expired` or `instance_restarted`, as stats and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            TakeoverCause::LeaseExpired => "lease_expired",
            TakeoverCause::InstanceRestarted => "instance_restarted",
        }
    }
}

impl fmt::Display for TakeoverCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A running attempt taken from a worker that is gone: the attempt counted as failed, the job
/// requeued (or `failed` with no attempts left, or `cancelled` when its cancel was requested).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: Arc<str>,
    /// The worker the attempt ran on (`<instance>/w<N>`).
    pub worker: String,
    /// Why it was taken.
    pub cause: TakeoverCause,
}

/// Attempts taken from their workers since the backend's data began, per cause (`/v1/stats`
/// shows them as `takeovers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TakeoverCounts {
    /// Taken because their lease ran out.
    pub lease_expired: u64,
    /// Taken by their instance restarted under its name.
    pub instance_restarted: u64,
}

impl TakeoverCounts {
    /// Counts `n` more attempts taken for `cause`.
    pub fn add(&mut self, cause: TakeoverCause, n: u64) {
        match cause {
            TakeoverCause::LeaseExpired => self.lease_expired += n,
            TakeoverCause::InstanceRestarted => self.instance_restarted += n,
        }
    }
}

/// The error of an attempt its instance took back after a restart (and the history entry's).
pub fn restarted_error(name: &str) -> String {
    format!("instance {name} restarted")
}

/// The start of the names of every worker of instance `name`.
pub fn worker_prefix(name: &str) -> String {
    format!("{name}/")
}
