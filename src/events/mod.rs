//! The event stream: job changes, tool refreshes and a stats snapshot a second, for the
//! dashboard and for anyone following a job instead of polling it.
//!
//! [`EventHub`] is each instance's: the queue actor announces the changes it makes there, the
//! tools their refreshes, and readers (`GET /v1/events`, [`crate::JobHandle::changes`])
//! subscribe with a [`Filter`]. On a shared backend the relay carries every instance's
//! changes to the others' readers.

mod change;
mod hub;
pub(crate) mod relay;

pub use change::{Event, JobChange, Reached, RefreshOutcome, ToolRefresh};
pub use hub::{EventHub, Filter, Received, Stamped, Subscription};
