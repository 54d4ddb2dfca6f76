//! The life of an attempt in Redis: claimed (a `run` entry beside the untouched record, one
//! lease token per claim), renewed, released, completed (the final record built here, applied
//! in bulk by the script), and taken back after a claim whose answer was lost.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;
use chrono::{DateTime, Utc};

use super::jobs::read;
use super::record::{self, ms, Attempt, Ending};
use super::reply::{self, array, bytes, int, malformed, redis_error, text};
use super::{bulk, Held, HeldJob, RedisQueue};
use crate::job::{JobId, JobStatus};
use crate::queue::{
    Changes, Claim, Claimed, Completion, LeaseRef, LeaseState, Outcome, QueueError,
};

impl RedisQueue {
    /// Claims for `workers`; also answers when a limit that held jobs back frees next (ms).
    pub(super) async fn claim_chunk(
        &self,
        workers: &[Arc<str>],
        claim: &Claim,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Claimed>, Option<i64>), QueueError> {
        let mut invocation = self.invocation(&self.scripts.claim);
        invocation.arg(ms(now) as i64).arg(claim.lease.as_millis() as u64).arg(workers.len());
        for worker in workers {
            invocation.arg(&**worker);
        }
        for kind in claim.kinds.iter() {
            invocation.arg(&**kind);
        }
        // Not retried: a second run would claim other jobs. What a lost answer gave this
        // instance is taken back by its next claim (`recover`).
        let reply = self.run(&invocation, false).await?;
        let items = array(&reply)?;
        let retry_at = items.first().map(int).transpose()?.filter(|&at| at > 0);
        let mut claimed = Vec::with_capacity(items.len() / 3);
        let mut held = Vec::with_capacity(items.len() / 3);
        for triple in items.get(2..).unwrap_or_default().chunks_exact(3) {
            let id = reply::id(&triple[0])?;
            let stored = bytes(&triple[1])?;
            let run = bytes(&triple[2])?;
            let attempt = Attempt::parse(run).ok_or_else(|| malformed("a running attempt"))?;
            let record = read(id, stored, Some(run), false, None)?;
            let lease = LeaseRef { id, token: attempt.token };
            let job = HeldJob::of(&record);
            claimed.push(Claimed { record, lease });
            let held_attempt = Held { stored: stored.to_vec(), run: run.to_vec(), attempt, job };
            held.push((id, held_attempt));
        }
        self.held().extend(held);
        Ok((claimed, retry_at))
    }

    pub(super) async fn complete_chunk(
        &self,
        done: &[Completion],
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut ends = Vec::with_capacity(done.len());
        let mut missing = Vec::new();
        {
            let held = self.held();
            for completion in done {
                let lease = completion.lease;
                match held.get(&lease.id).filter(|h| h.attempt.token == lease.token) {
                    Some(held) => ends.push(ending(lease, held, &completion.outcome, now, false)?),
                    None => missing.push(completion),
                }
            }
        }
        // Attempts this instance no longer holds (a retried call after a lost answer, say):
        // read the job back to build its ending; the script refuses a stale one.
        let mut changes = Changes::default();
        for completion in missing {
            let lease = completion.lease;
            match self.read_held(lease).await? {
                Some(held) => ends.push(ending(lease, &held, &completion.outcome, now, false)?),
                None => changes.stale += 1,
            }
        }
        // The script refuses a batch holding stale attempts, or jobs whose cancel was
        // requested meanwhile: those are dropped or made cancelled, and the rest sent again.
        while !ends.is_empty() {
            let mut invocation = self.invocation(&self.scripts.complete);
            bulk::complete(&mut invocation, &self.keys, &ends, now);
            let reply = self.run(&invocation, true).await?;
            let items = array(&reply)?;
            match items {
                [outcome, recorded] if text(outcome)? == "done" => {
                    reply::merge(&mut changes, reply::changes(recorded)?);
                    break;
                }
                [_, stale, cancelled] => {
                    let positions = |v: &Value| -> Result<Vec<usize>, QueueError> {
                        array(v)?.iter().map(|p| Ok(int(p)? as usize - 1)).collect()
                    };
                    for at in positions(cancelled)? {
                        // A cancel was requested meanwhile: the job ends cancelled unless it
                        // succeeded, with the request on its record either way.
                        let lease = LeaseRef { id: ends[at].id, token: ends[at].token };
                        let outcome = match done.iter().find(|c| c.lease == lease) {
                            Some(c) if matches!(c.outcome, Outcome::Succeeded(_)) => {
                                c.outcome.clone()
                            }
                            _ => Outcome::Cancelled("cancelled".into()),
                        };
                        let held = self.held().get(&lease.id).cloned();
                        let held = match held {
                            Some(held) => held,
                            None => match self.read_held(lease).await? {
                                Some(held) => held,
                                None => continue,
                            },
                        };
                        ends[at] = ending(lease, &held, &outcome, now, true)?;
                    }
                    let stale = positions(stale)?;
                    changes.stale += stale.len();
                    let mut at = 0;
                    ends.retain(|_| {
                        at += 1;
                        !stale.contains(&(at - 1))
                    });
                }
                _ => return Err(malformed("complete")),
            }
        }
        let mut held = self.held();
        for completion in done {
            forget(&mut held, completion.lease);
        }
        Ok(changes)
    }

