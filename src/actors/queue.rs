//! The queue actor: the one gateway to the [`QueueBackend`].
//!
//! It forwards each call to the backend and reacts to what the call changed: idle workers are
//! woken when jobs became queued, the scheduler is told the earliest due time, long-poll
//! waiters are answered when their job ends. (Results stay in their job's record: the cache
//! reads them there, see `runtime::results`.) No job state lives
//! here; a restart of this actor loses only waiters, which re-poll. It also counts the jobs its
//! completions finished, for the history of finished jobs (`queue::history`), and hands those
//! counts to a shared backend every couple of seconds.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::events::EventHub;
use crate::job::{JobId, JobRecord, Json, NewJob};
use crate::queue::flow::Claims;
use crate::queue::history::{self, Finishes, History};
use crate::queue::{
    BackendEvent, CancelOutcome, Changes, Claim, Completion, LeaseRef, LeaseState, ListQuery,
    Outcome, Page, QueueBackend, QueueError, QueueStats, Submitted,
};
use crate::schedule::{Fire, Schedule};

mod announce;
mod registry;

use announce::{Action, Announcer};

pub use registry::{GetTakeovers, LeaveRegistry, ListInstances, RecordHeartbeat, TakeOver};

/// Jobs became `queued`: a worker pool with free slots should fetch.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct JobsReady;

/// A `scheduled` job is due at this time: the scheduler should be awake then.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct WakeAt(pub DateTime<Utc>);

/// A running job was asked to stop: its worker pool should fire its token.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct CancelRunning(pub JobId);

/// Who the queue actor tells about changes.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Subscribe {
    Workers(Recipient<JobsReady>, Recipient<CancelRunning>),
    Scheduler(Recipient<WakeAt>),
}

/// Submit a validated batch.
#[derive(Message)]
#[rtype(result = "Result<Submitted, QueueError>")]
pub struct Submit(pub Vec<NewJob>);

/// Claim jobs for worker slots.
#[derive(Message)]
#[rtype(result = "Result<Claims, QueueError>")]
pub struct Dequeue(pub Claim);

/// Record finished attempts.
#[derive(Message)]
#[rtype(result = "Result<Changes, QueueError>")]
pub struct Complete(pub Vec<Completion>);

/// Extend the leases of running attempts.
#[derive(Message)]
#[rtype(result = "Result<Vec<LeaseState>, QueueError>")]
pub struct Renew {
    pub leases: Vec<LeaseRef>,
    pub lease: Duration,
}

/// Hand running jobs back to `queued` (shutdown).
#[derive(Message)]
#[rtype(result = "Result<Changes, QueueError>")]
pub struct Release(pub Vec<LeaseRef>);

/// Store a progress report of a running attempt.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportProgress {
    pub lease: LeaseRef,
    pub progress: Json,
}

/// Cancel a job.
#[derive(Message)]
#[rtype(result = "Result<CancelOutcome, QueueError>")]
pub struct Cancel(pub JobId);

/// Put a `failed` or `cancelled` job back to run (see [`QueueBackend::retry`]); answers its
/// new record.
#[derive(Message)]
#[rtype(result = "Result<JobRecord, QueueError>")]
pub struct Retry(pub JobId);

/// Make a `scheduled` job due now (see [`QueueBackend::run_now`]); answers its new record.
#[derive(Message)]
#[rtype(result = "Result<JobRecord, QueueError>")]
pub struct RunNow(pub JobId);

/// Remove a terminal job (see [`QueueBackend::delete`]); answers the record removed.
#[derive(Message)]
#[rtype(result = "Result<JobRecord, QueueError>")]
pub struct Delete(pub JobId);

/// Read one job.
#[derive(Message)]
#[rtype(result = "Result<Option<JobRecord>, QueueError>")]
pub struct GetJob(pub JobId);

/// List jobs.
#[derive(Message)]
#[rtype(result = "Result<Page, QueueError>")]
pub struct ListJobs(pub ListQuery);

