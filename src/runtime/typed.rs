//! The typed side of the embedding API: a job's options ([`JobOptions`]), a single submit
//! ([`SubmitBuilder`]), a batch submitted all at once ([`Batch`]), a schedule of a typed job
//! ([`ScheduleBuilder`]), and the handle of a submitted job ([`JobHandle`]).
//!
//! Everything here turns into the same [`JobSpec`]s the HTTP API takes, so a typed submit is
//! validated exactly as a JSON one is.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, Stream};

use super::{Client, RuntimeError};
use crate::events::{Filter, Subscription};
use crate::job::record::to_json;
use crate::job::{Backoff, Job, JobId, JobRecord, JobSpec, JobStatus, NoOutput, SpecError};
use crate::queue::{CancelOutcome, SubmitResult};
use crate::schedule::{Schedule, ScheduleSpec};

/// A boxed future that may be spawned on any executor: `Send`, and owning what it uses (a
/// clone of the client, which is cheap).
type SendFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a job may depend on: a submitted job (its id or [`JobHandle`]), or a job planned
/// earlier in the same [`Batch`] (its [`Planned`]).
///
/// ```
/// use jobyard::{Dependency, JobId, JobOptions};
///
/// // A job submitted earlier, known by its id; a `&JobHandle` converts the same way, and so
/// // does a `Planned` entry of the batch being built.
/// let id: JobId = "0190b6a2-4f3c-7d4e-9a1b-2c3d4e5f6a7b".parse()?;
/// assert_eq!(Dependency::from(id), Dependency::from(&id));
/// let options = JobOptions::new().depends_on(id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dependency(Target);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Job(JobId),
    Planned { batch: u64, index: usize },
}

impl From<JobId> for Dependency {
    fn from(id: JobId) -> Self {
        Dependency(Target::Job(id))
    }
}

impl From<&JobId> for Dependency {
    fn from(id: &JobId) -> Self {
        Dependency(Target::Job(*id))
    }
}

impl<J: Job> From<&JobHandle<J>> for Dependency {
    fn from(handle: &JobHandle<J>) -> Self {
        Dependency(Target::Job(handle.id))
    }
}

impl<J: Job> From<Planned<J>> for Dependency {
    fn from(planned: Planned<J>) -> Self {
        Dependency(Target::Planned { batch: planned.batch, index: planned.index })
    }
}

impl<J: Job> From<&Planned<J>> for Dependency {
    fn from(planned: &Planned<J>) -> Self {
        Dependency::from(*planned)
    }
}

/// How a job is run: priority, queue, timing, dependencies, retries. Every field is optional;
/// what is not set takes the runtime's defaults.
///
/// ```
/// use std::time::Duration;
/// use jobyard::{Backoff, JobOptions};
///
/// let options = JobOptions::new()
///     .priority(10)
///     .queue("refresh")
///     .timeout(Duration::from_secs(30))
///     .max_attempts(5)
///     .backoff(Backoff { initial_ms: 500, ..Backoff::default() });
/// ```
///
/// ```
/// use std::time::Duration;
/// use jobyard::{JobId, JobOptions};
///
/// # let (fetch_orders, fetch_refunds) = (JobId::new(), JobId::new());
/// // Once per account and day, in an hour, after both fetches succeeded.
/// let report = JobOptions::new()
///     .idempotency_key("report:acct-42:2026-01-01")
///     .delay(Duration::from_secs(3_600))
///     .depends_on(fetch_orders)
///     .depends_on_all([fetch_refunds]);
/// // At a time rather than after a delay:
/// let tomorrow = JobOptions::new().run_at(chrono::Utc::now() + chrono::Duration::days(1));
/// ```
#[derive(Clone, Debug, Default)]
pub struct JobOptions {
    priority: Option<i32>,
    queue: Option<String>,
    delay: Option<Duration>,
    run_at: Option<DateTime<Utc>>,
    depends_on: Vec<Dependency>,
    max_attempts: Option<u32>,
    backoff: Option<Backoff>,
    timeout: Option<Duration>,
    idempotency_key: Option<String>,
    limits: Vec<String>,
    cost: Option<u32>,
    group: Option<String>,
}

