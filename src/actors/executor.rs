//! The threads that run handlers, apart from the runtime's own.
//!
//! The worker pool, the queue actor and the scheduler stay on the runtime's thread, where no
//! handler can hold them: leases are renewed, cancels delivered and cron ticks fired on time
//! whatever handlers do with their thread. Handlers run on [`Executors`]: one actix arbiter (a
//! thread with its own single-threaded runtime) per core by default. A handler's future is
//! built on the thread that runs it, so it need not be `Send`: only what starts it crosses
//! threads ([`Start`]).
//!
//! Crossing threads costs tens of microseconds of wake-up, so it is paid per batch, not per
//! job: the pool hands each thread the attempts of one claim in one message, and a thread
//! reports the attempts that ended together in one message ([`AttemptsEnded`]) once the burst
//! of work that ended them is over, or before it polls a handler known to hold its thread (so
//! a CPU-bound handler does not delay the report of the attempts that ended before it).
//!
//! Each thread also notes which attempt it is polling and since when ([`Watch`]), so the pool
//! can tell a handler that holds its thread (CPU work, blocking calls) and say so.

use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use actix_rt::Arbiter;
use futures_util::future::{AbortRegistration, Abortable, Aborted};
use futures_util::FutureExt;
use tracing::Instrument;

use super::resilient::panic_text;
use crate::job::trace::TraceContext;
use crate::job::{JobContext, JobError, JobId, Json, Registry};
use crate::queue::LeaseRef;
use crate::telemetry::spans::{self, FinishedSpan, SpanKind};

/// How an attempt's task ended.
pub enum Ending {
    Returned(Result<Json, JobError>),
    Panicked(String),
    TimedOut,
    /// The pool aborted it, and its thread has now dropped it.
    Aborted,
}

/// Attempts that ended on one thread, reported together.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsEnded(pub Vec<(LeaseRef, Ending)>);

/// What a thread needs to run one attempt.
pub struct Start {
    pub lease: LeaseRef,
    pub kind: Arc<str>,
    pub payload: Json,
    pub ctx: JobContext,
    pub timeout: Duration,
    /// The attempt's number, for its log span (made on the thread that runs it, where it
    /// also closes: a span crossing threads costs the log subscriber several times more).
    pub attempt: u32,
    /// The job's trace: its id goes on the attempt's log span, and the attempt's own span is
    /// exported as a child of the submit's when an exporter runs.
    pub trace: Option<TraceContext>,
    /// Lets the pool drop the attempt's task (after the cancel grace, a lost lease, shutdown).
    pub abort: AbortRegistration,
}

/// The most attempts of fast kinds packed onto one thread per hand-over (see
/// [`Executors::assign`]).
const PACK_MAX: usize = 64;

/// The handler threads of one worker pool.
pub struct Executors {
    threads: Vec<Thread>,
    registry: Arc<Registry>,
    /// A poll longer than this holds its thread.
    threshold: Duration,
    /// Kinds of which some attempt held its thread for [`SLOW_POLL`] or more in all.
    slow: Arc<Mutex<HashSet<Arc<str>>>>,
    /// The thread the attempts of fast kinds are packed onto in this hand-over.
    filling: Option<usize>,
}

struct Thread {
    arbiter: Arbiter,
    watch: Arc<Watch>,
    /// Attempts handed to this thread and not ended yet.
    running: usize,
    /// Attempts to hand over with the next [`Executors::dispatch`].
    batch: Vec<Start>,
    /// The last attempt reported as holding this thread (each is reported once).
    reported: Option<JobId>,
    /// Whether a handler held this thread at the last [`Executors::look`].
    held: bool,
}

/// An attempt seen holding its thread longer than the threshold (the pool knows its kind).
pub struct Blocking {
    pub job: JobId,
    pub held: Duration,
}

impl Executors {
    /// Starts `count` threads (at least one), where a poll longer than `threshold` counts as
    /// holding the thread. Must run inside an actix `System`.
    pub fn start(count: usize, registry: Arc<Registry>, threshold: Duration) -> Self {
        let slow = Arc::new(Mutex::new(HashSet::new()));
        let threads = (0..count.max(1))
            .map(|_| Thread {
                arbiter: Arbiter::new(),
                watch: Arc::new(Watch { slow: slow.clone(), ..Watch::default() }),
                running: 0,
                batch: Vec::new(),
                reported: None,
                held: false,
            })
            .collect();
        Executors { threads, registry, threshold, slow, filling: None }
    }

