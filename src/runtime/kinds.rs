//! Which kinds a submit accepts: those registered here (their payloads checked against their
//! types), those a live instance sharing the backend handles, and those the configuration
//! lists (`JOBYARD_ACCEPT_KINDS`). The payload of a kind not registered here is not checked:
//! this instance does not know its type. A kind none of them names is `unknown_kind`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::instance::ClusterKinds;
use crate::job::spec::KindLookup;
use crate::job::{Json, Registry};
use crate::kinds::upstream::AllowedHosts;

/// The built-in kind that calls URLs (checked against the allowed hosts).
const HTTP_KIND: &str = "http";

/// The kinds a submit accepts; see the module doc.
pub(crate) struct SubmitKinds {
    registry: Arc<Registry>,
    /// Kept up to date by the heartbeats: no backend call per submit.
    cluster: ClusterKinds,
    accepted: HashMap<String, Arc<str>>,
    /// `JOBYARD_HTTP_ALLOWED_HOSTS`: the hosts `http` jobs may call; `None`: any.
    allowed_hosts: Option<AllowedHosts>,
}

impl SubmitKinds {
    pub fn new(registry: Arc<Registry>, cluster: ClusterKinds, accepted: &[String]) -> Self {
        let accepted = accepted.iter().map(|k| (k.clone(), Arc::from(k.as_str()))).collect();
        SubmitKinds { registry, cluster, accepted, allowed_hosts: None }
    }

    /// Refuses `http` jobs whose URL names a host outside `hosts`.
    pub fn allowed_hosts(mut self, hosts: Option<AllowedHosts>) -> Self {
        self.allowed_hosts = hosts;
        self
    }
}

impl KindLookup for SubmitKinds {
    fn lookup(&self, kind: &str) -> Option<Arc<str>> {
        // Registered here first: the common case never takes the cluster's lock.
        self.registry
            .lookup(kind)
            .or_else(|| self.cluster.get(kind))
            .or_else(|| self.accepted.get(kind).cloned())
    }

    fn check_payload(&self, kind: &str, payload: &Json) -> Result<(), String> {
        // Checked even where no handler is registered: the instance that runs it may have
        // been started without the list.
        if let (HTTP_KIND, Some(hosts)) = (kind, &self.allowed_hosts) {
            #[derive(serde::Deserialize)]
            struct Url {
                url: String,
            }
            let url = serde_json::from_str::<Url>(payload.get()).map_err(|err| err.to_string())?;
            hosts.check(&url.url)?;
        }
        // Kinds without a handler here pass unchecked.
        self.registry.check_payload(kind, payload)
    }

    fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.registry.kinds().to_vec();
        names.extend(self.cluster.names());
        names.extend(self.accepted.values().cloned());
        names.sort_unstable();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::record::json_from_str;

    #[test]
    fn kinds_registered_here_handled_elsewhere_or_configured_are_accepted() {
        let mut registry = Registry::new();
        crate::kinds::register_builtins(&mut registry);
        let cluster = ClusterKinds::default();
        let kinds = SubmitKinds::new(Arc::new(registry), cluster.clone(), &["later".into()]);
        assert!(kinds.lookup("sleep").is_some() && kinds.lookup("later").is_some());
        assert!(kinds.lookup("resize").is_none(), "nobody handles it");
        cluster.set(["resize".to_owned()]);
        assert_eq!(kinds.lookup("resize").as_deref(), Some("resize"));
        let odd = json_from_str("{\"anything\": [1]}").unwrap();
        assert!(kinds.check_payload("resize", &odd).is_ok(), "not checked here");
        let bad = json_from_str("{\"ms\": \"soon\"}").unwrap();
        assert!(kinds.check_payload("sleep", &bad).is_err(), "checked against its type");
        cluster.set(Vec::new());
        assert!(kinds.lookup("resize").is_none(), "its last instance went away");
    }
}
