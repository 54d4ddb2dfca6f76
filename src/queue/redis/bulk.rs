//! The hot paths' writes, prepared in Rust: a batch's records and every index change they need
//! (the keys of `QueueKeys`, the scores, the counters), handed to the submit and complete scripts,
//! which check what must be checked atomically and apply the rest in bulk (`prepared` in
//! `lua/lib.lua`). Lua then does no work per job beyond the checks, which is most of what a job
//! costs Redis.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::record::ms;
use crate::job::{JobId, JobStatus, NewJob};
use crate::redis::{lane_member, QueueKeys, SLICE_MS};

/// Commands in the order the script runs them: name, key ('' for none), arguments.
#[derive(Default)]
pub(super) struct Prepared {
    commands: Vec<(&'static str, String, Vec<Vec<u8>>)>,
    /// Index of each command in `commands` per name and key, so arguments for one key gather
    /// in one command (looked up by `&str`: no key is copied to find its command).
    at: HashMap<&'static str, HashMap<String, usize>>,
    /// Deltas of the job counts, per queue and status (fields `<queue>:<status>`).
    counts: BTreeMap<String, [i64; JobStatus::ALL.len()]>,
    /// Other `HINCRBY`s: hash, field, delta.
    increments: Vec<(String, String, i64)>,
    /// Members added to sets by this batch (each once), per set.
    members: HashMap<String, HashSet<String>>,
}

impl Prepared {
    /// Commands whose first is the MSET of the records (the scripts find them there).
    pub fn with_records() -> Self {
        let mut prepared = Prepared::default();
        prepared.add::<0>("MSET", "", []);
        prepared
    }

    /// Whether the batch has a command `cmd` on `key` already.
    fn has(&self, cmd: &'static str, key: &str) -> bool {
        self.at.get(cmd).is_some_and(|by_key| by_key.contains_key(key))
    }

    /// Adds `args` to the command `cmd` on `key`.
    pub fn add<const N: usize>(&mut self, cmd: &'static str, key: &str, args: [Vec<u8>; N]) {
        let by_key = self.at.entry(cmd).or_default();
        let at = match by_key.get(key) {
            Some(&at) => at,
            None => {
                self.commands.push((cmd, key.to_owned(), Vec::new()));
                by_key.insert(key.to_owned(), self.commands.len() - 1);
                self.commands.len() - 1
            }
        };
        self.commands[at].2.extend(args);
    }

    /// Adds `args` to the command `cmd` on `key`, and names `key` in the set `registry` (as
    /// `name()`) when the batch first writes to it.
    fn add_registered<const N: usize>(
        &mut self,
        cmd: &'static str,
        key: &str,
        registry: &str,
        name: impl FnOnce() -> String,
        args: [Vec<u8>; N],
    ) {
        if !self.has(cmd, key) {
            self.add_member(registry, &name());
        }
        self.add(cmd, key, args);
    }

    /// Adds `member` to the set `key`, once per batch.
    pub fn add_member(&mut self, key: &str, member: &str) {
        if self.members.get(key).is_some_and(|set| set.contains(member)) {
            return;
        }
        self.members.entry(key.to_owned()).or_default().insert(member.to_owned());
        self.add("SADD", key, [text(member)]);
    }

    /// Counts `delta` jobs more in `status` of `queue`.
    pub fn count(&mut self, queue: &str, status: JobStatus, delta: i64) {
        let deltas = match self.counts.get_mut(queue) {
            Some(deltas) => deltas,
            None => self.counts.entry(queue.to_owned()).or_default(),
        };
        deltas[status.index()] += delta;
    }

    /// Adds `delta` to `field` of the hash `key`.
    pub fn increment(&mut self, key: String, field: String, delta: i64) {
        self.increments.push((key, field, delta));
    }