impl JobOptions {
    /// Options with nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Higher runs first; -1000..=1000, default 0.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The queue the job waits in (each queue is bounded on its own); default `default`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Do not start before `delay` from the submit.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Do not start before `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Run only after `dependency` succeeded (and be cancelled if it does not).
    pub fn depends_on(mut self, dependency: impl Into<Dependency>) -> Self {
        self.depends_on.push(dependency.into());
        self
    }

    /// Run only after every one of `dependencies` succeeded: the fan-in.
    pub fn depends_on_all<D: Into<Dependency>>(
        mut self,
        dependencies: impl IntoIterator<Item = D>,
    ) -> Self {
        self.depends_on.extend(dependencies.into_iter().map(Into::into));
        self
    }

    /// Attempts before the job fails for good; default 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// How long to wait between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Wall-clock limit of one attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A second submit with the same key returns the first job instead of a new one.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Run under limit `name` (which must exist): the job starts only when every limit it
    /// names allows it. Call it once per limit.
    pub fn limit(mut self, name: impl Into<String>) -> Self {
        self.limits.push(name.into());
        self
    }

    /// The tokens the job takes from each rate limit it names (default 1): a job making three
    /// upstream calls costs 3.
    pub fn cost(mut self, cost: u32) -> Self {
        self.cost = Some(cost);
        self
    }

    /// The group (a tenant, a user, a tool) the job belongs to: within one queue and priority,
    /// the groups with jobs ready take turns.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The spec of job `job` with these options. `batch` is the batch being planned and how
    /// many entries it has so far: a [`Planned`] dependency must name one of those.
    fn into_spec<J: Job>(self, job: &J, batch: Option<(u64, usize)>) -> Result<JobSpec, SpecError> {
        let payload = to_json(job).map_err(|err| SpecError::invalid("payload", err))?;
        let mut depends_on = Vec::with_capacity(self.depends_on.len());
        for Dependency(target) in self.depends_on {
            depends_on.push(match (target, batch) {
                (Target::Job(id), _) => id.to_string(),
                (Target::Planned { batch, index }, Some((this, planned)))
                    if batch == this && index < planned =>
                {
                    batch_ref(index)
                }
                (Target::Planned { .. }, _) => {
                    return Err(SpecError::invalid(
                        "depends_on",
                        "depends on a job planned in another batch, which is not submitted \
                         with this one",
                    ))
                }
            });
        }
        Ok(JobSpec {
            payload: Some(payload),
            priority: self.priority,
            queue: self.queue,
            delay_ms: self.delay.map(saturating_millis),
            run_at: self.run_at,
            depends_on: (!depends_on.is_empty()).then_some(depends_on),
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout_ms: self.timeout.map(saturating_millis),
            idempotency_key: self.idempotency_key,
            limits: (!self.limits.is_empty()).then_some(self.limits),
            cost: self.cost,
            group: self.group,
            ..JobSpec::new(J::KIND)
        })
    }
}

/// The `ref` a batch gives its entry `index` (refs are only seen inside one batch).
fn batch_ref(index: usize) -> String {
    format!("#{index}")
}

/// A duration in whole milliseconds; one too long for `u64` saturates (and is then refused as
/// out of range) instead of wrapping to a short one.
fn saturating_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A typed submit in the making (from [`Client::submit`]): set options, then `.await` it.
/// The future is `Send` and `'static` (it holds a clone of the client): it may be spawned on
/// any runtime (`tokio::spawn(runtime.submit(job).into_future())`).
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
/// # impl Job for Resize {
/// #     const KIND: &'static str = "resize";
/// #     type Output = String;
/// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
/// # }
/// # async fn demo(runtime: jobyard::Runtime, upload: jobyard::JobId, scan: jobyard::JobId) -> Result<(), jobyard::RuntimeError> {
/// use std::time::Duration;
/// use jobyard::{Backoff, JobOptions};
///
/// let cat = runtime
///     .submit(Resize { image: "cat.png".into() })
///     .queue("images")
///     .priority(5)
///     .depends_on_all([upload, scan])
///     .max_attempts(5)
///     .backoff(Backoff { initial_ms: 200, ..Backoff::default() })
///     .timeout(Duration::from_secs(30))
///     .idempotency_key("resize:cat.png")
///     .await?;
///
/// // Options prepared once; `.options` replaces every option set before it.
/// let images = JobOptions::new().queue("images").priority(5);
/// let dog = Resize { image: "dog.png".into() };
/// runtime.submit(dog).options(images.clone()).delay(Duration::from_secs(60)).await?;
/// let owl = Resize { image: "owl.png".into() };
/// let at = chrono::Utc::now() + chrono::Duration::hours(2);
/// runtime.submit(owl).options(images).depends_on(&cat).run_at(at).await?;
/// # Ok(()) }
/// ```
#[must_use = "a submit does nothing until awaited"]
pub struct SubmitBuilder<'a, J: Job> {
    client: &'a Client,
    job: J,
    options: JobOptions,
}