    /// Whether an attempt of `kind` was seen holding its thread for [`SLOW_POLL`] or more in
    /// all (in one poll or in several).
    pub fn is_slow(&self, kind: &str) -> bool {
        self.slow.lock().unwrap_or_else(PoisonError::into_inner).contains(kind)
    }

    /// How many handler threads there are.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Notes which threads a handler holds now, for the next assignments: once per claim,
    /// not per job, as reading another thread's watch costs a cache miss.
    pub fn look(&mut self) {
        for thread in &mut self.threads {
            thread.held = thread.watch.held(self.threshold);
        }
    }

    /// Plans `start` on the thread with the fewest attempts, avoiding threads a handler held
    /// at the last [`Executors::look`] (their tasks wait until it yields); returns that
    /// thread's index.
    ///
    /// With `pack` (a kind known to run in under [`SLOW_POLL`]), the attempt joins the
    /// thread already chosen for such attempts in this hand-over, up to [`PACK_MAX`]: waking a
    /// thread costs more than running a few trivial jobs, so a small claim of them wakes one
    /// thread rather than every thread with a few each. Spreading them would gain nothing.
    pub fn assign(&mut self, start: Start, pack: bool) -> usize {
        if let Some(index) = self.filling.filter(|_| pack) {
            let thread = &mut self.threads[index];
            if !thread.held && thread.batch.len() < PACK_MAX {
                thread.batch.push(start);
                return index;
            }
        }
        let (index, thread) = self
            .threads
            .iter_mut()
            .enumerate()
            .min_by_key(|(_, t)| (t.held, t.running + t.batch.len()))
            .expect("at least one thread");
        thread.batch.push(start);
        if pack {
            self.filling = Some(index);
        }
        index
    }

    /// An attempt handed to thread `index` ended (or was dropped).
    pub fn ended(&mut self, index: usize) {
        if let Some(thread) = self.threads.get_mut(index) {
            thread.running = thread.running.saturating_sub(1);
        }
    }

    /// Sets how many attempts each thread runs (after a restart of the pool).
    pub fn recount(&mut self, per_thread: impl Fn(usize) -> usize) {
        for (index, thread) in self.threads.iter_mut().enumerate() {
            thread.running = per_thread(index);
        }
    }

    /// Hands every planned attempt to its thread, one message per thread. Returns the leases
    /// of attempts that could not be handed over (their thread is gone: at shutdown).
    pub fn dispatch(&mut self, pool: &Recipient<AttemptsEnded>) -> Vec<LeaseRef> {
        self.filling = None;
        let mut undelivered = Vec::new();
        for thread in &mut self.threads {
            if thread.batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut thread.batch);
            let leases: Vec<LeaseRef> = batch.iter().map(|s| s.lease).collect();
            thread.running += batch.len();
            let (registry, watch, pool) =
                (self.registry.clone(), thread.watch.clone(), pool.clone());
            let sent = thread.arbiter.spawn_fn(move || {
                let pool = Rc::new(pool);
                for start in batch {
                    run(start, &registry, &watch, &pool);
                }
            });
            if !sent {
                thread.running -= leases.len();
                undelivered.extend(leases);
            }
        }
        undelivered
    }

    /// Attempts that have held their thread longer than the threshold and were not reported
    /// yet.
    pub fn blocking(&mut self) -> Vec<Blocking> {
        let mut found = Vec::new();
        for thread in &mut self.threads {
            let polling = thread.watch.polling.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = polling.as_ref() {
                let held = p.since.elapsed();
                if held > self.threshold && thread.reported != Some(p.job) {
                    thread.reported = Some(p.job);
                    found.push(Blocking { job: p.job, held });
                }
            }
        }
        found
    }

    /// The endings of attempts waiting on threads a handler holds now: their report is
    /// planned behind that handler, so the pool takes them itself.
    pub fn stranded(&self) -> Vec<(LeaseRef, Ending)> {
        let mut stranded = Vec::new();
        for thread in &self.threads {
            if thread.watch.held(SLOW_POLL) {
                let mut ended = thread.watch.ended.lock().unwrap_or_else(PoisonError::into_inner);
                stranded.append(&mut ended);
            }
        }
        stranded
    }
}

