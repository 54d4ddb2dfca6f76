//! Every Redis key and channel jobyard uses, built in one place under `JOBYARD_REDIS_PREFIX`.
//!
//! # Key layout (`<p>` is the prefix)
//!
//! The cache:
//! - `<p>:cache:v:<key>`: a cache entry (header + value), with the entry's TTL.
//! - `<p>:cache:t:<tag>`: sorted set of the cache keys naming a tag, scored by their expiry.
//! - `<p>:cache:events`: pub/sub channel of invalidations.
//!
//! Shared documents (`documents.rs`), without TTL so that no eviction policy drops them:
//! - `<p>:docs:meta`: hash of the user metadata documents, name → JSON.
//! - `<p>:docs:tools`: hash of the tool configurations, tool name → JSON.
//! - `<p>:docs:tool-state`: hash of what each tool's refreshes found out, tool name → JSON.
//!
//! The job queue: every key shares the hash tag `{q}`, so all of them live in one Redis Cluster
//! slot. They must: one script touches jobs of several queues and kinds at once (dependencies
//! cross queues, a claim spans every kind an instance runs, idempotency keys are global). No
//! queue key carries a TTL but the history of finished jobs (figures for a chart), so a
//! `volatile-*` eviction policy can only evict cache entries and those figures.
//! - `<p>:{q}:j:<id>`: a job record (string; format in `queue/redis/record.rs`).
//! - `<p>:{q}:deps:<id>`: set of the `waiting` jobs that depend on job `<id>`.
//! - `<p>:{q}:idem:<key>`: the id of the job that holds an idempotency key.
//! - `<p>:{q}:fresh:<queue>:<kind>:<priority>`: list of the jobs a bulk submit queued, per
//!   queue, kind and priority, in arrival order. Most jobs are queued this way, and appending
//!   to a list and trimming its head cost Redis a fraction of a sorted set's insert and removal.
//!   `<p>:{q}:rl`: set of the fresh lists that exist, as `<queue>:<kind>:<priority>` (a claim
//!   that finds one empty drops it; the next job in it names it again).
//!   `<p>:{q}:skip:<queue>:<kind>:<priority>`: ids of a fresh list whose jobs were cancelled
//!   while they waited there; a claim passes over them (an id leaves a list only from its head).
//! - `<p>:{q}:ready:<queue>:<kind>`: sorted set of the other `queued` jobs of a queue and kind
//!   (retried, due, released by their dependencies, submitted one by one with dependencies or
//!   idempotency keys), scored `(1000 - priority) * 2^42 + id milliseconds`: highest priority
//!   first, then oldest. A claim merges the fresh lists and ready sets by priority, then id.
//! - `<p>:{q}:rq`: set of the ready sets that exist, as `<queue>:<kind>` (claims read it, and
//!   drop those they find empty).
//! - `<p>:{q}:delayed`: sorted set of `scheduled` jobs by `run_at` (ms).
//! - `<p>:{q}:run`: hash of the running attempts, job id → `<token>|<started ms>|<worker>`
//!   (plus one field `~`, which keeps it a hash table: see `lua/lib.lua`).
//!   A running job's record stays as it was when claimed (`queued`) until its attempt ends.
//! - `<p>:{q}:leases`: sorted set of lease tokens by expiry (ms); one token per claim call.
//! - `<p>:{q}:lb:<token>`: set of the jobs claimed under a lease token.
//! - `<p>:{q}:cx`: set of running jobs whose cancel was requested.
//! - `<p>:{q}:prog`: hash of the latest progress report of each running job.
//! - `<p>:{q}:parents`: set of jobs that have `waiting` dependents.
//! - `<p>:{q}:settle`: list of jobs that ended with dependents still to settle, oldest first,
//!   as `<id> <status code>` (each call settles a bounded number; the rest wait in `deps:<id>`).
//! - `<p>:{q}:done:<queue>`: sorted set of batches of a queue's terminal jobs, by finish time
//!   (retention); `<p>:{q}:db:<batch>` lists a batch's jobs, `<p>:{q}:dseq` numbers batches.
//! - `<p>:{q}:lt:<queue>`: the index of every job of a queue, cut in time slices: the sorted set
//!   of the slices that hold jobs, each scored by its number (a job's slice is its id's
//!   milliseconds divided by `SLICE_MS`: ids are UUIDv7s, so a slice's ids are created within
//!   the same 100 ms, whichever instance created them). `<p>:{q}:lj:<queue>:<slice>` holds a
//!   slice's ids end to end (a string of 36-byte ids, in arrival order), `<p>:{q}:ln:<queue>`
//!   counts them per slice; a slice's ids go when its last job is purged. One `APPEND` per
//!   submit costs Redis a fraction of keeping every id in one sorted set, and listings still
//!   walk the index newest first, slice by slice.
//! - `<p>:{q}:ls:<status>:<queue>`: the same for `waiting`, `scheduled`, `failed`, `cancelled`.
//! - `<p>:{q}:counts`: hash `<queue>:<status>` → number of jobs.
//! - `<p>:{q}:queues`, `<p>:{q}:kinds`: sets of every queue and kind that held jobs.
//! - `<p>:{q}:tok`: counter handing out lease tokens.
//! - `<p>:{q}:wake`: list holding at most one marker; idle instances block on it.
//! - `<p>:{q}:watch`: sorted set of jobs a long poll waits on, scored by the wait's deadline.
//! - `<p>:{q}:events`: pub/sub channel: `c <id>` (cancel requested), `f <id>...` (finished).
//! - `<p>:{q}:lane:<queue>|<group>|<limits>|<cost>|<kind>`: sorted set of the `queued` jobs of
//!   a queue and kind that name a group or limits, one per group, set of limits (comma-
//!   separated, as the job named them) and cost (1 for jobs under no limit), scored as the
//!   ready sets. Every job of a lane is held back or let through by the same limits, so a claim
//!   checks a lane once, never each job behind a throttled one. `<p>:{q}:lanes`: set of the
//!   lanes that exist, by their names after `lane:` (claims read it and drop the empty ones).
//!   As for jobs without flow, what a bulk submit queued waits in lists instead:
//!   `<p>:{q}:flane:<priority>|<lane>` in arrival order, registered in `<p>:{q}:flanes` as
//!   `<priority>|<lane>`, with `<p>:{q}:fskip:<priority>|<lane>` the ids cancelled there.
//! - `<p>:{q}:limits`: set of the names of the limits; `<p>:{q}:lim:<name>`: hash of one limit
//!   (`tokens`, `per_ms`, `concurrency` as given, `held` until when in ms, `used` tokens in
//!   its window, `created`, `updated`); `<p>:{q}:lw:<name>`: list of what claims took under a
//!   rate, oldest first, as `<ms>:<tokens>` (one entry per claim); `<p>:{q}:limrun`: hash of
//!   the jobs running under each limit name (kept when a limit is deleted, since its jobs still
//!   run).
//! - `<p>:{q}:paused`: set of the paused queues.
//! - `<p>:{q}:gw`: hash of group weights other than 1; `<p>:{q}:gp:<queue>`: hash of the turns of
//!   a queue's groups (each group's pass, `~` the queue's current pass; `''` is jobs without a
//!   group).
//! - `<p>:{q}:sched:<name>`: hash of one schedule (`spec`, `created`, `next`, `last`,
//!   `last_job`); `<p>:{q}:schedules`: set of schedule names.
//! - `<p>:{q}:instances`: hash of the instance registry, name → `<run id>|<entry as JSON>`
//!   (written by each heartbeat, removed at a clean shutdown).
//!   `<p>:{q}:alive`: sorted set of instance names by last heartbeat (ms). An instance unseen
//!   for 3 heartbeats is gone; heartbeats remove the entries of instances gone for an hour
//!   (no TTL, as on every queue key: the registry must not be evicted under `volatile-*`).
//! - `<p>:{q}:takeovers`: hash of running attempts taken from workers that are gone, per cause
//!   (`lease_expired`, `instance_restarted`), counted by the scripts that take them.
//! - `<p>:{q}:hist:<hour>`: hash of the jobs finished per 10-second bucket during one hour
//!   (hours since the epoch), `s:<bucket>` succeeded and `f:<bucket>` failed (buckets are
//!   seconds since the epoch divided by 10), which each instance adds its counts to every
//!   couple of seconds (`queue/history.rs`). The one queue key with a TTL (two hours after its
//!   last write): it is figures for a chart, the last hour of which is read, and losing it to
//!   eviction loses no job.