impl<'a, J: Job> SubmitBuilder<'a, J> {
    pub(super) fn new(client: &'a Client, job: J) -> Self {
        SubmitBuilder { client, job, options: JobOptions::new() }
    }

    /// Replaces every option with `options`.
    pub fn options(mut self, options: JobOptions) -> Self {
        self.options = options;
        self
    }

    /// See [`JobOptions::priority`].
    pub fn priority(self, priority: i32) -> Self {
        self.with(|o| o.priority(priority))
    }

    /// See [`JobOptions::queue`].
    pub fn queue(self, queue: impl Into<String>) -> Self {
        self.with(|o| o.queue(queue))
    }

    /// See [`JobOptions::delay`].
    pub fn delay(self, delay: Duration) -> Self {
        self.with(|o| o.delay(delay))
    }

    /// See [`JobOptions::run_at`].
    pub fn run_at(self, at: DateTime<Utc>) -> Self {
        self.with(|o| o.run_at(at))
    }

    /// See [`JobOptions::depends_on`].
    pub fn depends_on(self, dependency: impl Into<Dependency>) -> Self {
        self.with(|o| o.depends_on(dependency))
    }

    /// See [`JobOptions::depends_on_all`].
    pub fn depends_on_all<D: Into<Dependency>>(
        self,
        dependencies: impl IntoIterator<Item = D>,
    ) -> Self {
        self.with(|o| o.depends_on_all(dependencies))
    }

    /// See [`JobOptions::max_attempts`].
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.with(|o| o.max_attempts(attempts))
    }

    /// See [`JobOptions::backoff`].
    pub fn backoff(self, backoff: Backoff) -> Self {
        self.with(|o| o.backoff(backoff))
    }

    /// See [`JobOptions::timeout`].
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|o| o.timeout(timeout))
    }

    /// See [`JobOptions::idempotency_key`].
    pub fn idempotency_key(self, key: impl Into<String>) -> Self {
        self.with(|o| o.idempotency_key(key))
    }

    /// See [`JobOptions::limit`].
    pub fn limit(self, name: impl Into<String>) -> Self {
        self.with(|o| o.limit(name))
    }

    /// See [`JobOptions::cost`].
    pub fn cost(self, cost: u32) -> Self {
        self.with(|o| o.cost(cost))
    }

    /// See [`JobOptions::group`].
    pub fn group(self, group: impl Into<String>) -> Self {
        self.with(|o| o.group(group))
    }

    fn with(mut self, set: impl FnOnce(JobOptions) -> JobOptions) -> Self {
        self.options = set(self.options);
        self
    }

    /// Submits the job (the same as awaiting the builder).
    ///
    /// ```no_run
    /// # use jobyard::{Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
    /// # impl Job for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     type Output = String;
    /// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
    /// # }
    /// # async fn demo(runtime: jobyard::Runtime) -> Result<(), jobyard::RuntimeError> {
    /// use futures_util::future::try_join_all;
    ///
    /// // Several submits in flight at once (each stored on its own; a `Batch` is all or nothing).
    /// let images = ["a.png", "b.png", "c.png"];
    /// let submits = images.map(|image| runtime.submit(Resize { image: image.into() }).send());
    /// let handles = try_join_all(submits).await?;
    /// # Ok(()) }
    /// ```
    pub fn send(self) -> SendFuture<Result<JobHandle<J>, RuntimeError>> {
        // The payload is encoded here, so the future holds no `J` (which need not be `Send`).
        let spec = self.options.into_spec(&self.job, None);
        let client = self.client.clone();
        Box::pin(async move {
            let submitted = client.submit_spec(spec?).await?;
            Ok(JobHandle::from_id(&client, submitted.record.id))
        })
    }
}

