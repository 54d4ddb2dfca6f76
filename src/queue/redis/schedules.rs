//! Schedules in Redis: one hash per schedule (`spec`, the definition as JSON; `created`,
//! `next`, `last`, `last_job`, times in ms) and a set of their names. Creating and recording a
//! fire are scripts (they keep what must be kept, and leave a deleted schedule deleted).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::reply::{int, redis_error, refusal};
use super::RedisQueue;
use crate::job::JobSpec;
use crate::queue::QueueError;
use crate::schedule::{Fire, Schedule};

/// The parts of a schedule stored as one JSON document (the rest are fields of its hash).
#[derive(Serialize, Deserialize)]
struct ScheduleDoc {
    cron: String,
    timezone: String,
    job: JobSpec,
    catch_up: bool,
    updated_at: DateTime<Utc>,
}

fn stored_schedule(
    name: &str,
    fields: &BTreeMap<String, String>,
) -> Result<Option<Schedule>, QueueError> {
    let Some(spec) = fields.get("spec") else { return Ok(None) };
    let doc: ScheduleDoc = serde_json::from_str(spec)
        .map_err(|err| QueueError::Internal(format!("schedule '{name}' unreadable: {err}")))?;
    let time = |field: &str| {
        fields
            .get(field)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis)
    };
    Ok(Some(Schedule {
        name: name.to_owned(),
        cron: doc.cron,
        timezone: doc.timezone,
        job: doc.job,
        catch_up: doc.catch_up,
        created_at: time("created").unwrap_or(doc.updated_at),
        updated_at: doc.updated_at,
        next_run_at: time("next"),
        last_run_at: time("last"),
        last_job_id: fields.get("last_job").and_then(|id| id.parse().ok()),
    }))
}

impl RedisQueue {
    pub(super) async fn read_schedule(&self, name: &str) -> Result<Option<Schedule>, QueueError> {
        let fields: BTreeMap<String, String> =
            self.cmd(::redis::cmd("HGETALL").arg(self.keys.schedule(name))).await?;
        stored_schedule(name, &fields)
    }

    /// Creates or replaces a schedule; true when created.
    pub(super) async fn store_schedule(&self, schedule: Schedule) -> Result<bool, QueueError> {
        let doc = ScheduleDoc {
            cron: schedule.cron,
            timezone: schedule.timezone,
            job: schedule.job,
            catch_up: schedule.catch_up,
            updated_at: schedule.updated_at,
        };
        let doc =
            serde_json::to_string(&doc).map_err(|err| QueueError::Internal(err.to_string()))?;
        let mut invocation = self.invocation(&self.scripts.schedule_put);
        invocation
            .arg(&schedule.name)
            .arg(doc)
            .arg(schedule.created_at.timestamp_millis())
            .arg(schedule.next_run_at.map_or(String::new(), |t| t.timestamp_millis().to_string()));
        let created = self.run(&invocation, true).await?;
        Ok(int(&created)? == 1)
    }

    /// Every schedule, by name.
    pub(super) async fn all_schedules(&self) -> Result<Vec<Schedule>, QueueError> {
        let mut names: Vec<String> =
            self.cmd(::redis::cmd("SMEMBERS").arg(self.keys.schedules())).await?;
        names.sort();
        let mut schedules = Vec::with_capacity(names.len());
        for name in names {
            if let Some(schedule) = self.read_schedule(&name).await? {
                schedules.push(schedule);
            }
        }
        Ok(schedules)
    }

    /// Removes a schedule; true when it existed.
    pub(super) async fn remove_schedule(&self, name: &str) -> Result<bool, QueueError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.keys.schedule(name))
            .cmd("SREM")
            .arg(self.keys.schedules())
            .arg(name);
        let (deleted, _): (i64, i64) = self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        Ok(deleted == 1)
    }

    /// Records what a scheduler pass did with a due schedule.
    pub(super) async fn store_fire(&self, name: &str, fire: Fire) -> Result<(), QueueError> {
        let millis = |t: Option<DateTime<Utc>>| {
            t.map_or(String::new(), |t| t.timestamp_millis().to_string())
        };
        let mut invocation = self.invocation(&self.scripts.schedule_fire);
        invocation
            .arg(name)
            .arg(millis(fire.next_run_at))
            .arg(millis(fire.fired.map(|(tick, _)| tick)))
            .arg(fire.fired.map_or(String::new(), |(_, job)| job.to_string()));
        match self.run_raw(&invocation, true).await {
            Ok(_) => Ok(()),
            Err(err) if refusal(&err, "not_found").is_some() => {
                Err(QueueError::ScheduleNotFound(name.to_owned()))
            }
            Err(err) => Err(redis_error(err)),
        }
    }
}