impl Drop for Executors {
    fn drop(&mut self) {
        for thread in &self.threads {
            thread.arbiter.stop();
        }
    }
}

/// The exported span of an attempt that started at `start` and ended now, child of its
/// submit's span.
fn attempt_span(
    trace: TraceContext,
    start: SystemTime,
    kind: &str,
    lease: LeaseRef,
    attempt: u32,
    ending: &Ending,
) -> FinishedSpan {
    let error = match ending {
        Ending::Returned(Ok(_)) => None,
        Ending::Returned(Err(err)) => Some(err.to_string()),
        Ending::Panicked(message) => Some(format!("handler panicked: {message}")),
        Ending::TimedOut => Some("timed out".to_owned()),
        Ending::Aborted => Some("aborted".to_owned()),
    };
    FinishedSpan {
        trace_id: trace.trace_id,
        span_id: trace.child().span_id,
        parent: Some(trace.span_id),
        name: format!("job {kind}"),
        kind: SpanKind::Consumer,
        start,
        end: SystemTime::now(),
        attributes: vec![
            ("job.id", lease.id.to_string()),
            ("job.kind", kind.to_owned()),
            ("job.attempt", attempt.to_string()),
        ],
        error,
    }
}

/// Starts one attempt as a task of this thread. Runs on the executor thread.
fn run(start: Start, registry: &Registry, watch: &Arc<Watch>, pool: &Rc<Recipient<AttemptsEnded>>) {
    let Start { lease, kind, payload, ctx, timeout, attempt, trace, abort } = start;
    let span = match &trace {
        Some(trace) => tracing::info_span!(
            "job", job_id = %lease.id, kind = %kind, attempt, trace_id = %trace.trace_id
        ),
        None => tracing::info_span!("job", job_id = %lease.id, kind = %kind, attempt),
    };
    let exported = trace.filter(|_| spans::exporting()).map(|trace| (trace, SystemTime::now()));
    let span_kind = kind.clone();
    // Building the handler's future runs none of its code, but a panic here must not take
    // the thread down: it fails the attempt like any panic.
    let built = catch_unwind(AssertUnwindSafe(|| registry.start(&kind, payload, ctx)));
    let (report_to, report_watch) = (pool.clone(), watch.clone());
    let attempt = async move {
        let ending = match built {
            Err(panic) => Ending::Panicked(panic_text(&*panic).to_owned()),
            Ok(None) => {
                Ending::Returned(Err(JobError::fatal("no handler for this kind on this instance")))
            }
            Ok(Some(run)) => {
                match tokio::time::timeout(timeout, AssertUnwindSafe(run).catch_unwind()).await {
                    Ok(Ok(result)) => Ending::Returned(result),
                    Ok(Err(panic)) => Ending::Panicked(panic_text(&*panic).to_owned()),
                    Err(_) => Ending::TimedOut,
                }
            }
        };
        if let Some((trace, start)) = exported {
            spans::record(attempt_span(trace, start, &span_kind, lease, attempt, &ending));
        }
        report(&report_watch, &report_to, lease, ending);
    };
    let watched = Watched {
        inner: Abortable::new(attempt.instrument(span).boxed_local(), abort),
        watch: watch.clone(),
        lease,
        kind,
        pool: pool.clone(),
        busy: Duration::ZERO,
    };
    actix_rt::spawn(watched);
}

/// A poll this long makes its kind one that holds the thread: attempts that ended before it
/// are reported before each of its polls, not behind them.
const SLOW_POLL: Duration = Duration::from_millis(1);

thread_local! {
    /// Kinds whose handlers held this thread for [`SLOW_POLL`] or more in one poll.
    static SLOW_KINDS: RefCell<HashSet<Arc<str>>> = RefCell::new(HashSet::new());
}