/// Builds the keys of one deployment.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The cache's keys under `prefix` (`JOBYARD_REDIS_PREFIX`).
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.to_owned() }
    }

    /// A cache entry's value (header + bytes), with the entry's TTL.
    pub fn cache_value(&self, key: &str) -> String {
        format!("{}:cache:v:{key}", self.prefix)
    }

    /// The start of every cache value key; the cache key follows it.
    pub fn cache_value_prefix(&self) -> String {
        format!("{}:cache:v:", self.prefix)
    }

    /// A `SCAN MATCH` pattern for the values whose cache keys start with `prefix`.
    pub fn cache_value_pattern(&self, prefix: &str) -> String {
        format!("{}{}*", glob_escape(&self.cache_value_prefix()), glob_escape(prefix))
    }

    /// The set of cache keys that name `tag`.
    pub fn cache_tag(&self, tag: &str) -> String {
        format!("{}:cache:t:{tag}", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every tag set.
    pub fn cache_tag_pattern(&self) -> String {
        format!("{}*", glob_escape(&format!("{}:cache:t:", self.prefix)))
    }

    /// The pub/sub channel of cache invalidations.
    pub fn cache_events(&self) -> String {
        format!("{}:cache:events", self.prefix)
    }

    /// The hash of the shared documents of namespace `ns` (`meta`, `tools`, `tool-state`),
    /// name to JSON.
    pub fn documents(&self, ns: &str) -> String {
        format!("{}:docs:{ns}", self.prefix)
    }
}

/// The width of the time slices that cut the index of every job of a queue, in milliseconds
/// (`SLICE_MS` in `lua/lib.lua` is the same).
pub const SLICE_MS: u64 = 100;

/// Builds the job queue's keys (see the module doc); the Lua scripts build the same keys from
/// [`QueueKeys::base`].
#[derive(Clone, Debug)]
pub struct QueueKeys {
    base: String,
}

impl QueueKeys {
    /// The job queue's keys under `prefix` (`JOBYARD_REDIS_PREFIX`), all in the hash tag `{q}`.
    pub fn new(prefix: &str) -> Self {
        QueueKeys { base: format!("{prefix}:{{q}}:") }
    }

    /// The start of every queue key (`<p>:{q}:`), passed to each script as `KEYS[1]`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The record of job `id`.
    pub fn job(&self, id: &str) -> String {
        format!("{}j:{id}", self.base)
    }

    /// The queued jobs of one queue and kind.
    pub fn ready(&self, queue: &str, kind: &str) -> String {
        format!("{}ready:{queue}:{kind}", self.base)
    }

    /// The registry of ready sets, as `<queue>:<kind>` (claims read it).
    pub fn ready_sets(&self) -> String {
        format!("{}rq", self.base)
    }

    /// The jobs a bulk submit queued in one queue, kind and priority, in arrival order.
    pub fn fresh(&self, queue: &str, kind: &str, priority: i32) -> String {
        format!("{}fresh:{queue}:{kind}:{priority}", self.base)
    }

    /// The registry of fresh lists, as `<queue>:<kind>:<priority>` (claims read it).
    pub fn fresh_lists(&self) -> String {
        format!("{}rl", self.base)
    }

    /// The ids of a fresh list whose jobs were cancelled while they waited there.
    pub fn skips(&self, queue: &str, kind: &str, priority: i32) -> String {
        format!("{}skip:{queue}:{kind}:{priority}", self.base)
    }

    /// The jobs claimed under a lease token.
    pub fn lease(&self, token: u64) -> String {
        format!("{}lb:{token}", self.base)
    }

    /// The `scheduled` jobs, scored by `run_at` in milliseconds.
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.base)
    }

    /// The lease tokens, scored by expiry in milliseconds.
    pub fn leases(&self) -> String {
        format!("{}leases", self.base)
    }

    /// Running attempts: job id → `<token>|<started ms>|<worker>`.
    pub fn run(&self) -> String {
        format!("{}run", self.base)
    }

    /// Running jobs whose cancel was requested.
    pub fn cancels(&self) -> String {
        format!("{}cx", self.base)
    }

    /// Latest progress reports of running jobs.
    pub fn progress(&self) -> String {
        format!("{}prog", self.base)
    }

    /// The time slices that hold jobs of `queue`, each scored by its number.
    pub fn slices(&self, queue: &str) -> String {
        format!("{}lt:{queue}", self.base)
    }

    /// The ids of the jobs of `queue` created in time slice `slice`.
    pub fn slice(&self, queue: &str, slice: u64) -> String {
        format!("{}lj:{queue}:{slice}", self.base)
    }

    /// How many jobs of each time slice of `queue` are still stored.
    pub fn slice_counts(&self, queue: &str) -> String {
        format!("{}ln:{queue}", self.base)
    }

    /// The jobs of `queue` in `status` (kept for `waiting`, `scheduled`, `failed`, `cancelled`).
    pub fn listing(&self, queue: &str, status: &str) -> String {
        format!("{}ls:{status}:{queue}", self.base)
    }

    /// The job counts, `<queue>:<status>` to a number.
    pub fn counts(&self) -> String {
        format!("{}counts", self.base)
    }

    /// Every queue that held jobs.
    pub fn queues(&self) -> String {
        format!("{}queues", self.base)
    }

    /// Every kind that held jobs.
    pub fn kinds(&self) -> String {
        format!("{}kinds", self.base)
    }

    /// The list idle instances block on; it holds at most one marker.
    pub fn wake(&self) -> String {
        format!("{}wake", self.base)
    }

    /// The jobs long polls wait on, scored by the waits' deadlines.
    pub fn watch(&self) -> String {
        format!("{}watch", self.base)
    }

    /// The pub/sub channel of job changes for the event stream: published to only while an
    /// instance subscribes to it (some reader watches the dashboard).
    pub fn feed(&self) -> String {
        format!("{}feed", self.base)
    }

    /// The pub/sub channel of requested cancels and finished jobs.
    pub fn events(&self) -> String {
        format!("{}events", self.base)
    }

    /// The queued jobs of one lane (`member` as [`lane_member`] makes it).
    pub fn lane(&self, member: &str) -> String {
        format!("{}lane:{member}", self.base)
    }

    /// The registry of lanes, by their members.
    pub fn lanes(&self) -> String {
        format!("{}lanes", self.base)
    }

    /// The jobs a bulk submit queued in lane `member` at `priority`, in arrival order.
    pub fn fresh_lane(&self, priority: i32, member: &str) -> String {
        format!("{}flane:{priority}|{member}", self.base)
    }

    /// The ids of a fresh lane whose jobs were cancelled while they waited there.
    pub fn fresh_lane_skips(&self, priority: i32, member: &str) -> String {
        format!("{}fskip:{priority}|{member}", self.base)
    }

    /// The registry of fresh lanes, as `<priority>|<member>`.
    pub fn fresh_lanes(&self) -> String {
        format!("{}flanes", self.base)
    }

    /// The names of every limit.
    pub fn limit_names(&self) -> String {
        format!("{}limits", self.base)
    }

    /// The hash of limit `name`.
    pub fn limit(&self, name: &str) -> String {
        format!("{}lim:{name}", self.base)
    }

    /// What claims took under limit `name`'s rate, oldest first.
    pub fn limit_window(&self, name: &str) -> String {
        format!("{}lw:{name}", self.base)
    }

    /// Jobs running under each limit name.
    pub fn limits_running(&self) -> String {
        format!("{}limrun", self.base)
    }

    /// The paused queues.
    pub fn paused(&self) -> String {
        format!("{}paused", self.base)
    }

    /// Group weights other than 1.
    pub fn group_weights(&self) -> String {
        format!("{}gw", self.base)
    }

    /// The hash of schedule `name`.
    pub fn schedule(&self, name: &str) -> String {
        format!("{}sched:{name}", self.base)
    }

    /// The set of every schedule name.
    pub fn schedules(&self) -> String {
        format!("{}schedules", self.base)
    }

    /// The instance registry: name → `<run id>|<entry as JSON>`.
    pub fn instances(&self) -> String {
        format!("{}instances", self.base)
    }

    /// Instance names by last heartbeat, in milliseconds.
    pub fn alive(&self) -> String {
        format!("{}alive", self.base)
    }

    /// Attempts taken over, per cause.
    pub fn takeovers(&self) -> String {
        format!("{}takeovers", self.base)
    }

    /// The set of the `waiting` jobs that depend on job `id`.
    pub fn dependents(&self, id: &str) -> String {
        format!("{}deps:{id}", self.base)
    }

    /// The jobs finished per bucket during `hour` (hours since the epoch).
    pub fn history(&self, hour: i64) -> String {
        format!("{}hist:{hour}", self.base)
    }
}

