//! The instance registry in Redis and takeovers by restart: heartbeats (`lua/heartbeat.lua`,
//! which refuses a name another live run holds), the live instances (a hash of entries and a
//! sorted set by last heartbeat, read together), leaving at shutdown (`lua/leave.lua`), taking
//! a dead run's attempts back (`lua/takeover.lua`) and the takeover counts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::record::ms;
use super::reply::{self, array, int, malformed, redis_error, text};
use super::{RedisQueue, STEP_LIMIT};
use crate::queue::instances::{GONE_AFTER, PRUNE_AFTER};
use crate::queue::{
    Changes, InstanceInfo, QueueError, Registration, TakeoverCause, TakeoverCounts,
};

impl RedisQueue {
    pub(super) async fn record_heartbeat(
        &self,
        instance: &InstanceInfo,
        displace: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Registration, QueueError> {
        let entry = InstanceInfo { last_seen: now, ..instance.clone() };
        let json = serde_json::to_string(&entry)
            .map_err(|err| QueueError::Internal(format!("instance entry: {err}")))?;
        let mut invocation = self.invocation(&self.scripts.heartbeat);
        invocation
            .arg(ms(now) as i64)
            .arg(&instance.name)
            .arg(&instance.run_id)
            .arg(json)
            .arg(GONE_AFTER.as_millis() as u64)
            .arg(PRUNE_AFTER.as_millis() as u64)
            .arg(displace.unwrap_or(""));
        let reply = self.run(&invocation, true).await?;
        let [outcome, previous] = array(&reply)? else { return Err(malformed("heartbeat")) };
        let previous = match text(previous)? {
            "" => None,
            stored => Some(parse_entry(stored)?),
        };
        match (text(outcome)?, previous) {
            ("held", Some(holder)) => Ok(Registration::Held(holder)),
            ("ok", previous) => {
                let replaced = previous.filter(|p| p.run_id != instance.run_id);
                Ok(Registration::Recorded { replaced })
            }
            _ => Err(malformed("heartbeat")),
        }
    }

    pub(super) async fn live_instances(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<InstanceInfo>, QueueError> {
        let since = ms(now) as i64 - GONE_AFTER.as_millis() as i64;
        let mut pipe = ::redis::pipe();
        pipe.cmd("ZRANGEBYSCORE").arg(self.keys.alive()).arg(since).arg("+inf");
        pipe.cmd("HGETALL").arg(self.keys.instances());
        let (live, entries): (Vec<String>, HashMap<String, String>) =
            self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        let mut instances = Vec::with_capacity(live.len());
        for name in live {
            // Pruned or left between the two reads: not listed.
            if let Some(stored) = entries.get(&name) {
                instances.push(parse_entry(stored)?);
            }
        }
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(instances)
    }

    pub(super) async fn leave_registry(&self, name: &str, run_id: &str) -> Result<(), QueueError> {
        let mut invocation = self.invocation(&self.scripts.leave);
        invocation.arg(name).arg(run_id);
        self.run(&invocation, true).await.map(|_| ())
    }

    pub(super) async fn take_over_instance(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut invocation = self.invocation(&self.scripts.takeover);
        invocation.arg(ms(now) as i64).arg(name).arg(STEP_LIMIT);
        let reply = self.run(&invocation, true).await?;
        let [more, changes, taken] = array(&reply)? else { return Err(malformed("takeover")) };
        let mut changes = reply::changes(changes)?;
        changes.more = int(more)? == 1;
        changes.taken_over = reply::taken(taken, TakeoverCause::InstanceRestarted)?;
        Ok(changes)
    }

    pub(super) async fn takeover_counts(&self) -> Result<TakeoverCounts, QueueError> {
        let cmd = ::redis::cmd("HMGET")
            .arg(self.keys.takeovers())
            .arg(TakeoverCause::LeaseExpired.as_str())
            .arg(TakeoverCause::InstanceRestarted.as_str())
            .to_owned();
        let (lease_expired, instance_restarted): (Option<u64>, Option<u64>) =
            self.cmd(&cmd).await?;
        Ok(TakeoverCounts {
            lease_expired: lease_expired.unwrap_or(0),
            instance_restarted: instance_restarted.unwrap_or(0),
        })
    }
}

/// A stored entry, `<run id>|<entry as JSON>` (the JSON holds the run id too).
fn parse_entry(stored: &str) -> Result<InstanceInfo, QueueError> {
    let (_, json) = stored.split_once('|').ok_or_else(|| malformed("an instance entry"))?;
    serde_json::from_str(json).map_err(|_| malformed("an instance entry"))
}
