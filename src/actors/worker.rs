//! The worker pool: runs up to `concurrency` attempts at once on this instance.
//!
//! The pool itself lives on the runtime's thread and keeps the books: claims, leases, cancels,
//! completions. The attempts run on its [`Executors`], the handler threads, each as its own
//! task under a timeout, with a cancellation token and a progress sink; a panic is caught and
//! becomes a failed attempt, so no handler can take the pool down, and no handler's CPU work
//! can delay a lease renewal or a cancel. Finished attempts are batched: every completion that
//! arrives while the pool is busy goes to the queue in one `Complete`, followed by one
//! `Dequeue` for the freed slots. Leases of all running attempts are renewed together, every
//! third of the lease.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures_util::future::AbortHandle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::job::handler::{Flow, HoldSink, RecordLookup};
use crate::job::spec::MAX_DELAY_MS;
use crate::job::{Extensions, JobContext, JobError, JobId, JobRecord, Json, Registry};
use crate::queue::{Claim, Claimed, Completion, LeaseRef, LeaseState, Outcome};
use crate::telemetry::jobs::{self as meters, JobMeters};
use crate::telemetry::Escaped;

use super::executor::{AttemptsEnded, Blocking, Ending, Executors, Start};
use super::flow::HoldLimit;
use super::queue::{
    CancelRunning, Complete, Dequeue, JobsReady, QueueActor, Release, Renew, ReportProgress,
    WaitForWork,
};

/// How often an idle pool looks for work even without being told: a safety net for wake-ups
/// missed while a fetch failed. On a shared backend the pool also waits for other instances'
/// wake-ups, [`WORK_WAIT`] at a time, and fetches after each wait.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long one wait for work on a shared backend lasts (its watchdog is the backend's).
const WORK_WAIT: Duration = Duration::from_secs(1);
/// How long the runtime's thread stays awake after handing attempts over or hearing of their
/// endings, while attempts run: short jobs report back within tens of microseconds, and a
/// thread that went to sleep meanwhile pays a context switch to wake (most of the cost of
/// crossing threads on this kind of machine).
const STAY_AWAKE: Duration = Duration::from_micros(100);

/// On a shared backend, a second claim may go out while one is in flight, naming the slots freed
/// since, as long as the one in flight asked for fewer slots than this. Small claims are bound
/// by their round trip, which freed slots would otherwise wait out; large ones by the work per
/// call, which splitting them adds to.
const SMALL_CLAIM: usize = 64;

/// How long the pool waits before trying again after the queue failed it.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Send the batched completions to the queue.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// Stop taking jobs, let running attempts finish for up to `grace`, then stop the rest and
/// hand them back to `queued`. Answers how many were handed back.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain {
    pub grace: Duration,
}

/// How busy the pool is.
#[derive(Message)]
#[rtype(result = "PoolStats")]
pub struct GetPoolStats;

/// Busy and total worker slots.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PoolStats {
    pub busy: usize,
    pub total: usize,
    /// Threads that run handlers.
    pub threads: usize,
    /// Attempts seen holding their thread longer than the blocking threshold, per kind, since
    /// the start.
    pub blocking: BTreeMap<String, u64>,
    /// True once a shutdown began: the pool takes no new jobs.
    pub draining: bool,
}

/// Settings of a pool.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Names this instance in `worker` fields (`<instance>/w<N>`); empty until the instance
    /// holds its name ([`Named`]): the pool has no slots, and claims nothing, before.
    pub instance: String,
    pub concurrency: usize,
    pub lease: Duration,
    pub cancel_grace: Duration,
    /// Shared values handed to every handler.
    pub extensions: Extensions,
    /// Where handlers read other jobs' results.
    pub(crate) records: RecordLookup,
    /// When a retry is due is told from this clock.
    pub(crate) clock: Clock,
    /// Whether other instances share the queue: then an idle pool waits for their wake-ups.
    pub shared: bool,
    /// The largest result or progress report a job may store, in bytes.
    pub max_result_bytes: usize,
    /// Threads that run handlers.
    pub threads: usize,
    /// A handler polled longer than this at once holds its thread: logged, counted.
    pub blocking_threshold: Duration,
}

/// One running attempt.
struct Running {
    lease: LeaseRef,
    slot: Arc<str>,
    kind: Arc<str>,
    queue: Arc<str>,
    /// When the attempt was handed to its thread (for the run-time histogram).
    started: Instant,
    attempt: u32,
    max_attempts: u32,
    backoff: crate::job::Backoff,
    timeout_ms: u64,
    cancel: CancellationToken,
    abort: AbortHandle,
    /// The executor thread it runs on.
    thread: usize,
    /// Past this, the attempt has outlived its timeout by the cancel grace period: its handler
    /// holds its thread (the timeout's timer runs there too), and the pool times it out itself.
    deadline: Instant,
}

