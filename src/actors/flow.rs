//! The queue actor's flow-control messages: managing limits and group weights, pausing and
//! resuming queues, reading them. Like every call, they go through the [`QueueActor`] (the one
//! gateway to the backend), which wakes the local workers when a change may let jobs through.

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::queue::flow::{GroupWeight, Limit, LimitSpec, QueueInfo, MAX_HOLD};
use crate::queue::QueueError;

use super::queue::{JobsReady, QueueActor};

/// Create or replace a limit; answers it and whether it was created.
#[derive(Message)]
#[rtype(result = "Result<(Limit, bool), QueueError>")]
pub struct PutLimit {
    pub name: String,
    pub spec: LimitSpec,
}

/// One limit with its state.
#[derive(Message)]
#[rtype(result = "Result<Option<Limit>, QueueError>")]
pub struct GetLimit(pub String);

/// Every limit with its state.
#[derive(Message)]
#[rtype(result = "Result<Vec<Limit>, QueueError>")]
pub struct ListLimits;

/// Remove a limit; true when it existed.
#[derive(Message)]
#[rtype(result = "Result<bool, QueueError>")]
pub struct DeleteLimit(pub String);

/// Hold every job under a limit until a time (an upstream said so), at most [`MAX_HOLD`] ahead.
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct HoldLimit {
    pub name: String,
    pub until: DateTime<Utc>,
}

/// The queued jobs naming a limit that it holds back now, at most `most`.
#[derive(Message)]
#[rtype(result = "Result<Vec<crate::job::JobRecord>, QueueError>")]
pub struct GetLimitJobs {
    pub name: String,
    pub most: usize,
}

/// Pause (true) or resume (false) a queue.
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct PauseQueue {
    pub queue: String,
    pub paused: bool,
}

/// Every queue with its counts and whether it is paused.
#[derive(Message)]
#[rtype(result = "Result<Vec<QueueInfo>, QueueError>")]
pub struct ListQueues;

/// Set a group's weight (`None`: back to 1).
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct SetGroupWeight {
    pub group: String,
    pub weight: Option<u32>,
}

/// The groups whose weight is not 1.
#[derive(Message)]
#[rtype(result = "Result<Vec<GroupWeight>, QueueError>")]
pub struct ListGroupWeights;

/// Handles `$msg` with `$call` (an async expression over `$backend`, `$msg` bound as `$m` and
/// the time as `$now`); when `$wakes`, local workers look for work once the call succeeded.
macro_rules! flow_call {
    ($msg:ty => $out:ty, wakes: $wakes:expr, |$backend:ident, $m:ident, $now:ident| $call:expr) => {
        impl Handler<$msg> for QueueActor {
            type Result = ResponseActFuture<Self, Result<$out, QueueError>>;
            #[allow(unused_variables)]
            fn handle(&mut self, $m: $msg, _: &mut Context<Self>) -> Self::Result {
                let $backend = self.backend.clone();
                let $now = self.clock.now();
                let wakes: fn(&$msg) -> bool = $wakes;
                let wake = wakes(&$m);
                let call = async move { $call.await };
                Box::pin(call.into_actor(self).map(move |result, act, _| {
                    if wake && result.is_ok() {
                        for (ready, _) in &act.workers {
                            ready.do_send(JobsReady);
                        }
                    }
                    result
                }))
            }
        }
    };
}

flow_call!(PutLimit => (Limit, bool), wakes: |_| true, |backend, msg, now| backend.put_limit(&msg.name, msg.spec, now));
flow_call!(GetLimit => Option<Limit>, wakes: |_| false, |backend, msg, now| backend.get_limit(&msg.0, now));
flow_call!(ListLimits => Vec<Limit>, wakes: |_| false, |backend, msg, now| backend.list_limits(now));
flow_call!(DeleteLimit => bool, wakes: |_| true, |backend, msg, now| backend.delete_limit(&msg.0));
flow_call!(HoldLimit => (), wakes: |_| false, |backend, msg, now| {
    backend.hold_limit(&msg.name, msg.until.min(now + MAX_HOLD), now)
});
flow_call!(GetLimitJobs => Vec<crate::job::JobRecord>, wakes: |_| false, |backend, msg, now| {
    backend.limit_jobs(&msg.name, msg.most, now)
});
flow_call!(PauseQueue => (), wakes: |msg| !msg.paused, |backend, msg, now| backend.pause_queue(&msg.queue, msg.paused));
flow_call!(ListQueues => Vec<QueueInfo>, wakes: |_| false, |backend, msg, now| backend.queues(now));
flow_call!(SetGroupWeight => (), wakes: |_| false, |backend, msg, now| backend.set_group_weight(&msg.group, msg.weight));
flow_call!(ListGroupWeights => Vec<GroupWeight>, wakes: |_| false, |backend, msg, now| backend.group_weights());
