//! The actors of a runtime, one per file: [`supervisor`] starts the others; [`queue`] is the
//! gateway to the job store; [`scheduler`] wakes for due jobs, leases, retention and cron;
//! [`worker`] runs attempts; [`cache`] owns the cache.

pub mod cache;
pub mod queue;
pub mod scheduler;
pub mod supervisor;
pub mod worker;

/// Test support: a message that stops an actor, as a failure would, to show it is restarted.
#[cfg(test)]
pub(crate) mod testing {
    use actix::prelude::*;

    /// Stop the receiving actor.
    #[derive(Message)]
    #[rtype(result = "()")]
    pub struct Stop;

    macro_rules! stoppable {
        ($($actor:ty),*) => {$(
            impl Handler<Stop> for $actor {
                type Result = ();
                fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
                    ctx.stop();
                }
            }
        )*};
    }

    stoppable!(
        super::queue::QueueActor,
        super::worker::WorkerPool,
        super::scheduler::Scheduler,
        super::cache::CacheActor
    );
}