/// When an attempt with this timeout is overdue, from now (far ahead for an absurd timeout).
fn deadline(timeout_ms: u64, grace: Duration) -> Instant {
    let now = Instant::now();
    let allowed = Duration::from_millis(timeout_ms).saturating_add(grace);
    now.checked_add(allowed).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// What an attempt being stopped still holds.
struct Stopping {
    slot: Arc<str>,
    kind: Arc<str>,
    thread: usize,
}

/// The worker pool actor.
pub struct WorkerPool {
    queue: Addr<QueueActor>,
    /// The kinds this instance can run: its claims take no other.
    kinds: Arc<[Arc<str>]>,
    settings: PoolSettings,
    /// Slot names not running anything.
    free: Vec<Arc<str>>,
    running: HashMap<JobId, Running>,
    /// `Dequeue`s in flight (each with slots of its own, out of `free`), by number (claims are
    /// numbered as they start), with how many slots each asked for; `claims_started` counts
    /// them all. `refetch` records a wake-up that arrived while no other could start.
    claims_in_flight: BTreeMap<u64, usize>,
    claims_started: u64,
    refetch: bool,
    /// A `Complete` is in flight. On a shared backend, endings wait for its answer and leave
    /// together after it: handler threads report apart, and one round trip per report would
    /// double the backend's calls. In memory a call costs less than the wait.
    completing: bool,
    /// False once draining started: no new jobs are taken.
    accepting: bool,
    pending: Vec<Completion>,
    flush_queued: bool,
    /// The drains waiting for the last running attempt to end and the last claim in flight to
    /// answer (more than one when shutdowns overlap).
    drained: Vec<oneshot::Sender<()>>,
    /// Jobs of claims that answered during a drain, handed back with the drain's leftovers.
    claimed_while_draining: Vec<LeaseRef>,
    /// Cancels that arrived while claims were in flight, for jobs that may be in their answers,
    /// each with the number of claims started by then: it is kept until every claim started
    /// before it has answered.
    early_cancels: HashMap<JobId, u64>,
    /// A wait for work (shared backends) is in flight.
    waiting: bool,
    /// A retry of completions the queue failed to record is planned.
    retry_planned: bool,
    /// A fetch planned for when a limit frees, and for when.
    limit_retry: Option<(DateTime<Utc>, SpawnHandle)>,
    /// Until when the runtime's thread stays awake for reports, and whether it does now.
    awake_until: Instant,
    awake: bool,
    executors: Executors,
    /// Attempts the pool aborted (or gave up) whose task its thread has not dropped yet, by
    /// job and lease token: their slots stay taken until then, as their handlers may still run.
    stopping: HashMap<(JobId, u64), Stopping>,
    /// Kinds with an attempt that succeeded here. Only those are packed onto one thread (see
    /// `Executors::assign`), and only while no thread has seen them slow: until one has run,
    /// nothing says a kind is fast, and a first burst of CPU-bound jobs is spread.
    ran_kinds: HashSet<Arc<str>>,
    /// Attempts seen holding their thread, per kind.
    blocking: BTreeMap<String, u64>,
    /// Where handlers' limit holds go.
    holds: HoldSink,
    /// Attempts started and ended, per kind and queue.
    meters: JobMeters,
}

impl WorkerPool {
    pub fn new(queue: Addr<QueueActor>, registry: Arc<Registry>, settings: PoolSettings) -> Self {
        let free = slot_names(&settings).collect();
        let kinds = registry.kinds();
        let executors = Executors::start(settings.threads, registry, settings.blocking_threshold);
        WorkerPool {
            holds: hold_sink(queue.clone()),
            executors,
            stopping: HashMap::new(),
            ran_kinds: HashSet::new(),
            meters: JobMeters::default(),
            blocking: BTreeMap::new(),
            queue,
            kinds,
            settings,
            free,
            running: HashMap::new(),
            claims_in_flight: BTreeMap::new(),
            claims_started: 0,
            refetch: false,
            completing: false,
            accepting: true,
            pending: Vec::new(),
            flush_queued: false,
            drained: Vec::new(),
            claimed_while_draining: Vec::new(),
            early_cancels: HashMap::new(),
            waiting: false,
            retry_planned: false,
            limit_retry: None,
            awake_until: Instant::now(),
            awake: false,
        }
    }

    /// On a shared backend, waits for another instance's wake-up while slots are free, then
    /// fetches (after every wait, woken or not, so an idle pool also looks once per wait).
    fn wait_for_work(&mut self, ctx: &mut Context<Self>) {
        if !self.settings.shared || self.waiting || !self.accepting || self.free.is_empty() {
            return;
        }
        self.waiting = true;
        self.queue
            .send(WaitForWork(WORK_WAIT))
            .into_actor(self)
            .map(|result, act, ctx| {
                act.waiting = false;
                match result {
                    Ok(Ok(_)) => act.fetch(ctx),
                    Ok(Err(err)) => {
                        tracing::debug!("waiting for work failed: {err}");
                        ctx.run_later(RETRY_AFTER, |act, ctx| act.fetch(ctx));
                    }
                    Err(err) => tracing::warn!("queue actor unreachable: {err}"),
                }
            })
            .spawn(ctx);
    }

    /// Asks the queue for as many jobs as there are free slots, unless a fetch is in flight.
    fn fetch(&mut self, ctx: &mut Context<Self>) {
        if !self.accepting || self.free.is_empty() {
            return;
        }
        // In memory a claim is a message away: one at a time.
        let in_flight = &self.claims_in_flight;
        let another = self.settings.shared
            && in_flight.len() == 1
            && in_flight.values().sum::<usize>() < SMALL_CLAIM;
        if !in_flight.is_empty() && !another {
            self.refetch = true;
            return;
        }
        let asked = self.free.len();
        self.refetch = false;
        let number = self.claims_started;
        self.claims_started += 1;
        self.claims_in_flight.insert(number, asked);
        let slots = std::mem::take(&mut self.free);
        let claim =
            Claim { workers: slots.clone(), lease: self.settings.lease, kinds: self.kinds.clone() };
        self.queue
            .send(Dequeue(claim))
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.claims_in_flight.remove(&number);
                // The claim's slots are free again until its jobs take theirs.
                act.free.extend(slots);
                match result {
                    Ok(Ok(claims)) if !act.accepting => {
                        let jobs = claims.jobs;
                        // Draining began while this claim was in flight: its jobs go back
                        // with the drain's leftovers, or at once if the drain is over.
                        let leases = jobs.iter().map(|c| c.lease);
                        if !act.drained.is_empty() {
                            act.claimed_while_draining.extend(leases);
                        } else {
                            act.queue.do_send(Release(leases.collect()));
                        }
                    }
                    Ok(Ok(claims)) => {
                        let jobs = claims.jobs;
                        let full = jobs.len() == asked;
                        if let (false, Some(at)) = (full, claims.retry_at) {
                            act.fetch_at(at, ctx);
                        }
                        act.executors.look();
                        for job in jobs {
                            act.start(job, ctx);
                        }
                        act.dispatch(ctx);
                        if full || act.refetch {
                            act.fetch(ctx);
                        } else {
                            act.wait_for_work(ctx);
                        }
                    }
                    Ok(Err(err)) => {
                        if crate::telemetry::repeated::admit("claims failed") {
                            tracing::warn!("claiming jobs failed (retrying): {err}");
                        }
                        ctx.run_later(RETRY_AFTER, |act, ctx| act.fetch(ctx));
                    }
                    Err(err) => tracing::warn!("queue actor unreachable: {err}"),
                }
                act.forget_early_cancels();
                act.signal_if_drained();
            })
            .spawn(ctx);
    }

    /// Plans a fetch at `at`, when a limit that held ready jobs back frees (at most one planned:
    /// the earliest). Never later than the idle poll, which looks anyway.
    fn fetch_at(&mut self, at: DateTime<Utc>, ctx: &mut Context<Self>) {
        if self.limit_retry.is_some_and(|(planned, _)| planned <= at) {
            return;
        }
        if let Some((_, handle)) = self.limit_retry.take() {
            ctx.cancel_future(handle);
        }
        let wait = (at - self.settings.clock.now()).to_std().unwrap_or_default().min(IDLE_POLL);
        let handle = ctx.run_later(wait, |act, ctx| {
            act.limit_retry = None;
            act.fetch(ctx);
        });
        self.limit_retry = Some((at, handle));
    }

    /// Forgets the early cancels no claim in flight can answer for: those that arrived before
    /// every claim still in flight started (all of them, with none in flight).
    fn forget_early_cancels(&mut self) {
        let oldest = self.claims_in_flight.first_key_value().map(|(number, _)| *number);
        self.early_cancels.retain(|_, started| oldest.is_some_and(|oldest| oldest < *started));
    }

    /// Hands the attempts planned by [`WorkerPool::start`] to their threads. Attempts whose
    /// thread is gone (only while the runtime stops) go back to the queue.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let undelivered = self.executors.dispatch(&ctx.address().recipient());
        self.stay_awake(ctx);
        if undelivered.is_empty() {
            return;
        }
        for lease in &undelivered {
            if let Some(run) = self.running.remove(&lease.id) {
                self.free.push(run.slot);
            }
        }
        tracing::warn!(count = undelivered.len(), "handler threads gone; jobs handed back");
        self.queue.do_send(Release(undelivered));
        self.signal_if_drained();
    }

    /// Keeps the runtime's thread from sleeping for [`STAY_AWAKE`] while attempts run: the pool
    /// yields to the runtime in a loop (other tasks and messages run in between), so a report
    /// from a handler thread finds it awake.
    fn stay_awake(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_empty() {
            return;
        }
        self.awake_until = Instant::now() + STAY_AWAKE;
        if !self.awake {
            self.awake = true;
            self.yield_once(ctx);
        }
    }

    fn yield_once(&mut self, ctx: &mut Context<Self>) {
        let yielded = fut::wrap_future::<_, Self>(tokio::task::yield_now());
        ctx.spawn(yielded.map(|_, act, ctx| {
            if act.running.is_empty() || Instant::now() >= act.awake_until {
                act.awake = false;
            } else {
                act.yield_once(ctx);
            }
        }));
    }

    /// What handlers that hold their thread keep from happening, done from here: takes the
    /// endings of attempts that ran before them on that thread (their report would wait for
    /// the handler), times out attempts past their deadline, and logs and counts the holders.
    fn watch_threads(&mut self, ctx: &mut Context<Self>) {
        // Holders and their kinds first: taking the stranded endings below may end a holder
        // itself (its ending is pushed before its poll returns), removing it from `running`.
        let holders: Vec<(Blocking, Arc<str>)> = self
            .executors
            .blocking()
            .into_iter()
            .filter_map(|blocking| {
                let kind = match self.running.get(&blocking.job) {
                    Some(run) => run.kind.clone(),
                    // Stopped by the pool (timed out, cancelled past its grace), still held.
                    None => self
                        .stopping
                        .iter()
                        .find(|((id, _), _)| *id == blocking.job)
                        .map(|(_, stopping)| stopping.kind.clone())?,
                };
                Some((blocking, kind))
            })
            .collect();
        let stranded = self.executors.stranded();
        if !stranded.is_empty() {
            self.attempts_ended(stranded, ctx);
        }
        self.time_out_overdue(ctx);
        for (blocking, kind) in holders {
            tracing::warn!(
                job_id = %blocking.job,
                kind = %kind,
                held_ms = blocking.held.as_millis() as u64,
                "a handler has held its thread for over {} ms: other jobs on that thread wait \
                 (move CPU work or blocking calls to spawn_blocking)",
                self.settings.blocking_threshold.as_millis()
            );
            *self.blocking.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// Times out attempts past their deadline: a handler that holds its thread keeps its own
    /// timeout from firing. The job is retried like after any timeout; the slot stays taken
    /// until the handler is gone.
    fn time_out_overdue(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_empty() {
            return;
        }
        let now = Instant::now();
        let overdue: Vec<JobId> =
            self.running.iter().filter(|(_, r)| r.deadline <= now).map(|(id, _)| *id).collect();
        for id in overdue {
            if let Some(run) = self.running.remove(&id) {
                tracing::warn!(
                    job_id = %id, kind = %run.kind,
                    "attempt timed out while its handler held its thread"
                );
                run.cancel.cancel();
                self.stop(&run);
                let outcome = self.outcome(&run, Ending::TimedOut);
                self.record(run, outcome, ctx);
            }
        }
    }

    /// Plans one claimed attempt on a handler thread (handed over by [`WorkerPool::dispatch`]).
    fn start(&mut self, claimed: Claimed, ctx: &mut Context<Self>) {
        let Claimed { record, lease } = claimed;
        // Claimed again while an older attempt still runs here (its lease expired, say while
        // Redis was frozen): that attempt lost the job; stop it and free what it held.
        if let Some(old) = self.running.remove(&record.id) {
            tracing::warn!(job_id = %record.id, "claimed again; the attempt still running stopped");
            old.cancel.cancel();
            self.stop(&old);
        }
        let JobRecord {
            id,
            kind,
            payload,
            attempts,
            max_attempts,
            backoff,
            timeout_ms,
            worker,
            cancel_requested,
            depends_on,
            limits,
            queue: job_queue,
            created_at,
            run_at,
            trace,
            ..
        } = record;
        // Waiting since it was due: its run time (a delay or a retry's backoff), else its
        // creation (a job that waited for dependencies counts that time too).
        let due = run_at.map_or(created_at, |at| at.max(created_at));
        let waited = (self.settings.clock.now() - due).to_std().unwrap_or_default();
        self.meters.started(&kind, &job_queue, waited);
        let slot = match worker.and_then(|w| self.free.iter().position(|s| *s == w)) {
            Some(at) => self.free.swap_remove(at),
            // The backend named a slot we do not have free (cannot happen with a well-behaved
            // backend); run the job anyway rather than lose it.
            None => Arc::from(format!("{}/extra", self.settings.instance)),
        };
        let cancel = CancellationToken::new();
        let queue = self.queue.clone();
        let max = self.settings.max_result_bytes;
        let progress = Arc::new(move |progress: Json| {
            if progress.get().len() > max {
                tracing::warn!(job_id = %lease.id, bytes = progress.get().len(), max, "progress report too large; dropped");
            } else {
                queue.do_send(ReportProgress { lease, progress })
            }
        });
        let job_ctx = JobContext::new(
            id,
            (attempts, max_attempts),
            depends_on.into(),
            self.settings.records.clone(),
            cancel.clone(),
            progress,
            self.settings.extensions.clone(),
            Flow { limits, hold: self.holds.clone() },
        );
        let (abort, registration) = AbortHandle::new_pair();
        let pack = self.ran_kinds.contains(&*kind) && !self.executors.is_slow(&kind);
        let thread = self.executors.assign(
            Start {
                lease,
                kind: kind.clone(),
                payload,
                ctx: job_ctx,
                timeout: Duration::from_millis(timeout_ms),
                attempt: attempts,
                trace,
                abort: registration,
            },
            pack,
        );
        tracing::debug!(job_id = %id, kind = %kind, attempt = attempts, thread, "attempt started");
        self.running.insert(
            id,
            Running {
                lease,
                slot,
                kind,
                queue: job_queue,
                started: Instant::now(),
                attempt: attempts,
                max_attempts,
                backoff,
                timeout_ms,
                cancel,
                abort,
                thread,
                deadline: deadline(timeout_ms, self.settings.cancel_grace),
            },
        );
        if cancel_requested || self.early_cancels.remove(&id).is_some() {
            self.cancel(id, ctx);
        }
    }

    /// Turns how an attempt ended into the outcome the queue records. A result larger than
    /// `max_result` bytes fails the attempt for good (running again would give the same).
    fn outcome(&self, run: &Running, ending: Ending) -> Outcome {
        let max_result = self.settings.max_result_bytes;
        let retry = |error: String, after: Option<Duration>| {
            let retry_at =
                (run.attempt < run.max_attempts && !run.cancel.is_cancelled()).then(|| {
                    let delay = after.unwrap_or_else(|| {
                        Duration::from_millis(run.backoff.delay_ms(run.attempt))
                    });
                    retry_time(delay, self.settings.clock.now())
                });
            Outcome::Failed { error, retry_at }
        };
        let outcome = match ending {
            Ending::Returned(Ok(result)) if result.get().len() > max_result => Outcome::Failed {
                error: format!(
                    "the result is {} bytes, more than the {max_result} a job may store",
                    result.get().len()
                ),
                retry_at: None,
            },
            Ending::Returned(Ok(result)) => Outcome::Succeeded(result),
            Ending::Returned(Err(JobError::Cancelled)) => Outcome::Cancelled("cancelled".into()),
            Ending::Returned(Err(JobError::Fatal(error))) => {
                Outcome::Failed { error, retry_at: None }
            }
            Ending::Returned(Err(JobError::Retryable { message, retry_after })) => {
                retry(message, retry_after)
            }
            Ending::Returned(Err(JobError::LimitExhausted { limit, until })) => {
                (self.holds)(run.lease.id, &limit, until);
                let wait = (until - self.settings.clock.now()).to_std().unwrap_or_default();
                retry(JobError::LimitExhausted { limit, until }.to_string(), Some(wait))
            }
            Ending::Panicked(message) => retry(format!("handler panicked: {message}"), None),
            Ending::TimedOut => retry(format!("timed out after {} ms", run.timeout_ms), None),
            Ending::Aborted => Outcome::Cancelled("aborted".into()),
        };
        match outcome {
            Outcome::Failed { error, retry_at } => Outcome::Failed { error: cut(error), retry_at },
            other => other,
        }
    }

    /// Frees the slot of an attempt that ended and queues its completion.
    /// Records how an attempt that returned ended, and frees its slot.
    fn finish(&mut self, run: Running, outcome: Outcome, ctx: &mut Context<Self>) {
        self.executors.ended(run.thread);
        self.free.push(run.slot.clone());
        self.record(run, outcome, ctx);
    }

    /// Aborts an attempt's task; its slot stays taken until the task's thread drops it (a
    /// handler holding its thread notices the abort only when it yields).
    fn stop(&mut self, run: &Running) {
        run.abort.abort();
        let stopping =
            Stopping { slot: run.slot.clone(), kind: run.kind.clone(), thread: run.thread };
        self.stopping.insert((run.lease.id, run.lease.token), stopping);
    }

    /// The task of a stopped attempt is gone (or ended anyway): its slot is free again.
    fn stopped(&mut self, lease: LeaseRef, ctx: &mut Context<Self>) {
        if self.stopping.is_empty() {
            return;
        }
        if let Some(stopping) = self.stopping.remove(&(lease.id, lease.token)) {
            self.executors.ended(stopping.thread);
            self.free.push(stopping.slot);
            self.fetch(ctx);
        }
    }

    /// Records how an attempt ended, to be sent with the next batch of completions.
    fn record(&mut self, run: Running, outcome: Outcome, ctx: &mut Context<Self>) {
        let id = run.lease.id;
        let ending = match &outcome {
            Outcome::Succeeded(_) => meters::Ending::Succeeded,
            Outcome::Failed { retry_at: Some(_), .. } => meters::Ending::Retried,
            Outcome::Failed { retry_at: None, .. } => meters::Ending::Failed,
            Outcome::Cancelled(_) => meters::Ending::Cancelled,
        };
        self.meters.ended(&run.kind, &run.queue, run.started.elapsed(), ending);
        match &outcome {
            Outcome::Succeeded(_) => {
                tracing::debug!(job_id = %id, kind = %run.kind, "attempt succeeded")
            }
            // The error is the handler's text, often the client's (a payload echoed, a remote
            // server's answer): escaped, so it cannot forge log lines.
            Outcome::Failed { error, retry_at } => tracing::warn!(
                job_id = %id, kind = %run.kind, attempt = run.attempt, retry = retry_at.is_some(),
                "attempt failed: {}", Escaped(error)
            ),
            Outcome::Cancelled(reason) => {
                tracing::info!(job_id = %id, kind = %run.kind, "attempt {reason}")
            }
        }
        self.pending.push(Completion { lease: run.lease, outcome });
        if !self.flush_queued {
            self.flush_queued = true;
            // Handled after every message already in the mailbox, so completions that arrive
            // together leave together.
            ctx.notify(Flush);
        }
        self.signal_if_drained();
    }

    /// Tells a waiting drain that nothing runs any more, and that no claim is in flight (its
    /// jobs would be running in the backend, unknown to the drain).
    fn signal_if_drained(&mut self) {
        if self.running.is_empty() && self.claims_in_flight.is_empty() {
            for drained in self.drained.drain(..) {
                let _ = drained.send(());
            }
        }
    }

    /// Fires the token of a running attempt and aborts it if it has not returned after the
    /// cancel grace period.
    fn cancel(&mut self, id: JobId, ctx: &mut Context<Self>) {
        let Some(run) = self.running.get(&id) else {
            // The cancel may have overtaken the claim that hands us this job: remember it so
            // the attempt is cancelled as soon as it arrives instead of running to the end.
            if !self.claims_in_flight.is_empty() {
                self.early_cancels.insert(id, self.claims_started);
            }
            return;
        };
        if run.cancel.is_cancelled() {
            return;
        }
        run.cancel.cancel();
        let token = run.lease.token;
        self.abort_after_grace(id, token, ctx);
    }

    /// Aborts the attempt of `id` (with lease `token`) if it still runs after the cancel grace.
    fn abort_after_grace(&mut self, id: JobId, token: u64, ctx: &mut Context<Self>) {
        ctx.run_later(self.settings.cancel_grace, move |act, ctx| {
            if act.running.get(&id).is_some_and(|r| r.lease.token == token) {
                if let Some(run) = act.running.remove(&id) {
                    act.stop(&run);
                    let reason = "cancelled (aborted after the grace period)".to_owned();
                    act.record(run, Outcome::Cancelled(reason), ctx);
                }
            }
        });
    }

    fn renew_leases(&mut self, ctx: &mut Context<Self>) {
        if self.running.is_empty() {
            return;
        }
        let leases: Vec<LeaseRef> = self.running.values().map(|r| r.lease).collect();
        let renew = Renew { leases: leases.clone(), lease: self.settings.lease };
        self.queue
            .send(renew)
            .into_actor(self)
            .map(move |result, act, ctx| match result {
                Ok(Ok(states)) => {
                    for (lease, state) in leases.into_iter().zip(states) {
                        match state {
                            LeaseState::Active => {}
                            LeaseState::CancelRequested => act.cancel(lease.id, ctx),
                            LeaseState::Lost => act.abandon(lease),
                        }
                    }
                }
                Ok(Err(err)) => {
                    if crate::telemetry::repeated::admit("lease renewals failed") {
                        tracing::warn!("renewing leases failed (retrying): {err}");
                    }
                }
                Err(err) => tracing::warn!("queue actor unreachable: {err}"),
            })
            .spawn(ctx);
    }

    /// Stops an attempt whose lease is no longer ours: another worker may run the job now.
    fn abandon(&mut self, lease: LeaseRef) {
        if self.running.get(&lease.id).is_some_and(|r| r.lease.token == lease.token) {
            if let Some(run) = self.running.remove(&lease.id) {
                tracing::warn!(job_id = %lease.id, "lease lost; attempt stopped");
                self.stop(&run);
                self.signal_if_drained();
            }
        }
    }
}

/// The most of a handler's error text a job keeps: errors often carry a remote answer or a
/// payload, and every one of them is stored with the job.
pub const MAX_ERROR_BYTES: usize = 4096;

/// Where handlers' holds go: to the queue, which holds the limit on every instance (a hold
/// that fails is logged; the job's own retry still waits). One per pool: an attempt only
/// clones it.
fn hold_sink(queue: Addr<QueueActor>) -> HoldSink {
    Arc::new(move |id: JobId, limit: &str, until: DateTime<Utc>| {
        let hold = queue.send(HoldLimit { name: limit.to_owned(), until });
        let limit = limit.to_owned();
        actix_rt::spawn(async move {
            match hold.await {
                Ok(Ok(())) => tracing::info!(job_id = %id, limit, %until, "limit held"),
                Ok(Err(err)) => tracing::warn!(job_id = %id, limit, "limit not held: {err}"),
                Err(err) => tracing::warn!(job_id = %id, limit, "limit not held: {err}"),
            }
        });
    })
}

/// `error` cut to [`MAX_ERROR_BYTES`] on a character boundary, saying how long it was.
fn cut(error: String) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error;
    }
    let note = format!("… (cut: {} bytes in all)", error.len());
    let mut end = MAX_ERROR_BYTES - note.len();
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &error[..end])
}