/// Wait (on a shared backend) until work may be ready anywhere, or `timeout` passed; answers
/// true when woken.
#[derive(Message)]
#[rtype(result = "Result<bool, QueueError>")]
pub struct WaitForWork(pub Duration);

/// What another instance did, as the backend heard it.
#[derive(Message)]
#[rtype(result = "()")]
struct Heard(BackendEvent);

/// Wait until a job is terminal or `timeout` passed; answers the job as it then is.
#[derive(Message)]
#[rtype(result = "Result<Option<JobRecord>, QueueError>")]
pub struct WaitFor {
    pub id: JobId,
    pub timeout: Duration,
}

/// The periodic step of the backend (promotion, lease expiry, retention).
#[derive(Message)]
#[rtype(result = "Result<Changes, QueueError>")]
pub struct Tick {
    pub now: DateTime<Utc>,
    pub retention: Duration,
}

/// Job counts per queue and state, with the queued jobs limits hold back.
#[derive(Message)]
#[rtype(result = "Result<QueueStats, QueueError>")]
pub struct GetStats;

/// Queued jobs per kind.
#[derive(Message)]
#[rtype(result = "Result<std::collections::BTreeMap<String, u64>, QueueError>")]
pub struct GetQueuedByKind;

/// A cheap round trip to the backend.
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct Ping;

/// The jobs finished per bucket over the last hour, by every instance of a shared backend.
#[derive(Message)]
#[rtype(result = "Result<History, QueueError>")]
pub struct GetHistory;

/// The jobs waiting on a job, at most `most` (see [`QueueBackend::dependents`]).
#[derive(Message)]
#[rtype(result = "Result<Vec<JobRecord>, QueueError>")]
pub struct GetDependents {
    pub id: JobId,
    pub most: usize,
}

/// Create or replace a schedule; true when created.
#[derive(Message)]
#[rtype(result = "Result<bool, QueueError>")]
pub struct PutSchedule(pub Schedule);

#[derive(Message)]
#[rtype(result = "Result<Option<Schedule>, QueueError>")]
pub struct GetSchedule(pub String);

#[derive(Message)]
#[rtype(result = "Result<Vec<Schedule>, QueueError>")]
pub struct ListSchedules;

/// Remove a schedule; true when it existed.
#[derive(Message)]
#[rtype(result = "Result<bool, QueueError>")]
pub struct DeleteSchedule(pub String);

/// Record what the scheduler did with a due schedule.
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct RecordFire {
    pub name: String,
    pub fire: Fire,
}

/// How often a long-poll waiter re-reads its job even without news: a safety net for news
/// missed while a shared backend's link was down (every finish is otherwise heard at once).
const WAIT_RECHECK: Duration = Duration::from_secs(5);

/// The queue actor. See the module doc.
pub struct QueueActor {
    pub(super) backend: Arc<dyn QueueBackend>,
    /// What every call tells the backend the time is.
    pub(super) clock: Clock,
    pub(super) workers: Vec<(Recipient<JobsReady>, Recipient<CancelRunning>)>,
    scheduler: Option<Recipient<WakeAt>>,
    /// Long-poll waiters by job, woken when the job ends (or when news may have been missed).
    waiters: HashMap<JobId, Arc<Notify>>,
    /// True once the backend delivers other instances' events here (kept across restarts).
    listening: bool,
    /// Tells the event stream what changed.
    announce: Announcer,
    /// The jobs this instance's completions finished, per bucket of the last hour (kept
    /// across restarts).
    finishes: Finishes,
    /// A hand-over of `finishes` to the shared backend is under way.
    flushing: bool,
}

