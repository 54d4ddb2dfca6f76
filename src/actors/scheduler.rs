//! The scheduler actor: wakes when something is due and runs one [`step`]: the backend's tick
//! (promote due jobs, expire leases, apply retention) and the cron schedules.
//!
//! The step is a function of `now` that tests may call directly; the actor around it only
//! decides when to call it again: at the earliest due time it learnt of, and at least every
//! [`MAX_SLEEP`].

use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::queue::QueueError;
use crate::runtime::Client;
use crate::schedule::{tick_key, CronExpr, Due, Fire, Schedule};

use super::queue::{ListSchedules, RecordFire, Tick, WakeAt};

/// The longest the scheduler sleeps: bounds how late a lease expiry or retention is noticed.
pub const MAX_SLEEP: Duration = Duration::from_millis(500);

/// Stop stepping (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopScheduling;

/// One scheduler pass at `now`. Returns when the next pass is due.
pub async fn step(
    client: &Client,
    retention: Duration,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, QueueError> {
    let mut next = now + MAX_SLEEP;
    let changes = client.call(Tick { now, retention }).await??;
    if let Some(due) = changes.next_due {
        next = next.min(due);
    }
    if changes.more {
        // The tick stopped at its bound with work left (a burst of due jobs, or more finished
        // jobs than one call removes): step again at once. Other messages still interleave,
        // since each step is its own bounded backend call.
        next = now;
    }
    for schedule in client.call(ListSchedules).await?? {
        if let Some(due) = run_schedule(client, &schedule, now).await? {
            next = next.min(due);
        }
    }
    Ok(next)
}

/// Fires (or skips) one schedule if it is due; returns its next tick.
async fn run_schedule(
    client: &Client,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, QueueError> {
    let expr = match CronExpr::parse(&schedule.cron, Some(&schedule.timezone)) {
        Ok(expr) => expr,
        Err(err) => {
            tracing::warn!(schedule = %schedule.name, "stored schedule is invalid: {err}");
            return Ok(None);
        }
    };
    let (fired, next_run_at) = match expr.due(schedule.next_run_at, now, schedule.catch_up) {
        Due::NotYet => return Ok(schedule.next_run_at),
        Due::Skip { next } => {
            tracing::info!(schedule = %schedule.name, "missed ticks skipped");
            (None, next)
        }
        Due::Fire { tick, next } => {
            let mut spec = schedule.job.clone();
            spec.idempotency_key = Some(tick_key(&schedule.name, tick));
            match client.submit_spec(spec).await {
                Ok(job) => {
                    tracing::info!(schedule = %schedule.name, job_id = %job.record.id, %tick, "schedule fired");
                    (Some((tick, job.record.id)), next)
                }
                Err(err) => {
                    tracing::warn!(schedule = %schedule.name, %tick, "schedule could not enqueue its job: {err}");
                    (None, next)
                }
            }
        }
    };
    let fire = Fire { fired, next_run_at };
    match client.call(RecordFire { name: schedule.name.clone(), fire }).await? {
        // Deleted while firing: nothing to record.
        Ok(()) | Err(QueueError::ScheduleNotFound(_)) => Ok(next_run_at),
        Err(err) => Err(err),
    }
}

/// The scheduler actor.
pub struct Scheduler {
    client: Client,
    retention: Duration,
    /// The pass planned next, and its timer.
    planned: Option<(DateTime<Utc>, SpawnHandle)>,
    stopped: bool,
}

impl Scheduler {
    pub fn new(client: Client, retention: Duration) -> Self {
        Scheduler { client, retention, planned: None, stopped: false }
    }

    /// Makes sure a pass runs no later than `at`.
    fn plan(&mut self, at: DateTime<Utc>, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        if let Some((planned, handle)) = self.planned.take() {
            if planned <= at {
                self.planned = Some((planned, handle));
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = (at - self.client.now()).to_std().unwrap_or(Duration::ZERO);
        let handle = ctx.run_later(delay, |act, ctx| {
            act.planned = None;
            act.run_step(ctx);
        });
        self.planned = Some((at, handle));
    }

    /// Runs one pass. `wait` holds the mailbox meanwhile, so passes never overlap; wake-ups
    /// sent during a pass are handled after it and can only move the next pass earlier.
    fn run_step(&mut self, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        let client = self.client.clone();
        let retention = self.retention;
        async move { step(&client, retention, client.now()).await }
            .into_actor(self)
            .map(|result, act, ctx| {
                let next = result.unwrap_or_else(|err| {
                    if crate::telemetry::repeated::admit("scheduler passes failed") {
                        tracing::warn!("scheduler pass failed (retrying): {err}");
                    }
                    act.client.now() + MAX_SLEEP
                });
                act.plan(next, ctx);
            })
            .wait(ctx);
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.run_step(ctx);
    }
}

impl Supervised for Scheduler {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("scheduler restarting");
        self.planned = None;
    }
}

impl Handler<WakeAt> for Scheduler {
    type Result = ();
    fn handle(&mut self, WakeAt(at): WakeAt, ctx: &mut Context<Self>) {
        self.plan(at, ctx);
    }
}

impl Handler<StopScheduling> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: StopScheduling, ctx: &mut Context<Self>) {
        self.stopped = true;
        if let Some((_, handle)) = self.planned.take() {
            ctx.cancel_future(handle);
        }
    }
}