/// When to retry after `delay`, capped at [`MAX_DELAY_MS`] so that no delay a handler asks for
/// (say, an absurd `Retry-After`) can overflow the clock.
fn retry_time(delay: Duration, now: DateTime<Utc>) -> DateTime<Utc> {
    let capped = delay.min(Duration::from_millis(MAX_DELAY_MS));
    let delta = chrono::Duration::from_std(capped).unwrap_or(chrono::Duration::zero());
    now.checked_add_signed(delta).unwrap_or(now)
}

impl Actor for WorkerPool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let renew_every = self.settings.lease / 3;
        ctx.run_interval(renew_every, |act, ctx| act.renew_leases(ctx));
        let watch_every = (self.settings.blocking_threshold / 4).max(Duration::from_millis(5));
        ctx.run_interval(watch_every, |act, ctx| act.watch_threads(ctx));
        let idle_poll = if self.settings.shared { IDLE_POLL * 5 } else { IDLE_POLL };
        ctx.run_interval(idle_poll, |act, ctx| act.fetch(ctx));
        // After a restart: completions not yet recorded, and attempts cancelled whose grace
        // timer was lost.
        if !self.pending.is_empty() {
            self.flush_queued = true;
            ctx.notify(Flush);
        }
        let cancelled: Vec<_> = self
            .running
            .iter()
            .filter(|(_, run)| run.cancel.is_cancelled())
            .map(|(id, run)| (*id, run.lease.token))
            .collect();
        for (id, token) in cancelled {
            self.abort_after_grace(id, token, ctx);
        }
        self.fetch(ctx);
    }
}