impl QueueActor {
    pub(crate) fn new(backend: Arc<dyn QueueBackend>, clock: Clock, events: EventHub) -> Self {
        let shared = backend.shared();
        QueueActor {
            announce: Announcer::new(events, backend.clone(), clock.clone()),
            backend,
            clock,
            workers: Vec::new(),
            scheduler: None,
            waiters: HashMap::new(),
            listening: false,
            finishes: Finishes::new(shared),
            flushing: false,
        }
    }

    /// Counts the jobs that `done` finished, as the store accepted them (`finished`): the
    /// history of finished jobs.
    fn count_finished(&mut self, endings: &[(JobId, bool)], finished: &HashSet<&JobId>) {
        let mut counts = history::Counts::default();
        for (_, succeeded) in endings.iter().filter(|(id, _)| finished.contains(id)) {
            match succeeded {
                true => counts.succeeded += 1,
                false => counts.failed += 1,
            }
        }
        self.finishes.record(self.clock.now(), counts);
    }

    /// Hands the counts of finished jobs not handed over yet to the shared backend; keeps them
    /// for the next time when that fails.
    fn flush_finishes(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.finishes.pending().is_empty() {
            return;
        }
        self.flushing = true;
        let deltas = self.finishes.take_pending();
        let backend = self.backend.clone();
        let call = isolated(async move {
            let result = backend.add_finished(&deltas).await;
            Ok((result, deltas))
        });
        ctx.spawn(call.into_actor(self).map(|result, act, _| {
            act.flushing = false;
            if let Ok((Err(err), deltas)) = result {
                tracing::debug!("finished-job counts not handed over yet: {err}");
                act.finishes.give_back(deltas, act.clock.now());
            }
        }));
    }

    /// Wakes the waiters of jobs that ended.
    fn wake_waiters(&mut self, finished: &[JobId]) {
        if self.waiters.is_empty() {
            return;
        }
        for id in finished {
            if let Some(waiters) = self.waiters.get(id) {
                waiters.notify_waiters();
            }
        }
    }

    /// Tells whoever must know about `changes`.
    fn publish(&mut self, changes: &Changes) {
        if changes.ready > 0 {
            for (ready, _) in &self.workers {
                ready.do_send(JobsReady);
            }
        }
        if let (Some(at), Some(scheduler)) = (changes.next_due, &self.scheduler) {
            scheduler.do_send(WakeAt(at));
        }
        self.wake_waiters(&changes.finished);
        for taken in &changes.taken_over {
            registry::log_takeover(taken);
        }
    }

    /// Runs a backend call whose changes must be published, on this actor's context.
    fn mutate<T: 'static>(
        &mut self,
        call: impl std::future::Future<Output = Result<T, QueueError>> + 'static,
        changes_of: fn(&T) -> &Changes,
    ) -> ResponseActFuture<Self, Result<T, QueueError>> {
        Box::pin(isolated(call).into_actor(self).map(move |result, act, _| {
            if let Ok(value) = &result {
                act.publish(changes_of(value));
            }
            result
        }))
    }
}

/// Runs a backend call as its own task, so that a panic inside the backend fails this one call
/// (as [`QueueError::Internal`]) instead of taking the queue actor down with it.
fn isolated<T: 'static>(
    call: impl Future<Output = Result<T, QueueError>> + 'static,
) -> impl Future<Output = Result<T, QueueError>> {
    let task = actix_rt::spawn(call);
    async move {
        task.await.unwrap_or_else(|err| {
            tracing::error!("queue backend call failed: {err}");
            Err(QueueError::Internal("the queue backend failed on this call".into()))
        })
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.backend.shared() && !self.listening {
            self.listening = true;
            let me = ctx.address();
            self.backend.listen(Arc::new(move |event| me.do_send(Heard(event))));
        }
        if self.backend.shared() {
            // A restart drops the context, and with it the end of a hand-over in flight (whose
            // write may still land): the flag must not stay set.
            self.flushing = false;
            ctx.run_interval(history::FLUSH_EVERY, |act, ctx| act.flush_finishes(ctx));
        }
    }
}