impl<'a, J: Job> IntoFuture for SubmitBuilder<'a, J> {
    type Output = Result<JobHandle<J>, RuntimeError>;
    type IntoFuture = SendFuture<Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        self.send()
    }
}

/// Jobs submitted together, all or nothing (from [`Client::batch`]): entries may depend on
/// entries added before them, and since the whole batch is queued at once, its priorities
/// decide which runs first (submitting one by one, the first jobs start before later, more
/// urgent ones arrive).
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError, JobOptions, Runtime};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct FetchStars { repo: String }
/// # impl Job for FetchStars {
/// #     const KIND: &'static str = "fetch_stars";
/// #     type Output = u64;
/// #     async fn run(self, _: JobContext) -> Result<u64, JobError> { Ok(1) }
/// # }
/// # #[derive(Serialize, Deserialize)] struct TotalStars;
/// # impl Job for TotalStars {
/// #     const KIND: &'static str = "total_stars";
/// #     type Output = u64;
/// #     async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
/// #         Ok(ctx.dependency_results::<FetchStars>().await?.iter().sum())
/// #     }
/// # }
/// # async fn demo(runtime: Runtime) -> Result<(), jobyard::RuntimeError> {
/// let mut batch = runtime.batch();
/// let repos = ["jobyard/jobyard", "actix/actix"].map(|repo| {
///     batch.add(FetchStars { repo: repo.into() }, JobOptions::new().priority(5))
/// });
/// let total = batch.add(TotalStars, JobOptions::new().depends_on_all(repos));
/// let submitted = batch.submit().await?;
/// let stars: u64 = submitted.handle(total).wait().await?;
/// # Ok(()) }
/// ```
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
/// # impl Job for Resize {
/// #     const KIND: &'static str = "resize";
/// #     type Output = String;
/// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
/// # }
/// # use jobyard::JobOptions;
/// # async fn demo(runtime: jobyard::Runtime, uploads: Vec<String>) -> Result<(), jobyard::RuntimeError> {
/// // From a list that may be empty.
/// let mut batch = runtime.batch();
/// for image in uploads {
///     batch.add(Resize { image }, JobOptions::new().queue("images"));
/// }
/// if batch.is_empty() {
///     return Ok(());
/// }
/// println!("submitting {} jobs", batch.len());
/// let ids = batch.submit().await?.ids();
/// # Ok(()) }
/// ```
#[must_use = "a batch does nothing until submitted"]
pub struct Batch<'a> {
    client: &'a Client,
    /// Tells this batch's [`Planned`] entries from other batches'.
    id: u64,
    specs: Vec<JobSpec>,
    /// The first entry that could not be planned: the whole batch is refused with it.
    error: Option<SpecError>,
}

/// An entry of a [`Batch`] not yet submitted: what later entries depend on, and what
/// [`SubmittedBatch::handle`] turns into a [`JobHandle`].
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError, JobOptions};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct FetchStars { repo: String }
/// # impl Job for FetchStars {
/// #     const KIND: &'static str = "fetch_stars";
/// #     type Output = u64;
/// #     async fn run(self, _: JobContext) -> Result<u64, JobError> { Ok(1) }
/// # }
/// # #[derive(serde::Serialize, serde::Deserialize)] struct TotalStars;
/// # impl Job for TotalStars {
/// #     const KIND: &'static str = "total_stars";
/// #     type Output = u64;
/// #     async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
/// #         Ok(ctx.dependency_results::<FetchStars>().await?.iter().sum())
/// #     }
/// # }
/// # async fn demo(runtime: jobyard::Runtime) -> Result<(), jobyard::RuntimeError> {
/// use jobyard::Planned;
///
/// let mut batch = runtime.batch();
/// let fetch: Planned<FetchStars> = batch.add(FetchStars { repo: "a/b".into() }, JobOptions::new());
/// // `Copy`: name it as a dependency, then turn it into a handle.
/// let total = batch.add(TotalStars, JobOptions::new().depends_on(fetch));
/// let submitted = batch.submit().await?;
/// let stars = submitted.handle(fetch).wait().await?;
/// assert_eq!(submitted.handle(total).wait().await?, stars);
/// # Ok(()) }
/// ```
pub struct Planned<J: Job> {
    batch: u64,
    index: usize,
    _job: PhantomData<fn() -> J>,
}

