//! Tools: named upstream sources (a GitHub, a CI system's API) whose data jobyard keeps fresh
//! in the cache with background `tool.refresh` jobs, spending as little of the upstream's rate
//! limit as it can, and serves to dashboards from the cache.
//!
//! - [`spec`]: the configuration a client sends ([`ToolSpec`]), its validation, and the stored
//!   [`Tool`]; [`secrets`]: the `${NAME}` references headers may hold.
//! - [`state`]: what the refreshes found out (rate-limit budget, last error, upstream
//!   validators), shared by every instance, and this instance's serving counters.
//! - [`manage`]: [`Tools`], the service: tools and their state in the shared
//!   [`Documents`](crate::documents::Documents), each tool's limit and schedule, and the
//!   single-flight trigger of refreshes.
//! - [`refresh`] (with `http-kind`): the `tool.refresh` kind.
//! - [`freshness`]: how old a cached answer is and whether it is fresh or stale.
//!
//! # Names in other layers
//! Tool `<name>` owns: the cache entry [`data_key`] (`tool:<name>:data`) tagged [`tag`]
//! (`tool:<name>`), the limit [`limit_name`] (`tool:<name>`: its `rate_limit` and a
//! concurrency of 1, so at most one refresh of a tool runs at once on all instances), and the
//! schedule [`schedule_name`] (`tool:<name>`) that submits its refresh on every cron tick.

pub mod freshness;
pub mod manage;
mod recent;
#[cfg(feature = "http-kind")]
pub mod refresh;
pub mod secrets;
pub mod spec;
pub mod state;

pub use manage::{ToolError, Tools};
pub use spec::{RateLimit, Tool, ToolSpec};
pub use state::ToolState;

/// The kind of the refresh jobs.
pub const REFRESH_KIND: &str = "tool.refresh";

/// The cache key of tool `name`'s data.
pub fn data_key(name: &str) -> String {
    format!("tool:{name}:data")
}

/// The tag of every cache entry of tool `name`.
pub fn tag(name: &str) -> String {
    format!("tool:{name}")
}

/// The limit tool `name`'s refreshes run under.
pub fn limit_name(name: &str) -> String {
    format!("tool:{name}")
}

/// The schedule of tool `name`'s refreshes.
pub fn schedule_name(name: &str) -> String {
    format!("tool:{name}")
}
