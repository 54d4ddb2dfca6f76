//! The queue actor's messages for the instance registry and takeovers (see
//! [`crate::queue::instances`]): heartbeats, the live instances, leaving, taking back what a
//! dead run of this instance left running, the takeover counts; and the log line of every
//! takeover, whichever call made it. None of this is on the job pipeline: a heartbeat and a
//! listing a second per instance.

use actix::prelude::*;

use super::QueueActor;
use crate::queue::{
    Changes, InstanceInfo, QueueError, Registration, Takeover, TakeoverCause, TakeoverCounts,
};

/// Record this instance's heartbeat (the queue's clock gives its time).
#[derive(Message)]
#[rtype(result = "Result<Registration, QueueError>")]
pub struct RecordHeartbeat {
    /// This instance's entry.
    pub instance: InstanceInfo,
    /// A run the heartbeat may replace although it was seen lately (found dead by watching).
    pub displace: Option<String>,
}

/// The live instances, by name.
#[derive(Message)]
#[rtype(result = "Result<Vec<InstanceInfo>, QueueError>")]
pub struct ListInstances;

/// Remove this run's entry (the end of a clean shutdown).
#[derive(Message)]
#[rtype(result = "Result<(), QueueError>")]
pub struct LeaveRegistry {
    /// The instance's name.
    pub name: String,
    /// The run that holds it.
    pub run_id: String,
}

/// Take back the attempts a dead run of instance `0` left running (a bounded number per call:
/// [`Changes::more`] says when to call again). Published like any change: requeued jobs wake
/// the pools, each takeover is logged.
#[derive(Message)]
#[rtype(result = "Result<Changes, QueueError>")]
pub struct TakeOver(pub String);

/// Attempts taken over so far, per cause.
#[derive(Message)]
#[rtype(result = "Result<TakeoverCounts, QueueError>")]
pub struct GetTakeovers;

/// Logs a running attempt taken from its worker: the job runs again (or ends) because of it,
/// so operators see every one, with the worker it was taken from.
pub(super) fn log_takeover(taken: &Takeover) {
    let why = match taken.cause {
        TakeoverCause::LeaseExpired => "its lease expired",
        TakeoverCause::InstanceRestarted => "its instance restarted",
    };
    tracing::warn!(
        job_id = %taken.id,
        kind = %taken.kind,
        worker = %taken.worker,
        cause = taken.cause.as_str(),
        "running attempt taken over from its worker: {why}"
    );
}

impl Handler<RecordHeartbeat> for QueueActor {
    type Result = ResponseFuture<Result<Registration, QueueError>>;
    fn handle(&mut self, msg: RecordHeartbeat, _: &mut Context<Self>) -> Self::Result {
        let (backend, now) = (self.backend.clone(), self.clock.now());
        Box::pin(
            async move { backend.heartbeat(&msg.instance, msg.displace.as_deref(), now).await },
        )
    }
}

impl Handler<ListInstances> for QueueActor {
    type Result = ResponseFuture<Result<Vec<InstanceInfo>, QueueError>>;
    fn handle(&mut self, _: ListInstances, _: &mut Context<Self>) -> Self::Result {
        let (backend, now) = (self.backend.clone(), self.clock.now());
        Box::pin(async move { backend.instances(now).await })
    }
}

impl Handler<LeaveRegistry> for QueueActor {
    type Result = ResponseFuture<Result<(), QueueError>>;
    fn handle(&mut self, msg: LeaveRegistry, _: &mut Context<Self>) -> Self::Result {
        let backend = self.backend.clone();
        Box::pin(async move { backend.leave(&msg.name, &msg.run_id).await })
    }
}

impl Handler<TakeOver> for QueueActor {
    type Result = ResponseActFuture<Self, Result<Changes, QueueError>>;
    fn handle(&mut self, TakeOver(name): TakeOver, _: &mut Context<Self>) -> Self::Result {
        let (backend, now) = (self.backend.clone(), self.clock.now());
        self.mutate(async move { backend.take_over(&name, now).await }, |c| c)
    }
}

impl Handler<GetTakeovers> for QueueActor {
    type Result = ResponseFuture<Result<TakeoverCounts, QueueError>>;
    fn handle(&mut self, _: GetTakeovers, _: &mut Context<Self>) -> Self::Result {
        let backend = self.backend.clone();
        Box::pin(async move { backend.takeovers().await })
    }
}