    /// Takes back the jobs a claim whose answer was lost gave this instance (see
    /// `lua/recover.lua`): those whose attempt names one of its slots under a token it does not
    /// hold.
    pub(super) async fn recover(
        &self,
        claim: &Claim,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let Some(prefix) = claim.workers.first().and_then(|w| w.rsplit_once('/')) else {
            return Ok(());
        };
        let tokens: BTreeSet<u64> = self.held().values().map(|h| h.attempt.token).collect();
        let mut invocation = self.invocation(&self.scripts.recover);
        invocation.arg(ms(now) as i64).arg(format!("{}/", prefix.0));
        for token in tokens {
            invocation.arg(token);
        }
        let reply = self.run(&invocation, true).await?;
        let [recovered, _] = array(&reply)? else { return Err(malformed("recover")) };
        let recovered = int(recovered)?;
        if recovered > 0 {
            tracing::warn!(recovered, "claimed jobs whose answer was lost went back to queued");
        }
        self.lost_claim.store(false, Ordering::Release);
        Ok(())
    }

    /// The attempt `lease` as stored in Redis, when its job still runs under it.
    async fn read_held(&self, lease: LeaseRef) -> Result<Option<Held>, QueueError> {
        let id = lease.id.to_string();
        let mut pipe = ::redis::pipe();
        pipe.cmd("GET").arg(self.keys.job(&id)).cmd("HGET").arg(self.keys.run()).arg(&id);
        let (stored, run): (Option<Vec<u8>>, Option<Vec<u8>>) =
            self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        let (Some(stored), Some(run)) = (stored, run) else { return Ok(None) };
        let Some(attempt) = Attempt::parse(&run).filter(|a| a.token == lease.token) else {
            return Ok(None);
        };
        let record = read(lease.id, &stored, Some(&run), false, None)?;
        Ok(Some(Held { stored, run, attempt, job: HeldJob::of(&record) }))
    }

    pub(super) fn held(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Held>> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) async fn release_chunk(
        &self,
        leases: &[LeaseRef],
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut invocation = self.invocation(&self.scripts.release);
        invocation.arg(ms(now) as i64);
        for lease in leases {
            invocation.arg(lease.id.to_string()).arg(lease.token);
        }
        let reply = self.run(&invocation, true).await?;
        let changes = stale_and_changes(&reply)?;
        let mut held = self.held();
        for lease in leases {
            forget(&mut held, *lease);
        }
        Ok(changes)
    }

    pub(super) async fn renew_chunk(
        &self,
        leases: &[LeaseRef],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<LeaseState>, QueueError> {
        let mut invocation = self.invocation(&self.scripts.renew);
        invocation.arg(ms(now) as i64).arg(lease.as_millis() as u64);
        for lease in leases {
            invocation.arg(lease.id.to_string()).arg(lease.token);
        }
        let reply = self.run(&invocation, true).await?;
        let states = text(&reply)?
            .bytes()
            .map(|state| match state {
                b'A' => Ok(LeaseState::Active),
                b'C' => Ok(LeaseState::CancelRequested),
                b'L' => Ok(LeaseState::Lost),
                _ => Err(malformed("a lease state")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut held = self.held();
        for (lease, state) in leases.iter().zip(&states) {
            if *state == LeaseState::Lost {
                forget(&mut held, *lease);
            }
        }
        Ok(states)
    }
}

/// Forgets the attempt `lease` (not a newer attempt of the same job this instance holds).
fn forget(held: &mut HashMap<JobId, Held>, lease: LeaseRef) {
    if held.get(&lease.id).is_some_and(|h| h.attempt.token == lease.token) {
        held.remove(&lease.id);
    }
}

/// The ending of the attempt `held` with `outcome`: its new status and final record.
fn ending(
    lease: LeaseRef,
    held: &Held,
    outcome: &Outcome,
    now: DateTime<Utc>,
    cancel_requested: bool,
) -> Result<bulk::End, QueueError> {
    let record = &held.job;
    let (status, run_at, error, result) = match outcome {
        Outcome::Succeeded(result) => (JobStatus::Succeeded, None, None, Some(result.get())),
        Outcome::Failed { error, retry_at: Some(at) } if record.attempts < record.max_attempts => {
            let status = if *at > now { JobStatus::Scheduled } else { JobStatus::Queued };
            (status, Some(*at), Some(error.as_str()), None)
        }
        Outcome::Failed { error, .. } => (JobStatus::Failed, None, Some(error.as_str()), None),
        Outcome::Cancelled(reason) => (JobStatus::Cancelled, None, Some(reason.as_str()), None),
    };
    let score = match status {
        JobStatus::Scheduled => run_at.map_or(0, |at| ms(at) as u64),
        JobStatus::Queued => bulk::ready_score(lease.id, record.priority),
        _ => 0,
    };
    let end = Ending { status, now, run_at, error, result, cancel_requested };
    let blob = record::ended(lease.id, &held.stored, &held.attempt, end)
        .map_err(|err| QueueError::Internal(err.to_string()))?;
    Ok(bulk::End {
        id: lease.id,
        token: lease.token,
        run: held.run.clone(),
        queue: record.queue.clone(),
        kind: record.kind.clone(),
        lane: record.lane.clone(),
        limits: record.limits.clone(),
        status,
        score,
        record: blob,
    })
}

/// `{stale count, changes}`.
fn stale_and_changes(reply: &Value) -> Result<Changes, QueueError> {
    let [stale, changes] = array(reply)? else { return Err(malformed("changes")) };
    let mut changes = reply::changes(changes)?;
    changes.stale = int(stale)?.max(0) as usize;
    Ok(changes)
}