impl Supervised for QueueActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("queue actor restarting");
        // Waiters re-read their job when woken; none is left hanging.
        for waiters in self.waiters.values() {
            waiters.notify_waiters();
        }
    }
}

impl Handler<Heard> for QueueActor {
    type Result = ();
    fn handle(&mut self, Heard(event): Heard, _: &mut Context<Self>) {
        match event {
            BackendEvent::CancelRequested(id) => {
                for (_, cancel) in &self.workers {
                    cancel.do_send(CancelRunning(id));
                }
            }
            BackendEvent::Finished(ids) => self.wake_waiters(&ids),
            BackendEvent::Resync => {
                for waiters in self.waiters.values() {
                    waiters.notify_waiters();
                }
            }
        }
    }
}

impl Handler<WaitForWork> for QueueActor {
    type Result = ResponseFuture<Result<bool, QueueError>>;
    fn handle(&mut self, WaitForWork(timeout): WaitForWork, _: &mut Context<Self>) -> Self::Result {
        let backend = self.backend.clone();
        Box::pin(async move { backend.wait_for_work(timeout).await })
    }
}

impl Handler<Subscribe> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        match msg {
            Subscribe::Workers(ready, cancel) => self.workers.push((ready, cancel)),
            Subscribe::Scheduler(wake) => self.scheduler = Some(wake),
        }
    }
}

impl Handler<Submit> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Submitted, QueueError>>;
    fn handle(&mut self, Submit(jobs): Submit, _: &mut Context<Self>) -> Self::Result {
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        let call = isolated(async move { backend.submit(jobs, clock.now()).await });
        Box::pin(call.into_actor(self).map(|result, act, _| {
            if let Ok(submitted) = &result {
                act.publish(&submitted.changes);
                act.announce.submitted(submitted);
            }
            result
        }))
    }
}

impl Handler<Dequeue> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Claims, QueueError>>;
    fn handle(&mut self, Dequeue(claim): Dequeue, _: &mut Context<Self>) -> Self::Result {
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        let call = async move { backend.claim(claim, clock.now()).await };
        Box::pin(call.into_actor(self).map(|result, act, _| {
            if let Ok(claims) = &result {
                act.announce.claimed(claims);
            }
            result
        }))
    }
}

impl Handler<Complete> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Changes, QueueError>>;
    fn handle(&mut self, Complete(done): Complete, _: &mut Context<Self>) -> Self::Result {
        let completing = self.announce.completing(&done);
        // Whether each attempt succeeded or failed, counted once the store accepted it. (A
        // handler that fails after its job's cancel was requested ends it `cancelled`, yet
        // counts as failed: rare, since a handler told to stop returns the cancel.)
        let endings: Vec<(JobId, bool)> = done
            .iter()
            .filter_map(|c| match &c.outcome {
                Outcome::Succeeded(_) => Some((c.lease.id, true)),
                Outcome::Failed { .. } => Some((c.lease.id, false)),
                Outcome::Cancelled(_) => None,
            })
            .collect();
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        let call = isolated(async move { backend.complete(done, clock.now()).await });
        Box::pin(call.into_actor(self).map(move |result, act, _| {
            if let Ok(changes) = &result {
                act.publish(changes);
                act.announce.completed(completing, changes);
                // Only what the store accepted: a stale attempt's report is not the job's end.
                let accepted: HashSet<&JobId> = changes.finished.iter().collect();
                act.count_finished(&endings, &accepted);
            }
            result
        }))
    }
}

impl Handler<Renew> for QueueActor {
    type Result = ResponseFuture<Result<Vec<LeaseState>, QueueError>>;
    fn handle(&mut self, msg: Renew, _: &mut Context<Self>) -> Self::Result {
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        Box::pin(async move { backend.renew(msg.leases, msg.lease, clock.now()).await })
    }
}

