//! The history of finished jobs every instance shares (see `queue/history.rs`): one hash per
//! hour, `s:<bucket>` and `f:<bucket>` counts, which instances add their deltas to with
//! `HINCRBY` every couple of seconds and readers read whole (the hour now and the one before).
//!
//! Why not a write per finished job: a busy deployment finishes thousands of jobs a second,
//! and the completion script is its hottest call; a delta per instance every couple of seconds
//! costs Redis a few commands whatever the throughput.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::reply::redis_error;
use super::RedisQueue;
use crate::queue::history::{Bucket, Counts, STEP_SECS};
use crate::queue::QueueError;

/// How long an hour's hash lives after its last write: the read spans the last hour, so the
/// hour before the current one must outlive it.
const KEEP_SECS: i64 = 2 * 3600;

/// The hour (since the epoch) bucket `bucket` belongs to.
fn hour_of(bucket: Bucket) -> i64 {
    (bucket * STEP_SECS).div_euclid(3600)
}

impl RedisQueue {
    /// Adds `counts` to the shared history: one transaction, not retried (an increment run
    /// twice counts twice; the caller keeps what a failed call did not add).
    pub(super) async fn add_history(
        &self,
        counts: &BTreeMap<Bucket, Counts>,
    ) -> Result<(), QueueError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let mut hours = BTreeSet::new();
        for (&bucket, c) in counts {
            let key = self.keys.history(hour_of(bucket));
            for (field, n) in [("s", c.succeeded), ("f", c.failed)] {
                if n > 0 {
                    pipe.cmd("HINCRBY").arg(&key).arg(format!("{field}:{bucket}")).arg(n).ignore();
                }
            }
            hours.insert(hour_of(bucket));
        }
        for hour in hours {
            pipe.cmd("EXPIRE").arg(self.keys.history(hour)).arg(KEEP_SECS).ignore();
        }
        let () = self.redis.pipe(&pipe, false).await.map_err(redis_error)?;
        Ok(())
    }

    /// The shared counts of buckets `from..=to`.
    pub(super) async fn read_history(
        &self,
        from: Bucket,
        to: Bucket,
    ) -> Result<BTreeMap<Bucket, Counts>, QueueError> {
        let mut pipe = ::redis::pipe();
        for hour in hour_of(from)..=hour_of(to) {
            pipe.cmd("HGETALL").arg(self.keys.history(hour));
        }
        let hashes: Vec<HashMap<String, u64>> =
            self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        let mut counts: BTreeMap<Bucket, Counts> = BTreeMap::new();
        for (field, n) in hashes.into_iter().flatten() {
            let Some((which, bucket)) = field.split_once(':') else { continue };
            let Ok(bucket) = bucket.parse::<Bucket>() else { continue };
            if !(from..=to).contains(&bucket) {
                continue;
            }
            let entry = counts.entry(bucket).or_default();
            match which {
                "s" => entry.succeeded += n,
                "f" => entry.failed += n,
                _ => {}
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fall_in_the_hour_of_their_start() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(359), 0, "the last 10 s of the first hour");
        assert_eq!(hour_of(360), 1);
    }
}