impl<J: Job> Clone for Planned<J> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<J: Job> Copy for Planned<J> {}

impl<J: Job> std::fmt::Debug for Planned<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Planned<{}>(#{})", J::KIND, self.index)
    }
}

impl<'a> Batch<'a> {
    pub(super) fn new(client: &'a Client) -> Self {
        Batch { client, id: fastrand::u64(..), specs: Vec::new(), error: None }
    }

    /// Adds `job` with `options` (`JobOptions::new()` for the defaults); returns the entry,
    /// which later entries may depend on.
    pub fn add<J: Job>(&mut self, job: J, options: JobOptions) -> Planned<J> {
        let index = self.specs.len();
        match options.into_spec(&job, Some((self.id, index))) {
            Ok(mut spec) => {
                spec.reference = Some(batch_ref(index));
                self.specs.push(spec);
            }
            Err(err) => {
                let err =
                    SpecError { field: Some(entry_field(index, err.field.as_deref())), ..err };
                self.error.get_or_insert(err);
                // Keeps the indexes of later entries right; the batch is refused anyway.
                self.specs.push(JobSpec::new(J::KIND));
            }
        }
        Planned { batch: self.id, index, _job: PhantomData }
    }

    /// Entries added so far.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Submits every entry at once, or none: an invalid entry refuses the whole batch.
    pub fn submit(self) -> SendFuture<Result<SubmittedBatch, RuntimeError>> {
        let Batch { client, id, specs, error } = self;
        let client = client.clone();
        Box::pin(async move {
            if let Some(err) = error {
                return Err(err.into());
            }
            let jobs = client.submit_batch(specs).await?;
            Ok(SubmittedBatch { client, id, jobs })
        })
    }
}

fn entry_field(index: usize, field: Option<&str>) -> String {
    match field {
        Some(field) => format!("jobs[{index}].{field}"),
        None => format!("jobs[{index}]"),
    }
}

/// A submitted [`Batch`]: the handle of each of its entries.
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
/// # impl Job for Resize {
/// #     const KIND: &'static str = "resize";
/// #     type Output = String;
/// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
/// # }
/// # async fn demo(runtime: jobyard::Runtime) -> Result<(), jobyard::RuntimeError> {
/// use jobyard::JobOptions;
///
/// let mut batch = runtime.batch();
/// let once = JobOptions::new().idempotency_key("resize:cat.png");
/// let cat = batch.add(Resize { image: "cat.png".into() }, once);
/// let dog = batch.add(Resize { image: "dog.png".into() }, JobOptions::new());
/// let submitted = batch.submit().await?;
/// if !submitted.created(cat) {
///     println!("cat.png was submitted before: this is that job");
/// }
/// println!("jobs {:?}", submitted.ids()); // in the order added
/// let thumbnail = submitted.handle(dog).wait().await?;
/// # Ok(()) }
/// ```
pub struct SubmittedBatch {
    client: Client,
    id: u64,
    jobs: Vec<SubmitResult>,
}

impl SubmittedBatch {
    /// The handle of `planned`.
    ///
    /// # Panics
    /// When `planned` was added to another batch (a bug in the caller: it names no job here).
    pub fn handle<J: Job>(&self, planned: Planned<J>) -> JobHandle<J> {
        JobHandle::from_id(&self.client, self.submitted(planned).record.id)
    }

    /// False when the entry's idempotency key returned a job submitted earlier.
    pub fn created<J: Job>(&self, planned: Planned<J>) -> bool {
        self.submitted(planned).created
    }

    /// Every job of the batch, in the order the entries were added.
    pub fn ids(&self) -> Vec<JobId> {
        self.jobs.iter().map(|job| job.record.id).collect()
    }