impl Handler<Release> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Changes, QueueError>>;
    fn handle(&mut self, Release(leases): Release, _: &mut Context<Self>) -> Self::Result {
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        let released = leases.clone();
        let call = isolated(async move { backend.release(leases, clock.now()).await });
        Box::pin(call.into_actor(self).map(move |result, act, _| {
            if let Ok(changes) = &result {
                act.publish(changes);
                act.announce.changed(changes, &released);
            }
            result
        }))
    }
}

impl Handler<ReportProgress> for QueueActor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: ReportProgress, _: &mut Context<Self>) -> Self::Result {
        self.announce.progress(msg.lease, &msg.progress);
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        Box::pin(async move {
            if let Err(err) = backend.report_progress(msg.lease, msg.progress, clock.now()).await {
                tracing::warn!(job_id = %msg.lease.id, "progress report not stored: {err}");
            }
        })
    }
}

impl Handler<Cancel> for QueueActor {
    type Result = ResponseActFuture<Self, Result<CancelOutcome, QueueError>>;
    fn handle(&mut self, Cancel(id): Cancel, _: &mut Context<Self>) -> Self::Result {
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        let call = isolated(async move { backend.cancel(id, clock.now()).await });
        Box::pin(call.into_actor(self).map(|result, act, _| {
            let (outcome, changes) = result?;
            act.publish(&changes);
            act.announce.cancelled(&outcome, &changes);
            if let CancelOutcome::Requested(record) = &outcome {
                tracing::info!(job_id = %record.id, "cancel requested for running job");
                for (_, cancel) in &act.workers {
                    cancel.do_send(CancelRunning(record.id));
                }
            }
            Ok(outcome)
        }))
    }
}

impl QueueActor {
    /// An action on one job that answers its record and changes to publish.
    fn act_on_job(
        &mut self,
        call: impl Future<Output = Result<(JobRecord, Changes), QueueError>> + 'static,
        action: Action,
    ) -> ResponseActFuture<Self, Result<JobRecord, QueueError>> {
        Box::pin(self.mutate(call, |(_, changes)| changes).map(move |result, act, _| {
            let (record, changes) = result?;
            act.announce.acted_on(&record, action, &changes);
            Ok(record)
        }))
    }
}

impl Handler<Retry> for QueueActor {
    type Result = ResponseActFuture<Self, Result<JobRecord, QueueError>>;
    fn handle(&mut self, Retry(id): Retry, _: &mut Context<Self>) -> Self::Result {
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        self.act_on_job(async move { backend.retry(id, clock.now()).await }, Action::Retried)
    }
}

impl Handler<RunNow> for QueueActor {
    type Result = ResponseActFuture<Self, Result<JobRecord, QueueError>>;
    fn handle(&mut self, RunNow(id): RunNow, _: &mut Context<Self>) -> Self::Result {
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        self.act_on_job(async move { backend.run_now(id, clock.now()).await }, Action::RanNow)
    }
}

impl Handler<Delete> for QueueActor {
    type Result = ResponseActFuture<Self, Result<JobRecord, QueueError>>;
    fn handle(&mut self, Delete(id): Delete, _: &mut Context<Self>) -> Self::Result {
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        self.act_on_job(async move { backend.delete(id, clock.now()).await }, Action::Deleted)
    }
}

impl Handler<Tick> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Changes, QueueError>>;
    fn handle(&mut self, msg: Tick, _: &mut Context<Self>) -> Self::Result {
        let backend = self.backend.clone();
        let call = isolated(async move { backend.tick(msg.now, msg.retention).await });
        Box::pin(call.into_actor(self).map(|result, act, _| {
            if let Ok(changes) = &result {
                act.publish(changes);
                act.announce.changed(changes, &[]);
            }
            result
        }))
    }
}