impl Supervised for WorkerPool {
    /// After a stop or a panic: the futures the pool had spawned are gone (claims, waits,
    /// flushes, timers). The attempts themselves run on as their own tasks and report to this
    /// same address, so `running` stays; what is free is rebuilt from it, and `started` plans
    /// the timers, the flush of pending completions and a fetch again.
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(running = self.running.len(), "worker pool restarting");
        self.claims_in_flight.clear();
        self.refetch = false;
        self.completing = false;
        self.awake = false;
        self.flush_queued = false;
        self.waiting = false;
        self.retry_planned = false;
        self.limit_retry = None;
        self.early_cancels.clear();
        let busy: HashSet<&Arc<str>> = (self.running.values().map(|r| &r.slot))
            .chain(self.stopping.values().map(|s| &s.slot))
            .collect();
        self.free = slot_names(&self.settings).filter(|slot| !busy.contains(slot)).collect();
        let (running, stopping) = (&self.running, &self.stopping);
        self.executors.recount(|thread| {
            running.values().filter(|r| r.thread == thread).count()
                + stopping.values().filter(|s| s.thread == thread).count()
        });
    }
}

/// The names of a pool's worker slots, the last one first (slots are taken from the back);
/// none while the instance has no name.
fn slot_names(settings: &PoolSettings) -> impl Iterator<Item = Arc<str>> + '_ {
    let slots = if settings.instance.is_empty() { 0 } else { settings.concurrency };
    (0..slots).rev().map(|n| Arc::from(format!("{}/w{n}", settings.instance)))
}

