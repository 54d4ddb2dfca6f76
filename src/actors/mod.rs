//! The actors of a runtime, one per file: [`supervisor`] starts the others; [`queue`] is the
//! gateway to the job store (with its flow-control messages in [`flow`]); [`scheduler`] wakes for due jobs, leases, retention and cron;
//! [`worker`] keeps the books of attempts, which run on the handler threads of [`executor`];
//! [`cache`] owns the cache; [`presence`] keeps the instance in the backend's registry. [`resilient`] starts each of them so
//! that a stop or a panic restarts it behind the same address.

pub mod cache;
pub mod executor;
pub mod flow;
pub mod presence;
pub mod queue;
pub mod resilient;
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

    /// Panic inside the receiving actor's own handler, as a bug in it would.
    #[derive(Message)]
    #[rtype(result = "()")]
    pub struct Panic;

    macro_rules! stoppable {
        ($($actor:ty),*) => {$(
            impl Handler<Stop> for $actor {
                type Result = ();
                fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
                    ctx.stop();
                }
            }
            impl Handler<Panic> for $actor {
                type Result = ();
                fn handle(&mut self, _: Panic, _: &mut Context<Self>) {
                    panic!("injected into {}", std::any::type_name::<Self>());
                }
            }
        )*};
    }

    stoppable!(
        super::queue::QueueActor,
        super::worker::WorkerPool,
        super::scheduler::Scheduler,
        super::cache::CacheActor,
        super::presence::Presence
    );
}
