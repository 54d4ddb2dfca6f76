//! Flow control in Redis: limits (`lua/limit.lua`), the jobs they hold back
//! (`lua/throttled.lua` counts them, `lua/limit_jobs.lua` names them), paused queues and group
//! weights. Claims apply all of it inside the
//! claim script; these are the calls that manage and report it.

use std::collections::{BTreeMap, BTreeSet};

use ::redis::Value;
use chrono::{DateTime, Utc};

use super::record::ms;
use super::reply::{array, id, int, malformed, redis_error, text, time};
use super::RedisQueue;
use crate::job::{JobId, JobRecord, JobStatus};
use crate::queue::flow::{GroupWeight, Limit, LimitSpec, LimitState, QueueInfo, Rate};
use crate::queue::QueueError;

impl RedisQueue {
    pub(super) async fn store_limit(
        &self,
        name: &str,
        spec: LimitSpec,
        now: DateTime<Utc>,
    ) -> Result<(Limit, bool), QueueError> {
        let mut invocation = self.invocation(&self.scripts.limit);
        let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
        invocation
            .arg(ms(now) as i64)
            .arg("put")
            .arg(name)
            .arg(number(spec.rate.map(|r| r.tokens)))
            .arg(number(spec.rate.map(|r| r.per_ms)))
            .arg(number(spec.concurrency));
        let created = int(&self.run(&invocation, true).await?)? == 1;
        let limit = self.read_limits(&[name.to_owned()], now).await?.pop();
        let limit = limit.ok_or_else(|| QueueError::LimitNotFound(name.to_owned()))?;
        Ok((limit, created))
    }

    /// The limits of `names` that exist, in the order given.
    pub(super) async fn read_limits(
        &self,
        names: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Limit>, QueueError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.invocation(&self.scripts.limit);
        invocation.arg(ms(now) as i64).arg("read");
        for name in names {
            invocation.arg(name);
        }
        let reply = self.run(&invocation, true).await?;
        let mut limits = Vec::with_capacity(names.len());
        for entry in array(&reply)? {
            let fields = array(entry)?;
            if !fields.is_empty() {
                limits.push(limit_of(fields)?);
            }
        }
        Ok(limits)
    }

    pub(super) async fn remove_limit(&self, name: &str) -> Result<bool, QueueError> {
        let mut invocation = self.invocation(&self.scripts.limit);
        invocation.arg(ms(Utc::now()) as i64).arg("delete").arg(name);
        Ok(int(&self.run(&invocation, true).await?)? == 1)
    }

    pub(super) async fn store_hold(
        &self,
        name: &str,
        until: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let mut invocation = self.invocation(&self.scripts.limit);
        invocation.arg(ms(Utc::now()) as i64).arg("hold").arg(name).arg(ms(until) as i64);
        match int(&self.run(&invocation, true).await?)? {
            1 => Ok(()),
            _ => Err(QueueError::LimitNotFound(name.to_owned())),
        }
    }

