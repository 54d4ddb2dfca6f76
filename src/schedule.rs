//! Cron schedules: the stored [`Schedule`], the [`ScheduleSpec`] a
//! client sends, and the pure tick arithmetic ([`CronExpr`], [`CronExpr::due`]) the scheduler
//! actor calls.
//!
//! Exactly one job per tick, however many instances run, comes from the submit side: a fired
//! tick is submitted with the idempotency key `cron:<name>:<tick>`, so a second instance firing
//! the same tick gets the first instance's job back instead of creating one.

use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::job::spec::SpecError;
use crate::job::{JobId, JobSpec};

/// A tick fired later than this after its time counts as missed (the instance was not
/// running), and is replayed only under `catch_up`.
pub const MISFIRE_GRACE: Duration = Duration::seconds(5);

/// Longest accepted schedule name.
pub const MAX_NAME_BYTES: usize = 128;

/// The body of `PUT /v1/schedules/{name}`.
///
/// ```
/// use jobyard::schedule::ScheduleSpec;
///
/// // Parsed from JSON: every five minutes, Paris time.
/// let spec: ScheduleSpec = serde_json::from_str(
///     r#"{
///         "cron": "0 */5 * * * *",
///         "timezone": "Europe/Paris",
///         "job": {"kind": "http", "payload": {"url": "https://example.com/ping"}},
///         "catch_up": true
///     }"#,
/// )?;
/// assert_eq!(spec.job.kind, "http");
///
/// // The same from code, given a runtime's client:
/// async fn install(
///     client: &jobyard::Client,
///     spec: ScheduleSpec,
/// ) -> Result<(), jobyard::RuntimeError> {
///     let (schedule, created) = client.put_schedule("ping", spec).await?;
///     println!("created: {created}; next run at {:?}", schedule.next_run_at);
///     Ok(())
/// }
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Cron expression with seconds (`sec min hour day month weekday [year]`); a classic
    /// five-field expression is read as firing at second 0.
    pub cron: String,
    /// IANA time zone name, default `UTC`.
    #[serde(
        default,
        deserialize_with = "crate::job::non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub timezone: Option<String>,
    /// The job each tick submits. A job that could never be submitted (an invalid field, a
    /// dependency that does not exist) is refused when the schedule is stored.
    pub job: JobSpec,
    /// When ticks were missed (no instance ran), fire the latest of them anyway (default false);
    /// otherwise missed ticks are skipped. A tick more than [`MISFIRE_GRACE`] late counts as
    /// missed.
    #[serde(default)]
    pub catch_up: bool,
}

/// A stored schedule.
///
/// ```no_run
/// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
/// for schedule in client.schedules().await? {
///     let last = match (schedule.last_run_at, schedule.last_job_id) {
///         (Some(at), Some(job)) => format!("last fired at {at} (job {job})"),
///         _ => "never fired".to_string(),
///     };
///     println!("{} `{}` ({}): {last}", schedule.name, schedule.cron, schedule.timezone);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Schedule {
    /// The schedule's name, unique per store: 1 to 128 ASCII letters, digits, `_`, `.`, `:` or `-`.
    pub name: String,
    /// The cron expression, as given.
    pub cron: String,
    /// The IANA time zone the expression is read in (`UTC` when none was given).
    pub timezone: String,
    /// The job each tick submits.
    pub job: JobSpec,
    /// Whether the latest missed tick still fires (see [`ScheduleSpec::catch_up`]).
    pub catch_up: bool,
    /// When the schedule was first stored (kept when it is replaced).
    pub created_at: DateTime<Utc>,
    /// When it was last stored or replaced.
    pub updated_at: DateTime<Utc>,
    /// The next tick it fires at; `None` when the expression never fires again.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The latest tick it fired; `None` before the first.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The job the latest fired tick submitted; `None` before the first.
    pub last_job_id: Option<JobId>,
}

/// What one scheduler pass did with a due schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Fire {
    /// The tick that was fired and the job it enqueued; `None` when missed ticks were skipped.
    pub fired: Option<(DateTime<Utc>, JobId)>,
    /// The schedule's next tick after this pass; `None` when it never fires again.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// A parsed cron expression in its time zone.
#[derive(Clone, Debug)]
pub struct CronExpr {
    schedule: cron::Schedule,
    tz: Tz,
}

/// What to do with a schedule at a given moment.
#[derive(Clone, Debug, PartialEq)]
pub enum Due {
    /// Nothing is due before the stored `next_run_at`.
    NotYet,
    /// Fire `tick`, then wait for `next`.
    Fire {
        /// The tick to fire: the latest one due.
        tick: DateTime<Utc>,
        /// The first tick after now, to wait for; `None` when none is left.
        next: Option<DateTime<Utc>>,
    },
    /// Ticks were missed while no instance ran: skip them, wait for `next`.
    Skip {
        /// The first tick after now, to wait for; `None` when none is left.
        next: Option<DateTime<Utc>>,
    },
}