/// Reports the attempts that ended on this thread and are not reported yet.
fn flush(watch: &Watch, pool: &Recipient<AttemptsEnded>) {
    let ended = std::mem::take(&mut *watch.ended.lock().unwrap_or_else(PoisonError::into_inner));
    if !ended.is_empty() {
        pool.do_send(AttemptsEnded(ended));
    }
}

/// Reports an ended attempt with the others that end in the same burst of work: the first one
/// plans the report behind every task ready to run now.
fn report(
    watch: &Arc<Watch>,
    pool: &Rc<Recipient<AttemptsEnded>>,
    lease: LeaseRef,
    ending: Ending,
) {
    let first = {
        let mut ended = watch.ended.lock().unwrap_or_else(PoisonError::into_inner);
        ended.push((lease, ending));
        ended.len() == 1
    };
    if first {
        let (watch, pool) = (watch.clone(), pool.clone());
        actix_rt::spawn(async move {
            tokio::task::yield_now().await;
            flush(&watch, &pool);
        });
    }
}

/// What a thread is polling now, and the attempts that ended there not reported yet: the pool
/// takes those itself when a handler holds the thread (the report planned behind it would wait
/// for it to yield).
#[derive(Default)]
pub struct Watch {
    polling: Mutex<Option<Polling>>,
    ended: Mutex<Vec<(LeaseRef, Ending)>>,
    /// Shared by every thread of the pool: kinds seen slow anywhere (the pool does not pack
    /// them).
    slow: Arc<Mutex<HashSet<Arc<str>>>>,
}

/// No kind here: cloning the kind's `Arc` on every poll would make the threads fight over
/// its reference count, a cost every trivial job paid.
struct Polling {
    job: JobId,
    since: Instant,
}

impl Watch {
    /// Whether a handler has held this thread longer than `threshold`, now.
    fn held(&self, threshold: Duration) -> bool {
        let polling = self.polling.lock().unwrap_or_else(PoisonError::into_inner);
        polling.as_ref().is_some_and(|p| p.since.elapsed() > threshold)
    }
}

/// An attempt's task, noting on its thread's [`Watch`] while it is being polled.
struct Watched<F> {
    inner: F,
    watch: Arc<Watch>,
    lease: LeaseRef,
    kind: Arc<str>,
    pool: Rc<Recipient<AttemptsEnded>>,
    /// How long this attempt's polls have held the thread so far, up to [`SLOW_POLL`].
    busy: Duration,
}

impl<F: Future<Output = Result<(), Aborted>> + Unpin> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Most threads never meet a slow kind: then no lookup (it hashes the kind's name).
        if SLOW_KINDS.with(|slow| {
            let slow = slow.borrow();
            !slow.is_empty() && slow.contains(&this.kind)
        }) {
            flush(&this.watch, &this.pool);
        }
        let since = Instant::now();
        let polling = Polling { job: this.lease.id, since };
        *this.watch.polling.lock().unwrap_or_else(PoisonError::into_inner) = Some(polling);
        // Cleared even when the poll unwinds (a handler's drop that panics at its timeout):
        // a thread left marked as held would be avoided for good.
        let guard = NotPolling(&this.watch);
        let polled = Pin::new(&mut this.inner).poll(cx);
        drop(guard);
        let polled_for = since.elapsed();
        if polled_for >= SLOW_POLL {
            SLOW_KINDS.with(|slow| slow.borrow_mut().insert(this.kind.clone()));
        }
        // A kind is slow for the pool (never packed onto one thread) once one attempt has
        // held its thread for SLOW_POLL in all, in one poll or in many short ones.
        if this.busy < SLOW_POLL {
            this.busy += polled_for;
            if this.busy >= SLOW_POLL {
                let mut everywhere = this.watch.slow.lock().unwrap_or_else(PoisonError::into_inner);
                everywhere.insert(this.kind.clone());
            }
        }
        if let Poll::Ready(Err(Aborted)) = polled {
            // Only now is its slot free: until the task is dropped, its handler may still run.
            report(&this.watch, &this.pool, this.lease, Ending::Aborted);
        }
        polled.map(drop)
    }
}

/// Clears a thread's [`Watch`] when dropped.
struct NotPolling<'a>(&'a Watch);