    fn submitted<J: Job>(&self, planned: Planned<J>) -> &SubmitResult {
        assert_eq!(planned.batch, self.id, "{planned:?} belongs to another batch");
        &self.jobs[planned.index]
    }
}

/// A schedule of a typed job in the making (from [`Client::schedule`]): name its cron
/// expression and its job, then `.await` it to create or replace the schedule.
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError, JobOptions, Runtime};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct FetchStars { repo: String }
/// # impl Job for FetchStars {
/// #     const KIND: &'static str = "fetch_stars";
/// #     type Output = u64;
/// #     async fn run(self, _: JobContext) -> Result<u64, JobError> { Ok(1) }
/// # }
/// # async fn demo(runtime: Runtime) -> Result<(), jobyard::RuntimeError> {
/// runtime
///     .schedule::<FetchStars>("stars-nightly")
///     .cron("0 0 3 * * *")
///     .timezone("Europe/Paris")
///     .job(FetchStars { repo: "jobyard/jobyard".into() })
///     .options(JobOptions::new().queue("refresh"))
///     .await?;
/// # Ok(()) }
/// ```
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError, JobOptions};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct FetchStars { repo: String }
/// # impl Job for FetchStars {
/// #     const KIND: &'static str = "fetch_stars";
/// #     type Output = u64;
/// #     async fn run(self, _: JobContext) -> Result<u64, JobError> { Ok(1) }
/// # }
/// # async fn demo(runtime: jobyard::Runtime) -> Result<(), jobyard::RuntimeError> {
/// // Hourly; if hours were missed while no instance ran, the latest of them still fires.
/// // `.send()` is what `.await` does, and returns the stored schedule.
/// let schedule = runtime
///     .schedule::<FetchStars>("stars-hourly")
///     .cron("0 0 * * * *")
///     .catch_up(true)
///     .job(FetchStars { repo: "jobyard/jobyard".into() })
///     .send()
///     .await?;
/// println!("next run at {:?}", schedule.next_run_at);
/// # Ok(()) }
/// ```
#[must_use = "a schedule is not stored until awaited"]
pub struct ScheduleBuilder<'a, J: Job> {
    client: &'a Client,
    name: String,
    cron: Option<String>,
    timezone: Option<String>,
    catch_up: bool,
    job: Option<J>,
    options: JobOptions,
}

impl<'a, J: Job> ScheduleBuilder<'a, J> {
    pub(super) fn new(client: &'a Client, name: String) -> Self {
        ScheduleBuilder {
            client,
            name,
            cron: None,
            timezone: None,
            catch_up: false,
            job: None,
            options: JobOptions::new(),
        }
    }

    /// When it fires: a cron expression with seconds (`sec min hour day month weekday`), or a
    /// classic five-field one, read as firing at second 0. Required.
    pub fn cron(mut self, expression: impl Into<String>) -> Self {
        self.cron = Some(expression.into());
        self
    }

    /// The IANA time zone the expression is read in; default UTC.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = Some(timezone.into());
        self
    }

    /// Whether ticks missed while no instance ran are fired late (default: skipped).
    pub fn catch_up(mut self, catch_up: bool) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// The job each tick submits. Required.
    pub fn job(mut self, job: J) -> Self {
        self.job = Some(job);
        self
    }

    /// The options of each tick's job.
    pub fn options(mut self, options: JobOptions) -> Self {
        self.options = options;
        self
    }

    /// Creates or replaces the schedule (the same as awaiting the builder).
    pub fn send(self) -> SendFuture<Result<Schedule, RuntimeError>> {
        let ScheduleBuilder { client, name, cron, timezone, catch_up, job, options } = self;
        let client = client.clone();
        let spec = (|| {
            let cron =
                cron.ok_or_else(|| SpecError::invalid("cron", "a schedule needs .cron(..)"))?;
            let job = job.ok_or_else(|| SpecError::invalid("job", "a schedule needs .job(..)"))?;
            let job = options.into_spec(&job, None)?;
            Ok::<_, SpecError>(ScheduleSpec { cron, timezone, job, catch_up })
        })();
        Box::pin(async move { Ok(client.put_schedule(&name, spec?).await?.0) })
    }
}