impl CronExpr {
    /// Parses `expr` in `timezone` (default UTC); errors name the field at fault.
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Self, SpecError> {
        let fields = expr.split_whitespace().count();
        let normalized = if fields == 5 { format!("0 {expr}") } else { expr.to_owned() };
        let schedule = cron::Schedule::from_str(&normalized).map_err(|err| {
            let message = crate::wording::cron_error(expr, &normalized, &err.to_string());
            SpecError::invalid("cron", message)
        })?;
        let tz = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                SpecError::invalid("timezone", format!("unknown time zone '{name}'"))
            })?,
        };
        Ok(CronExpr { schedule, tz })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = self.tz.from_utc_datetime(&t.naive_utc());
        self.schedule.after(&local).next().map(|d| d.with_timezone(&Utc))
    }

    /// The last tick at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let just_after = t + Duration::milliseconds(1);
        let local = self.tz.from_utc_datetime(&just_after.naive_utc());
        self.schedule.after(&local).next_back().map(|d| d.with_timezone(&Utc))
    }

    /// Decides, at `now`, what a schedule whose next tick was `next_run_at` must do: fire the
    /// latest due tick when it is on time (or `catch_up` is set), skip older ones.
    pub fn due(
        &self,
        next_run_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        catch_up: bool,
    ) -> Due {
        let Some(due) = next_run_at else {
            return Due::NotYet;
        };
        if due > now {
            return Due::NotYet;
        }
        let latest = self.last_at_or_before(now).filter(|t| *t >= due).unwrap_or(due);
        let next = self.next_after(now);
        if now - latest <= MISFIRE_GRACE || catch_up {
            Due::Fire { tick: latest, next }
        } else {
            Due::Skip { next }
        }
    }
}

/// Validates a schedule name (a path segment).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let valid_chars =
        name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !valid_chars {
        return Err(SpecError::invalid(
            "name",
            format!("schedule name must match [A-Za-z0-9_.:-]{{1,{MAX_NAME_BYTES}}}"),
        ));
    }
    Ok(())
}

/// The idempotency key of the job a tick enqueues.
pub fn tick_key(name: &str, tick: DateTime<Utc>) -> String {
    format!("cron:{name}:{}", tick.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn seconds_field_is_honoured() {
        let expr = CronExpr::parse("*/5 * * * * *", None).unwrap();
        assert_eq!(expr.next_after(at("2026-01-01T00:00:01Z")), Some(at("2026-01-01T00:00:05Z")));
        assert_eq!(expr.next_after(at("2026-01-01T00:00:05Z")), Some(at("2026-01-01T00:00:10Z")));
        assert_eq!(
            expr.last_at_or_before(at("2026-01-01T00:00:05Z")),
            Some(at("2026-01-01T00:00:05Z"))
        );
        assert_eq!(
            expr.last_at_or_before(at("2026-01-01T00:00:09Z")),
            Some(at("2026-01-01T00:00:05Z"))
        );
    }

    #[test]
    fn five_fields_fire_at_second_zero() {
        let expr = CronExpr::parse("30 2 * * *", None).unwrap();
        assert_eq!(expr.next_after(at("2026-01-01T00:00:00Z")), Some(at("2026-01-01T02:30:00Z")));
    }

    #[test]
    fn time_zone_shifts_the_ticks() {
        // 09:00 in New York is 14:00 UTC in winter.
        let expr = CronExpr::parse("0 0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(expr.next_after(at("2026-01-10T00:00:00Z")), Some(at("2026-01-10T14:00:00Z")));
    }

    #[test]
    fn bad_expressions_and_zones_name_their_field() {
        let err = CronExpr::parse("not cron", None).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("cron"));
        let err = CronExpr::parse("* * * * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("timezone"));
    }

    #[test]
    fn an_on_time_tick_fires() {
        let expr = CronExpr::parse("*/5 * * * * *", None).unwrap();
        let due = expr.due(Some(at("2026-01-01T00:00:05Z")), at("2026-01-01T00:00:05.200Z"), false);
        assert_eq!(
            due,
            Due::Fire { tick: at("2026-01-01T00:00:05Z"), next: Some(at("2026-01-01T00:00:10Z")) }
        );
    }

    #[test]
    fn missed_ticks_are_skipped_unless_catch_up_then_only_the_latest_runs() {
        let expr = CronExpr::parse("0 * * * * *", None).unwrap();
        let stored = Some(at("2026-01-01T00:01:00Z"));
        let now = at("2026-01-01T01:00:30Z");
        assert_eq!(
            expr.due(stored, now, false),
            Due::Skip { next: Some(at("2026-01-01T01:01:00Z")) }
        );
        assert_eq!(
            expr.due(stored, now, true),
            Due::Fire { tick: at("2026-01-01T01:00:00Z"), next: Some(at("2026-01-01T01:01:00Z")) }
        );
    }

    #[test]
    fn nothing_is_due_before_the_next_tick() {
        let expr = CronExpr::parse("0 * * * * *", None).unwrap();
        assert_eq!(
            expr.due(Some(at("2026-01-01T00:01:00Z")), at("2026-01-01T00:00:59Z"), true),
            Due::NotYet
        );
    }
}