    /// Appends the commands to a script call: their number, then name, key, length, arguments.
    pub fn append_to(self, invocation: &mut super::scripts::Call<'_>, keys: &QueueKeys) {
        let counts = keys.counts();
        let increments: Vec<_> = (self.counts.into_iter())
            .flat_map(|(queue, deltas)| {
                let counts = &counts;
                (JobStatus::ALL.into_iter().zip(deltas)).map(move |(status, delta)| {
                    (counts.clone(), format!("{queue}:{status}"), delta)
                })
            })
            .chain(self.increments)
            .filter(|(_, _, delta)| *delta != 0)
            .collect();
        invocation.arg(self.commands.len() + increments.len());
        for (cmd, key, args) in self.commands {
            invocation.arg(cmd).arg(key).arg(args.len());
            for arg in args {
                invocation.arg(arg);
            }
        }
        for (key, field, delta) in increments {
            invocation.arg("HINCRBY").arg(key).arg(2).arg(field).arg(delta);
        }
    }

    /// Enters new job `id` in the index of `status` (`score` as for [`Prepared::enter`]):
    /// queued, at the end of its fresh list.
    pub fn enter_new(
        &mut self,
        keys: &QueueKeys,
        job: &NewJob,
        id: &str,
        status: JobStatus,
        score: u64,
    ) {
        let (queue, kind, priority) = (&*job.queue, &*job.kind, job.priority);
        let lane = lane_of(job);
        if status != JobStatus::Queued {
            return self.enter(keys, id, queue, kind, lane.as_deref(), status, score);
        }
        if let Some(lane) = lane {
            // Queued in its lane's fresh list (see `QueueKeys::fresh_lane`).
            let list = keys.fresh_lane(priority, &lane);
            let name = || format!("{priority}|{lane}");
            self.add_registered("RPUSH", &list, &keys.fresh_lanes(), name, [text(id)]);
            return;
        }
        let list = keys.fresh(queue, kind, priority);
        let name = || format!("{queue}:{kind}:{priority}");
        self.add_registered("RPUSH", &list, &keys.fresh_lists(), name, [text(id)]);
    }