impl<'a, J: Job> IntoFuture for ScheduleBuilder<'a, J> {
    type Output = Result<Schedule, RuntimeError>;
    type IntoFuture = SendFuture<Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        self.send()
    }
}

/// The typed end of a terminal job: its output, or why there is none.
fn outcome<J: Job>(record: JobRecord) -> Result<J::Output, RuntimeError> {
    let id = record.id;
    let decode = |message: String| RuntimeError::Decode {
        id,
        expected: std::any::type_name::<J::Output>(),
        message,
    };
    record.output::<J::Output>().map_err(|why| match why {
        NoOutput::Missing => decode("the job succeeded without a stored result".into()),
        NoOutput::Decode(message) => decode(message),
        NoOutput::NotSucceeded(JobStatus::Cancelled) => RuntimeError::Cancelled { id },
        NoOutput::NotSucceeded(_) => RuntimeError::JobFailed { id, error: record.error.clone() },
    })
}

/// A submitted job of type `J`: wait for its typed output, follow its state, cancel it.
/// Cheap to clone; `Send` and `Sync`, and so are the futures of its methods.
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
/// # impl Job for Resize {
/// #     const KIND: &'static str = "resize";
/// #     type Output = String;
/// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
/// # }
/// # async fn demo(runtime: jobyard::Runtime) -> Result<(), jobyard::RuntimeError> {
/// use std::time::Duration;
///
/// let job = runtime.submit(Resize { image: "cat.png".into() }).await?;
/// println!("submitted {}", job.id());
/// // A clone follows the same job from another task: here, one that gives up after a minute.
/// let watchdog = job.clone();
/// tokio::spawn(async move {
///     tokio::time::sleep(Duration::from_secs(60)).await;
///     if !watchdog.status().await?.status.is_terminal() {
///         watchdog.cancel().await?;
///     }
///     Ok::<_, jobyard::RuntimeError>(())
/// });
/// let thumbnail: String = job.wait().await?; // or `RuntimeError::Cancelled`
/// # Ok(()) }
/// ```
pub struct JobHandle<J: Job> {
    id: JobId,
    client: Client,
    _job: PhantomData<fn() -> J>,
}

impl<J: Job> Clone for JobHandle<J> {
    fn clone(&self) -> Self {
        JobHandle { id: self.id, client: self.client.clone(), _job: PhantomData }
    }
}

impl<J: Job> std::fmt::Debug for JobHandle<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobHandle<{}>({})", J::KIND, self.id)
    }
}

impl<J: Job> From<&JobHandle<J>> for JobId {
    fn from(handle: &JobHandle<J>) -> JobId {
        handle.id
    }
}

/// How often [`JobHandle::changes`] reads the job when no event said it changed: a change no
/// event announces (a periodic step's) is still seen.
const CHANGES_RECHECK: Duration = Duration::from_secs(1);