    pub(super) async fn throttled_per_queue(
        &self,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, u64>, QueueError> {
        // Most deployments have no lane at all: one cheap command rather than a script (stats
        // are read often, by dashboards polling them).
        let mut pipe = ::redis::pipe();
        pipe.cmd("SCARD").arg(self.keys.lanes()).cmd("SCARD").arg(self.keys.fresh_lanes());
        let (lanes, fresh): (u64, u64) = self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        if lanes + fresh == 0 {
            return Ok(BTreeMap::new());
        }
        let mut invocation = self.invocation(&self.scripts.throttled);
        invocation.arg(ms(now) as i64);
        let reply = self.run(&invocation, true).await?;
        let mut throttled = BTreeMap::new();
        for pair in array(&reply)?.chunks_exact(2) {
            throttled.insert(text(&pair[0])?.to_owned(), int(&pair[1])?.max(0) as u64);
        }
        Ok(throttled)
    }

    /// The queued jobs naming limit `name` that it holds back now (`lua/limit_jobs.lua`), at
    /// most `most`, in claim order.
    pub(super) async fn held_by_limit(
        &self,
        name: &str,
        most: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let mut invocation = self.invocation(&self.scripts.limit_jobs);
        invocation.arg(ms(now) as i64).arg(name).arg(most);
        let reply = self.run(&invocation, true).await?;
        let [found, ids @ ..] = array(&reply)? else { return Err(malformed("limit_jobs")) };
        if int(found)? == 0 {
            return Err(QueueError::LimitNotFound(name.to_owned()));
        }
        let ids = ids.iter().map(id).collect::<Result<Vec<JobId>, _>>()?;
        let records = self.read_jobs(&ids).await?.into_iter().flatten();
        // A job claimed or cancelled between the two reads is no longer held back.
        Ok(records.filter(|r| r.status == JobStatus::Queued).collect())
    }

    pub(super) async fn store_pause(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        if paused {
            pipe.cmd("SADD").arg(self.keys.paused()).arg(queue).ignore();
        } else {
            // Resumed: an idle instance looks at once (the wake list holds one marker at most).
            pipe.cmd("SREM").arg(self.keys.paused()).arg(queue).ignore();
            pipe.cmd("RPUSH").arg(self.keys.wake()).arg("1").ignore();
            pipe.cmd("LTRIM").arg(self.keys.wake()).arg(0).arg(0).ignore();
        }
        let () = self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        Ok(())
    }

    pub(super) async fn queue_infos(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueInfo>, QueueError> {
        let (mut counts, throttled) =
            tokio::try_join!(self.counts(), self.throttled_per_queue(now))?;
        let paused: BTreeSet<String> =
            self.cmd(::redis::cmd("SMEMBERS").arg(self.keys.paused())).await?;
        for queue in &paused {
            counts.entry(queue.clone()).or_default();
        }
        for (queue, held) in throttled {
            counts.entry(queue).or_default().throttled = held;
        }
        let infos = counts.into_iter().map(|(name, counts)| QueueInfo {
            paused: paused.contains(&name),
            name,
            counts,
        });
        Ok(infos.collect())
    }

    pub(super) async fn store_weight(
        &self,
        group: &str,
        weight: Option<u32>,
    ) -> Result<(), QueueError> {
        let key = self.keys.group_weights();
        let cmd = match weight.filter(|w| *w != 1) {
            Some(weight) => ::redis::cmd("HSET").arg(key).arg(group).arg(weight).to_owned(),
            None => ::redis::cmd("HDEL").arg(key).arg(group).to_owned(),
        };
        let _: i64 = self.cmd(&cmd).await?;
        Ok(())
    }

    pub(super) async fn read_weights(&self) -> Result<Vec<GroupWeight>, QueueError> {
        let weights: BTreeMap<String, u32> =
            self.cmd(::redis::cmd("HGETALL").arg(self.keys.group_weights())).await?;
        Ok(weights.into_iter().map(|(name, weight)| GroupWeight { name, weight }).collect())
    }
}

/// A limit as `lua/limit.lua` reads it: name, created, updated, tokens, per_ms, concurrency,
/// held, tokens left, next token, running.
fn limit_of(fields: &[Value]) -> Result<Limit, QueueError> {
    let [name, created, updated, tokens, per_ms, concurrency, held, left, next, running] = fields
    else {
        return Err(malformed("a limit"));
    };
    let optional = |value: &Value| -> Result<Option<u64>, QueueError> {
        let text = text(value)?;
        (!text.is_empty()).then(|| text.parse().map_err(|_| malformed("a number"))).transpose()
    };
    let at = |value: &Value| -> Result<DateTime<Utc>, QueueError> {
        time(int(value)?).ok_or_else(|| malformed("a time"))
    };
    let rate = match (optional(tokens)?, optional(per_ms)?) {
        (Some(tokens), Some(per_ms)) => Some(Rate { tokens, per_ms }),
        _ => None,
    };
    let left = int(left)?;
    Ok(Limit {
        name: text(name)?.to_owned(),
        spec: LimitSpec { rate, concurrency: optional(concurrency)? },
        state: LimitState {
            tokens_left: rate.is_some().then_some(left.max(0) as u64),
            running: int(running)?.max(0) as u64,
            next_token_at: time(int(next)?),
            held_until: time(int(held)?),
        },
        created_at: at(created)?,
        updated_at: at(updated)?,
    })
}
