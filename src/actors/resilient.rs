//! Starting an actor so that it outlives its own bugs.
//!
//! `actix::Supervisor` restarts an actor that stops, keeping its address; but a panic inside
//! one of the actor's own handlers unwinds through the supervisor too, and the actor is gone for
//! good: every later message to it fails. [`start`] runs the actor's context under
//! `catch_unwind` instead. After a panic the context is restarted as `actix::Supervisor` would
//! after a stop: the futures it had spawned are dropped, [`Supervised::restarting`] rebuilds
//! what the actor cannot trust any more, and `started` runs again. The address stays the same,
//! so nobody holding it notices beyond the one message (or spawned future) that panicked: a
//! caller waiting on that message gets a closed-mailbox error.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::dev::ContextFut;
use actix::prelude::*;

/// Starts `A` on the current arbiter under a supervisor that restarts it after a stop or a
/// panic.
pub fn start<A>(make: impl FnOnce(&mut Context<A>) -> A) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised + Unpin,
{
    let mut ctx = Context::new();
    let actor = make(&mut ctx);
    let addr = ctx.address();
    actix_rt::spawn(Resilient { context: ctx.into_future(actor) });
    addr
}

/// An actor's context, polled so that a panic restarts the actor instead of ending it.
struct Resilient<A: Actor<Context = Context<A>>> {
    context: ContextFut<A, Context<A>>,
}

impl<A> Future for Resilient<A>
where
    A: Actor<Context = Context<A>> + Supervised + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.context).poll(cx)));
            match polled {
                Ok(Poll::Pending) => return Poll::Pending,
                // Stopped: restart unless nobody can send to it any more.
                Ok(Poll::Ready(())) => {
                    if !this.context.restart() {
                        return Poll::Ready(());
                    }
                }
                Err(panic) => {
                    tracing::error!(
                        actor = std::any::type_name::<A>(),
                        "actor panicked ({}); restarting it",
                        panic_text(&*panic)
                    );
                    if !this.context.restart() {
                        return Poll::Ready(());
                    }
                    // Let other tasks run before polling again: an actor that panics at every
                    // start must not hold this thread.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The message a panic carried, when it is text.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Counts its starts; panics on `Boom`.
    struct Fragile {
        starts: Arc<AtomicUsize>,
        handled: usize,
    }

    impl Actor for Fragile {
        type Context = Context<Self>;
        fn started(&mut self, _: &mut Context<Self>) {
            self.starts.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Supervised for Fragile {
        fn restarting(&mut self, _: &mut Context<Self>) {
            self.handled = 0;
        }
    }

    #[derive(Message)]
    #[rtype(result = "usize")]
    struct Count;

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Boom;

    impl Handler<Count> for Fragile {
        type Result = usize;
        fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
            self.handled += 1;
            self.handled
        }
    }

    impl Handler<Boom> for Fragile {
        type Result = ();
        fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
            panic!("injected");
        }
    }

    #[actix::test]
    async fn a_panic_in_a_handler_restarts_the_actor_behind_the_same_address() {
        let starts = Arc::new(AtomicUsize::new(0));
        let addr = start({
            let starts = starts.clone();
            move |_| Fragile { starts, handled: 0 }
        });
        assert_eq!(addr.send(Count).await.unwrap(), 1);
        assert_eq!(addr.send(Count).await.unwrap(), 2);
        assert!(addr.send(Boom).await.is_err(), "the panicking message gets no answer");
        // The same address answers, from a restarted actor: `restarting` ran, then `started`.
        assert_eq!(addr.send(Count).await.unwrap(), 1);
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        addr.do_send(Boom);
        assert_eq!(addr.send(Count).await.unwrap(), 1, "and again");
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn panic_text_reads_both_kinds_of_message() {
        let text: Box<dyn std::any::Any + Send> = Box::new("static");
        assert_eq!(panic_text(&*text), "static");
        let owned: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_text(&*owned), "owned");
        let other: Box<dyn std::any::Any + Send> = Box::new(7);
        assert_eq!(panic_text(&*other), "a panic without a message");
    }
}