impl<J: Job> JobHandle<J> {
    /// The handle of a job submitted earlier (its id kept in a database, say). Nothing is
    /// checked here: a wrong id shows as `NotFound`, a job of another kind as a `Decode`
    /// error when its output is read.
    ///
    /// ```no_run
    /// # use jobyard::{Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
    /// # impl Job for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     type Output = String;
    /// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
    /// # }
    /// # async fn demo(client: &jobyard::Client, stored: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// use jobyard::{JobHandle, JobId};
    ///
    /// // The id was kept as text (in a database row, a URL) when the job was submitted.
    /// let id: JobId = stored.parse()?;
    /// let job = JobHandle::<Resize>::from_id(client, id);
    /// let thumbnail = job.wait().await?;
    /// # Ok(()) }
    /// ```
    pub fn from_id(client: &Client, id: JobId) -> Self {
        JobHandle { id, client: client.clone(), _job: PhantomData }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The job as it is now.
    pub async fn status(&self) -> Result<JobRecord, RuntimeError> {
        self.client.status(self.id).await
    }

    /// Waits for the job to end: its typed output on success, [`RuntimeError::JobFailed`] or
    /// [`RuntimeError::Cancelled`] otherwise.
    pub async fn wait(&self) -> Result<J::Output, RuntimeError> {
        loop {
            let record = self.client.wait(self.id, Duration::from_secs(60)).await?;
            if record.status.is_terminal() {
                return outcome::<J>(record);
            }
        }
    }

    /// As [`JobHandle::wait`], giving up with [`RuntimeError::WaitTimeout`] after `timeout`
    /// (the job itself goes on).
    ///
    /// ```no_run
    /// # use jobyard::{Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
    /// # impl Job for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     type Output = String;
    /// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
    /// # }
    /// # async fn demo(job: jobyard::JobHandle<Resize>) -> Result<(), jobyard::RuntimeError> {
    /// use std::time::Duration;
    /// use jobyard::RuntimeError;
    ///
    /// match job.wait_timeout(Duration::from_secs(2)).await {
    ///     Ok(thumbnail) => println!("ready: {thumbnail}"),
    ///     // The job goes on: answer "202 Accepted" and let the caller come back.
    ///     Err(RuntimeError::WaitTimeout { status, .. }) => println!("still {status}"),
    ///     Err(err) => return Err(err),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<J::Output, RuntimeError> {
        let record = self.client.wait(self.id, timeout).await?;
        if !record.status.is_terminal() {
            return Err(RuntimeError::WaitTimeout {
                id: self.id,
                status: record.status,
                waited: timeout,
            });
        }
        outcome::<J>(record)
    }

    /// The job's record each time its state, attempt or progress changed, starting with the
    /// state it is in now and ending with its terminal state. It follows the event stream
    /// (changes made on any instance sharing the backend), and reads the job at least once a
    /// second besides. An error (the job was removed, the store is down) ends the stream.
    ///
    /// ```no_run
    /// # use jobyard::{Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
    /// # impl Job for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     type Output = String;
    /// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
    /// # }
    /// # async fn demo(job: jobyard::JobHandle<Resize>) -> Result<(), jobyard::RuntimeError> {
    /// use futures_util::StreamExt;
    ///
    /// let mut changes = std::pin::pin!(job.changes());
    /// while let Some(record) = changes.next().await {
    ///     let record = record?;
    ///     println!("{} (attempt {}): {:?}", record.status, record.attempts, record.progress);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn changes(&self) -> impl Stream<Item = Result<JobRecord, RuntimeError>> + Send + 'static {
        struct Follow {
            client: Client,
            id: JobId,
            /// Subscribed before the first read: no change after it is missed.
            news: Subscription,
            /// A record read while waiting, used instead of reading again.
            read: Option<JobRecord>,
            last: Option<(JobStatus, u32, Option<String>)>,
            done: bool,
        }
        let client = self.client.clone();
        let news =
            client.events().subscribe(Filter { job: Some(self.id), ..Filter::default() }, None);
        let start = Follow { client, id: self.id, news, read: None, last: None, done: false };
        stream::unfold(start, |mut follow| async move {
            if follow.done {
                return None;
            }
            loop {
                let read = match follow.read.take() {
                    Some(record) => Ok(record),
                    None => follow.client.status(follow.id).await,
                };
                let record = match read {
                    Ok(record) => record,
                    Err(err) => {
                        follow.done = true;
                        return Some((Err(err), follow));
                    }
                };
                let seen = (
                    record.status,
                    record.attempts,
                    record.progress.as_ref().map(|p| p.get().to_owned()),
                );
                if follow.last.as_ref() != Some(&seen) {
                    follow.last = Some(seen);
                    follow.done = record.status.is_terminal();
                    return Some((Ok(record), follow));
                }
                // The job's next event, or its end (heard at once from any instance), or a
                // read after a while for a change no event announced.
                tokio::select! {
                    news = follow.news.next() => {
                        if news.is_none() {
                            tokio::time::sleep(CHANGES_RECHECK).await;
                        }
                    }
                    waited = follow.client.wait(follow.id, CHANGES_RECHECK) => {
                        follow.read = waited.ok();
                    }
                }
            }
        })
    }

    /// Cancels the job.
    pub async fn cancel(&self) -> Result<CancelOutcome, RuntimeError> {
        self.client.cancel(self.id).await
    }
}