impl Drop for NotPolling<'_> {
    fn drop(&mut self) {
        *self.0.polling.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::job::handler::RecordLookup;
    use crate::job::Extensions;

    fn start() -> Start {
        let (_, abort) = futures_util::future::AbortHandle::new_pair();
        let id = JobId::new();
        let records = RecordLookup::new(|_| Box::pin(async { Ok(None) }));
        let ctx = JobContext::new(
            id,
            (1, 3),
            Arc::from([]),
            records,
            CancellationToken::new(),
            Arc::new(|_| {}),
            Extensions::default(),
            crate::job::handler::Flow {
                limits: crate::job::spec::no_limits(),
                hold: Arc::new(|_, _, _| {}),
            },
        );
        Start {
            lease: LeaseRef { id, token: 1 },
            kind: Arc::from("k"),
            payload: crate::job::record::json_from_str("null").unwrap(),
            ctx,
            timeout: Duration::from_secs(1),
            attempt: 1,
            trace: None,
            abort,
        }
    }

    fn planned(executors: &Executors) -> Vec<usize> {
        executors.threads.iter().map(|t| t.batch.len()).collect()
    }

    #[actix_rt::test]
    async fn fast_kinds_are_packed_onto_one_thread_and_the_others_spread() {
        let registry = Arc::new(Registry::default());
        let mut executors = Executors::start(2, registry, Duration::from_millis(100));
        for _ in 0..4 {
            executors.assign(start(), false);
        }
        assert_eq!(planned(&executors), [2, 2], "spread over the threads");

        for thread in &mut executors.threads {
            thread.batch.clear();
        }
        executors.filling = None;
        for _ in 0..10 {
            executors.assign(start(), true);
        }
        let packed = planned(&executors);
        assert!(packed == [10, 0] || packed == [0, 10], "one thread: {packed:?}");

        for thread in &mut executors.threads {
            thread.batch.clear();
        }
        executors.filling = None;
        for _ in 0..PACK_MAX + 1 {
            executors.assign(start(), true);
        }
        let mut packed = planned(&executors);
        packed.sort_unstable();
        assert_eq!(packed, [1, PACK_MAX], "at most PACK_MAX on one thread");

        for thread in &mut executors.threads {
            thread.batch.clear();
        }
        executors.filling = Some(0);
        executors.threads[0].held = true;
        executors.assign(start(), true);
        assert_eq!(planned(&executors), [0, 1], "nothing is packed onto a held thread");
    }

    /// Burns ~100 µs of CPU per poll, 30 polls: never one slow poll, but slow in all.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Chunks;

    impl crate::job::Job for Chunks {
        const KIND: &'static str = "chunks";
        type Output = ();
        async fn run(self, _: JobContext) -> Result<(), JobError> {
            for _ in 0..30 {
                let start = Instant::now();
                while start.elapsed() < Duration::from_micros(100) {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
            Ok(())
        }
    }

    /// Collects what the threads report.
    struct Reports(Arc<Mutex<Vec<LeaseRef>>>);

    impl Actor for Reports {
        type Context = actix::Context<Self>;
    }

    impl Handler<AttemptsEnded> for Reports {
        type Result = ();
        fn handle(&mut self, ended: AttemptsEnded, _: &mut actix::Context<Self>) {
            let mut reports = self.0.lock().unwrap();
            reports.extend(ended.0.into_iter().map(|(lease, _)| lease));
        }
    }

    #[actix_rt::test]
    async fn a_kind_that_holds_its_thread_in_many_short_polls_is_slow() {
        let mut registry = Registry::default();
        registry.register::<Chunks>();
        registry.register::<crate::kinds::noop::Noop>();
        let mut executors = Executors::start(1, Arc::new(registry), Duration::from_millis(100));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let pool = Reports(reports.clone()).start().recipient();
        let mut quick = start();
        quick.kind = Arc::from("noop");
        let mut chunks = start();
        chunks.kind = Arc::from("chunks");
        executors.assign(quick, false);
        executors.assign(chunks, false);
        assert!(executors.dispatch(&pool).is_empty());
        let deadline = Instant::now() + Duration::from_secs(10);
        while reports.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "both attempts end");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(executors.is_slow("chunks"), "3 ms of CPU in 30 polls of 0.1 ms");
        assert!(!executors.is_slow("noop"));
    }
}