/// The instance holds its name, and what a dead run of it left running was taken back: the
/// pool names its slots after it and starts claiming.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Named(pub Arc<str>);

impl Handler<Named> for WorkerPool {
    type Result = ();
    fn handle(&mut self, Named(name): Named, ctx: &mut Context<Self>) {
        if !self.settings.instance.is_empty() {
            return; // named once, for the life of the runtime
        }
        self.settings.instance = name.to_string();
        self.free = slot_names(&self.settings).collect();
        self.fetch(ctx);
    }
}

impl Handler<JobsReady> for WorkerPool {
    type Result = ();
    fn handle(&mut self, _: JobsReady, ctx: &mut Context<Self>) {
        self.fetch(ctx);
    }
}

impl Handler<AttemptsEnded> for WorkerPool {
    type Result = ();
    fn handle(&mut self, AttemptsEnded(ended): AttemptsEnded, ctx: &mut Context<Self>) {
        self.stay_awake(ctx);
        self.attempts_ended(ended, ctx);
    }
}

impl WorkerPool {
    fn attempts_ended(&mut self, ended: Vec<(LeaseRef, Ending)>, ctx: &mut Context<Self>) {
        for (lease, ending) in ended {
            // An attempt stopped by the pool, whose task is now gone (aborted, or it ended
            // before the abort reached it: either way its outcome is recorded already).
            self.stopped(lease, ctx);
            let ours = self.running.get(&lease.id).is_some_and(|r| r.lease.token == lease.token);
            if !ours {
                continue; // aborted after the cancel grace, or its lease was lost
            }
            if let Some(run) = self.running.remove(&lease.id) {
                // Only a success says the kind is fast: an attempt that failed at once (a bad
                // payload, say) says nothing of how long the work takes.
                let succeeded = matches!(ending, Ending::Returned(Ok(_)));
                if succeeded && !self.ran_kinds.contains(&*run.kind) {
                    self.ran_kinds.insert(run.kind.clone());
                }
                let outcome = self.outcome(&run, ending);
                self.finish(run, outcome, ctx);
            }
        }
    }
}