/// The name of the lane of jobs of `queue` and `kind` with flow section `flow`
/// (`<group>|<limits>`, non-empty) and `cost`: `<queue>|<group>|<limits>|<cost>|<kind>`, cost 1
/// when the job names no limit. `lua/lib.lua` builds the same (`lane_member`).
pub fn lane_member(queue: &str, kind: &str, flow: &str, cost: u32) -> String {
    let cost = if flow.ends_with('|') { 1 } else { cost };
    format!("{queue}|{flow}|{cost}|{kind}")
}

/// Escapes the glob metacharacters of `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = Keys::new("jy-test");
        assert_eq!(keys.cache_value("tool:github"), "jy-test:cache:v:tool:github");
        assert_eq!(keys.cache_tag("github"), "jy-test:cache:t:github");
        assert_eq!(keys.cache_events(), "jy-test:cache:events");
    }

    #[test]
    fn queue_keys_share_one_hash_tag_under_the_prefix() {
        let keys = QueueKeys::new("jy");
        assert_eq!(keys.base(), "jy:{q}:");
        assert_eq!(keys.job("abc"), "jy:{q}:j:abc");
        assert_eq!(keys.ready("mail", "send_email"), "jy:{q}:ready:mail:send_email");
        assert_eq!(keys.listing("default", "failed"), "jy:{q}:ls:failed:default");
    }

    #[test]
    fn patterns_escape_glob_characters() {
        let keys = Keys::new("p*");
        assert_eq!(keys.cache_value_pattern("a?[b]"), r"p\*:cache:v:a\?\[b\]*");
    }
}
