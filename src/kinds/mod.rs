//! The built-in job kinds the server registers: [`noop`], [`sleep`], [`fail`] and [`http`].

pub mod fail;
pub mod http;
pub mod noop;
pub mod sleep;

use crate::job::Registry;

/// Registers every built-in kind.
pub fn register_builtins(registry: &mut Registry) {
    registry.register::<noop::Noop>();
    registry.register::<sleep::Sleep>();
    registry.register::<fail::Fail>();
    registry.register::<http::HttpRequest>();
}