impl Handler<Flush> for WorkerPool {
    type Result = ();
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush_queued = false;
        let wait = self.settings.shared && self.completing;
        if !self.pending.is_empty() && !wait {
            self.completing = true;
            let done = std::mem::take(&mut self.pending);
            let count = done.len();
            let kept = done.clone();
            self.queue
                .send(Complete(done))
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.completing = false;
                    match result {
                        Ok(Ok(changes)) if changes.stale > 0 => {
                            tracing::warn!("{} of {count} completions were stale", changes.stale)
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => {
                            // Kept and sent again until recorded (the backend refuses them as
                            // stale once their leases expired and the jobs moved on).
                            tracing::warn!(
                                "recording {count} completions failed (will retry): {err}"
                            );
                            act.retry_completions(kept, ctx);
                            return;
                        }
                        Err(err) => tracing::warn!("queue actor unreachable: {err}"),
                    }
                    // Endings that arrived meanwhile leave now, together.
                    if !act.pending.is_empty() && !act.flush_queued {
                        act.flush_queued = true;
                        ctx.notify(Flush);
                    }
                })
                .spawn(ctx);
        }
        self.fetch(ctx);
    }
}

impl WorkerPool {
    /// Puts completions the queue failed to record back, and flushes again a moment later.
    fn retry_completions(&mut self, done: Vec<Completion>, ctx: &mut Context<Self>) {
        self.pending.extend(done);
        if !self.retry_planned {
            self.retry_planned = true;
            ctx.run_later(RETRY_AFTER, |act, ctx| {
                act.retry_planned = false;
                if !act.flush_queued {
                    act.flush_queued = true;
                    ctx.notify(Flush);
                }
            });
        }
    }
}