    /// Enters job `id` in the index of `status` (`queued` or `scheduled`; terminal statuses
    /// are filed by the script), with the job's `ready_score` or `run_at`: a queued job in its
    /// `lane` when it has one, else in its ready set.
    #[allow(clippy::too_many_arguments)]
    pub fn enter(
        &mut self,
        keys: &QueueKeys,
        id: &str,
        queue: &str,
        kind: &str,
        lane: Option<&str>,
        status: JobStatus,
        score: u64,
    ) {
        match status {
            JobStatus::Queued if lane.is_some() => {
                let lane = lane.expect("checked");
                let (key, name) = (keys.lane(lane), || lane.to_owned());
                self.add_registered("ZADD", &key, &keys.lanes(), name, [num(score), text(id)]);
            }
            JobStatus::Queued => {
                let (set, name) = (keys.ready(queue, kind), || format!("{queue}:{kind}"));
                self.add_registered("ZADD", &set, &keys.ready_sets(), name, [num(score), text(id)]);
            }
            JobStatus::Scheduled => {
                self.add("ZADD", &keys.delayed(), [num(score), text(id)]);
                self.add("ZADD", &keys.listing(queue, "scheduled"), [text("0"), text(id)]);
            }
            JobStatus::Failed | JobStatus::Cancelled => {
                self.add("ZADD", &keys.listing(queue, status.as_str()), [text("0"), text(id)]);
            }
            _ => {}
        }
    }
}

/// What a submit or a completion changes, as its script reports it back.
#[derive(Default)]
pub(super) struct Effects {
    pub ready: usize,
    /// The earliest run_at of the jobs it schedules, in ms (0: none).
    pub due: u64,
}

impl Effects {
    pub fn note(&mut self, status: JobStatus, score: u64) {
        match status {
            JobStatus::Queued => self.ready += 1,
            JobStatus::Scheduled if self.due == 0 || score < self.due => self.due = score,
            _ => {}
        }
    }
}

pub(super) fn text(value: &str) -> Vec<u8> {
    value.as_bytes().to_vec()
}

pub(super) fn num(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// A new job's place in its index: its ready score when queued, its run_at when scheduled.
pub(super) fn new_score(job: &NewJob, status: JobStatus) -> u64 {
    match status {
        JobStatus::Scheduled => job.run_at.map_or(0, |at| ms(at) as u64),
        _ => ready_score(job.id, job.priority),
    }
}

/// A job's place among the ready: `(1000 - priority) * 2^42 + its id's milliseconds` (the
/// scripts compute the same), so the highest priority comes first, then the oldest id.
pub(super) fn ready_score(id: JobId, priority: i32) -> u64 {
    (1000 - priority.clamp(-1000, 1000)) as u64 * (1 << 42) + id_millis(id)
}

/// The millisecond timestamp of a job id (a UUIDv7's first 48 bits).
fn id_millis(id: JobId) -> u64 {
    let b = id.0.as_bytes();
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The time slice of the index of every job that holds job `id` (see `QueueKeys::slices`).
pub(super) fn slice_of(id: JobId) -> u64 {
    id_millis(id) / SLICE_MS
}

/// The lane of a job that names a group or limits (`None`: it has neither).
pub(super) fn lane_of(job: &NewJob) -> Option<String> {
    lane(&job.queue, &job.kind, job.group.as_deref(), &job.limits, job.cost)
}

/// The lane of jobs of `queue` and `kind` in `group` under `limits` costing `cost`.
pub(super) fn lane(
    queue: &str,
    kind: &str,
    group: Option<&str>,
    limits: &[std::sync::Arc<str>],
    cost: u32,
) -> Option<String> {
    if group.is_none() && limits.is_empty() {
        return None;
    }
    let flow = super::record::flow_text(group, limits);
    (!flow.is_empty()).then(|| lane_member(queue, kind, &flow, cost))
}

/// Appends the limit checks of a submit (see `lua/submit.lua`): each limit the jobs name, with
/// the highest cost among them.
pub(super) fn limit_checks(invocation: &mut super::scripts::Call<'_>, jobs: &[NewJob]) {
    let mut highest: BTreeMap<&str, u32> = BTreeMap::new();
    for job in jobs {
        for limit in job.limits.iter() {
            let cost = highest.entry(limit).or_default();
            *cost = (*cost).max(job.cost);
        }
    }
    invocation.arg(highest.len());
    for (limit, cost) in highest {
        invocation.arg(limit).arg(cost);
    }
}

/// The bulk submit of jobs without dependencies or idempotency keys.
pub(super) fn submit(
    invocation: &mut super::scripts::Call<'_>,
    keys: &QueueKeys,
    jobs: &[NewJob],
    now: DateTime<Utc>,
    max_queued: u64,
) {
    let mut added: BTreeMap<&str, usize> = BTreeMap::new();
    // The ids of each slice of each queue, end to end.
    let mut slices: BTreeMap<(&str, u64), (Vec<u8>, i64)> = BTreeMap::new();
    let mut prepared = Prepared::with_records();
    let mut effects = Effects::default();
    let (queues, kinds) = (keys.queues(), keys.kinds());
    for job in jobs {
        let id = job.id.to_string();
        let status = super::record::new_status(job, now);
        let score = new_score(job, status);
        prepared.add("MSET", "", [text(&keys.job(&id)), super::record::encode_new(job, now)]);
        prepared.enter_new(keys, job, &id, status, score);
        let ids = slices.entry((&job.queue, slice_of(job.id))).or_default();
        ids.0.extend_from_slice(id.as_bytes());
        ids.1 += 1;
        prepared.add_member(&queues, &job.queue);
        prepared.add_member(&kinds, &job.kind);
        prepared.count(&job.queue, status, 1);
        effects.note(status, score);
        *added.entry(&job.queue).or_default() += 1;
    }
    for ((queue, slice), (ids, n)) in slices {
        prepared.add("APPEND", &keys.slice(queue, slice), [ids]);
        prepared.add("ZADD", &keys.slices(queue), [num(slice), num(slice)]);
        prepared.increment(keys.slice_counts(queue), slice.to_string(), n);
    }
    let first = keys.job(&jobs[0].id.to_string());
    invocation.arg(ms(now) as i64).arg("B").arg(max_queued);
    limit_checks(invocation, jobs);
    invocation.arg(first).arg(effects.ready).arg(effects.due).arg(added.len());
    for (queue, n) in added {
        invocation.arg(queue).arg(n);
    }
    prepared.append_to(invocation, keys);
}

/// One attempt's ending, as the completion script takes it.
pub(super) struct End {
    pub id: JobId,
    pub token: u64,
    /// The run entry the attempt was claimed with (the script checks it is still there).
    pub run: Vec<u8>,
    pub queue: std::sync::Arc<str>,
    pub kind: std::sync::Arc<str>,
    /// The job's lane, when it names a group or limits.
    pub lane: Option<std::sync::Arc<str>>,
    /// The limits it names: each counts one running job fewer.
    pub limits: std::sync::Arc<[std::sync::Arc<str>]>,
    pub status: JobStatus,
    /// The ready score (queued again) or run_at (scheduled again); 0 otherwise.
    pub score: u64,
    /// The job's final record.
    pub record: Vec<u8>,
}

/// The bulk completion of attempts.
pub(super) fn complete(
    invocation: &mut super::scripts::Call<'_>,
    keys: &QueueKeys,
    ends: &[End],
    now: DateTime<Utc>,
) {
    let ids: Vec<String> = ends.iter().map(|e| e.id.to_string()).collect();
    invocation.arg(ms(now) as i64).arg(ends.len());
    for id in &ids {
        invocation.arg(id);
    }
    for end in ends {
        invocation.arg(&end.run);
    }
    for end in ends {
        invocation.arg(end.status.index());
    }
    let mut terminal: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut prepared = Prepared::with_records();
    // The lease key of the last token seen (a batch's attempts mostly share a few tokens).
    let mut lease: Option<(u64, String)> = None;
    let mut effects = Effects::default();
    let mut running: BTreeMap<&str, i64> = BTreeMap::new();
    for (end, id) in ends.iter().zip(&ids) {
        if end.status.is_terminal() {
            terminal.entry(&end.queue).or_default().push(id);
        }
        prepared.add("MSET", "", [text(&keys.job(id)), end.record.clone()]);
        let lane = end.lane.as_deref();
        prepared.enter(keys, id, &end.queue, &end.kind, lane, end.status, end.score);
        for limit in end.limits.iter() {
            *running.entry(limit).or_default() -= 1;
        }
        if lease.as_ref().is_none_or(|(token, _)| *token != end.token) {
            lease = Some((end.token, keys.lease(end.token)));
        }
        let (_, lease_key) = lease.as_ref().expect("set just above");
        prepared.add("SREM", lease_key, [text(id)]);
        prepared.count(&end.queue, JobStatus::Running, -1);
        prepared.count(&end.queue, end.status, 1);
        effects.note(end.status, end.score);
    }
    // A concurrency limit may have freed a place: an idle instance looks again.
    let freed = if running.is_empty() { "0" } else { "1" };
    for (limit, delta) in running {
        prepared.increment(keys.limits_running(), limit.to_owned(), delta);
    }
    invocation.arg(terminal.len());
    for (queue, ids) in terminal {
        invocation.arg(queue).arg(ids.len());
        for id in ids {
            invocation.arg(id);
        }
    }
    invocation.arg(effects.ready).arg(effects.due).arg(freed);
    prepared.append_to(invocation, keys);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_scores_order_by_priority_then_id() {
        let (older, newer) = (JobId::new(), JobId::new());
        assert!(ready_score(older, 0) <= ready_score(newer, 0));
        assert!(ready_score(newer, 5) < ready_score(older, 0), "higher priority first");
        assert!(ready_score(older, 1000) < ready_score(newer, -1000));
        assert!(ready_score(older, -1000) < (1u64 << 53), "exact as a Lua number");
    }
}
