//! The built-in job kinds the server registers: [`noop`], [`sleep`], [`fail`] and, with the
//! `http-kind` feature, `http` and `tool.refresh` (see [`crate::tools`]). [`upstream`] holds what
//! every call to an upstream API shares: allowed hosts and rate-limit headers.

pub mod fail;
#[cfg(feature = "http-kind")]
pub mod http;
pub mod noop;
pub mod sleep;
pub mod upstream;

use crate::job::Registry;

/// Registers every built-in kind.
pub fn register_builtins(registry: &mut Registry) {
    registry.register::<noop::Noop>();
    registry.register::<sleep::Sleep>();
    registry.register::<fail::Fail>();
    #[cfg(feature = "http-kind")]
    registry.register::<http::HttpRequest>();
    #[cfg(feature = "http-kind")]
    registry.register::<crate::tools::refresh::RefreshTool>();
}
