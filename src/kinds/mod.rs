//! The built-in job kinds the server registers: [`noop`], [`sleep`], [`fail`] and, with the
//! `http-kind` feature, `http`.

pub mod fail;
#[cfg(feature = "http-kind")]
pub mod http;
pub mod noop;
pub mod sleep;

use crate::job::Registry;

/// Registers every built-in kind.
pub fn register_builtins(registry: &mut Registry) {
    registry.register::<noop::Noop>();
    registry.register::<sleep::Sleep>();
    registry.register::<fail::Fail>();
    #[cfg(feature = "http-kind")]
    registry.register::<http::HttpRequest>();
}