impl Handler<CancelRunning> for WorkerPool {
    type Result = ();
    fn handle(&mut self, CancelRunning(id): CancelRunning, ctx: &mut Context<Self>) {
        self.cancel(id, ctx);
    }
}

impl Handler<GetPoolStats> for WorkerPool {
    type Result = MessageResult<GetPoolStats>;
    fn handle(&mut self, _: GetPoolStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(PoolStats {
            busy: self.running.len() + self.stopping.len(),
            total: self.settings.concurrency,
            threads: self.executors.threads(),
            blocking: self.blocking.clone(),
            draining: !self.accepting,
        })
    }
}

impl Handler<Drain> for WorkerPool {
    type Result = ResponseActFuture<Self, usize>;
    fn handle(&mut self, Drain { grace }: Drain, _: &mut Context<Self>) -> Self::Result {
        self.accepting = false;
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        self.signal_if_drained();
        tracing::info!(running = self.running.len(), "draining worker pool");
        Box::pin(
            async move {
                let _ = tokio::time::timeout(grace, rx).await;
            }
            .into_actor(self)
            .then(|_, act, _| {
                // This drain waits no more (its receiver is gone); a claim still in flight
                // after every drain's grace period hands its jobs back itself (unless the
                // runtime stops first: they then run again after their lease).
                act.drained.retain(|waiting| !waiting.is_closed());
                let leftovers: Vec<Running> = act.running.drain().map(|(_, run)| run).collect();
                let mut leases: Vec<LeaseRef> = leftovers.iter().map(|r| r.lease).collect();
                leases.append(&mut act.claimed_while_draining);
                for run in leftovers {
                    tracing::info!(job_id = %run.lease.id, "attempt interrupted by shutdown; job handed back");
                    run.cancel.cancel();
                    run.abort.abort();
                    act.executors.ended(run.thread);
                    act.free.push(run.slot);
                }
                let done = std::mem::take(&mut act.pending);
                let queue = act.queue.clone();
                async move {
                    if !done.is_empty() {
                        if let Ok(Err(err)) = queue.send(Complete(done)).await {
                            tracing::warn!("recording completions at shutdown failed: {err}");
                        }
                    }
                    let count = leases.len();
                    if count > 0 {
                        if let Ok(Err(err)) = queue.send(Release(leases)).await {
                            tracing::warn!("handing back {count} jobs at shutdown failed: {err}");
                        }
                    }
                    count
                }
                .into_actor(act)
            }),
        )
    }
}