impl Handler<WaitFor> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Option<JobRecord>, QueueError>>;
    fn handle(&mut self, msg: WaitFor, _: &mut Context<Self>) -> Self::Result {
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        let deadline = tokio::time::Instant::now() + msg.timeout;
        let id = msg.id;
        let news = self.waiters.entry(id).or_default().clone();
        let wait = async move {
            if backend.shared() {
                // Other instances announce this job's end only while someone watches it.
                let until = clock.now() + msg.timeout + Duration::from_secs(1);
                if let Err(err) = backend.watch(id, until).await {
                    tracing::debug!(job_id = %id, "watch not registered: {err}");
                }
            }
            loop {
                // Listening before reading, so a finish between the read and the wait counts.
                let notified = news.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let record = backend.get(id).await?;
                let done = record.as_ref().is_none_or(|r| r.status.is_terminal());
                if done || tokio::time::Instant::now() >= deadline {
                    return Ok(record);
                }
                let recheck = (tokio::time::Instant::now() + WAIT_RECHECK).min(deadline);
                let _ = tokio::time::timeout_at(recheck, notified).await;
            }
        };
        Box::pin(isolated(wait).into_actor(self).map(move |result, act, _| {
            // The last waiter of a job takes its entry away.
            if act.waiters.get(&id).is_some_and(|w| Arc::strong_count(w) == 1) {
                act.waiters.remove(&id);
            }
            result
        }))
    }
}

/// Forwards a read-only message to the backend.
macro_rules! forward {
    ($msg:ty => $out:ty, |$backend:ident, $m:ident| $call:expr) => {
        impl Handler<$msg> for QueueActor {
            type Result = ResponseFuture<Result<$out, QueueError>>;
            fn handle(&mut self, $m: $msg, _: &mut Context<Self>) -> Self::Result {
                let $backend = self.backend.clone();
                Box::pin(async move { $call.await })
            }
        }
    };
}

forward!(GetJob => Option<JobRecord>, |backend, msg| backend.get(msg.0));
forward!(ListJobs => Page, |backend, msg| backend.list(&msg.0));
impl Handler<GetStats> for QueueActor {
    type Result = ResponseFuture<Result<QueueStats, QueueError>>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let (backend, now) = (self.backend.clone(), self.clock.now());
        Box::pin(async move {
            let (mut stats, throttled) = tokio::try_join!(backend.stats(), backend.throttled(now))?;
            for (queue, held) in throttled {
                stats.entry(queue).or_default().throttled = held;
            }
            Ok(stats)
        })
    }
}
forward!(GetDependents => Vec<JobRecord>, |backend, msg| backend.dependents(msg.id, msg.most));
forward!(GetQueuedByKind => std::collections::BTreeMap<String, u64>, |backend, _msg| backend.queued_by_kind());
forward!(Ping => (), |backend, _msg| backend.ping());
forward!(PutSchedule => bool, |backend, msg| backend.put_schedule(msg.0));
forward!(GetSchedule => Option<Schedule>, |backend, msg| backend.get_schedule(&msg.0));
forward!(ListSchedules => Vec<Schedule>, |backend, _msg| backend.list_schedules());
forward!(DeleteSchedule => bool, |backend, msg| backend.delete_schedule(&msg.0));
forward!(RecordFire => (), |backend, msg| backend.record_fire(&msg.name, msg.fire));

impl Handler<GetHistory> for QueueActor {
    type Result = ResponseFuture<Result<History, QueueError>>;
    fn handle(&mut self, _: GetHistory, _: &mut Context<Self>) -> Self::Result {
        let (backend, now) = (self.backend.clone(), self.clock.now());
        // Read now, on the actor: this instance's counts, and those not handed over yet.
        let (local, pending) = (self.finishes.local(now), self.finishes.pending().clone());
        Box::pin(async move {
            let (from, to) = history::window(now);
            let counts = match backend.finished_history(from, to).await? {
                None => local,
                Some(mut shared) => {
                    history::merge(&mut shared, &pending);
                    shared
                }
            };
            Ok(History::from_counts(now, &counts))
        })
    }
}
