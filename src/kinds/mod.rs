//! The built-in job kinds the server registers: [`noop`], [`sleep`], [`fail`] and, with the
//! `http-kind` feature, `http` and `tool.refresh` (see [`crate::tools`]). [`upstream`] holds what
//! every call to an upstream API shares: allowed hosts and rate-limit headers.

pub mod fail;
#[cfg(feature = "http-kind")]
pub mod http;
pub mod noop;
pub mod sleep;
pub mod upstream;

use crate::job::spec::KindLookup;
use crate::job::{Job, Registry};

/// Registers every built-in kind the registry does not hold yet: a kind the embedder
/// registered under the same name (before or after) keeps its own handler.
pub fn register_builtins(registry: &mut Registry) {
    add::<noop::Noop>(registry);
    add::<sleep::Sleep>(registry);
    add::<fail::Fail>(registry);
    #[cfg(feature = "http-kind")]
    add::<http::HttpRequest>(registry);
    #[cfg(feature = "http-kind")]
    add::<crate::tools::refresh::RefreshTool>(registry);
}

fn add<J: Job>(registry: &mut Registry) {
    if registry.lookup(J::KIND).is_none() {
        registry.register::<J>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedder's own kind that happens to take a built-in's name.
    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct MySleep {
        seconds: u32,
    }

    impl Job for MySleep {
        const KIND: &'static str = "sleep";
        type Output = ();
        async fn run(self, _: crate::JobContext) -> Result<(), crate::JobError> {
            Ok(())
        }
    }

    #[test]
    fn a_kind_registered_by_the_embedder_keeps_its_handler() {
        let mut registry = Registry::new();
        registry.register::<MySleep>();
        register_builtins(&mut registry);
        let mine = crate::job::record::json_from_str("{\"seconds\": 1}").unwrap();
        assert!(registry.check_payload("sleep", &mine).is_ok(), "still the embedder's");
        assert!(registry.lookup("noop").is_some());
    }
}
