//! What names an instance among those sharing a backend: its name (`JOBYARD_INSTANCE`, by
//! default the host name, as a pod's name is), the names it falls back to when another live
//! instance holds the host name, its run id, and the kinds the live instances handle.
//!
//! Names matter because an instance restarted under its name takes back the jobs its crashed
//! predecessor left running (every attempt whose worker is `<name>/w<N>`), so two live
//! instances must never share one: the runtime claims its name in the backend's registry at
//! start (`actors::presence`). This module holds only what that needs and has no actor of its
//! own; it must not reach the backend.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// The longest instance name.
pub const MAX_NAME_CHARS: usize = 128;

/// Why a name cannot name an instance; the config layer puts it after the variable.
pub const NAME_RULE: &str = "expected 1 to 128 characters of A-Z a-z 0-9 _ . : @ -";

/// Whether `name` may name an instance: 1 to 128 characters of `[A-Za-z0-9_.:@-]`. No `/`,
/// which separates the instance from the slot in worker names, and nothing a log line or a
/// Redis key would have to escape.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b))
}

/// The host name (a pod's name under Kubernetes), made a valid instance name: characters
/// outside the allowed set become `-`, and it is cut to leave room for the fallback's suffix.
/// `jobyard` when the host has no name.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "jobyard".into());
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_.:@-".contains(c) { c } else { '-' })
        .take(MAX_NAME_CHARS - 24)
        .collect();
    cleaned
}

/// `<host>-<pid>`: unique on a machine while the process lives, so the default name's fallback,
/// and the origin of the cache's invalidation messages.
pub fn host_pid() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// The names an instance may take, in order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Naming {
    /// `JOBYARD_INSTANCE` named it: that name or none (start-up fails while a live instance
    /// holds it).
    Explicit(String),
    /// The default: the host name, else `<host>-<pid>` when a live instance holds the host
    /// name (two instances on one machine), else `<host>-<pid>-2`, `-3`... (several runtimes
    /// in one process sharing a backend).
    Default,
}

impl Naming {
    /// The naming `JOBYARD_INSTANCE` asks for (`None`: the default).
    pub fn from_config(instance: Option<&str>) -> Self {
        match instance {
            Some(name) => Naming::Explicit(name.to_owned()),
            None => Naming::Default,
        }
    }

    /// The `n`-th name to try (from 0), `None` past the last.
    pub fn candidate(&self, n: usize) -> Option<String> {
        match (self, n) {
            (Naming::Explicit(name), 0) => Some(name.clone()),
            (Naming::Explicit(_), _) => None,
            (Naming::Default, 0) => Some(host_name()),
            (Naming::Default, 1) => Some(host_pid()),
            (Naming::Default, n) if n <= MAX_FALLBACKS => Some(format!("{}-{n}", host_pid())),
            (Naming::Default, _) => None,
        }
    }
}

/// How many `<host>-<pid>-<n>` names a default naming tries before giving up.
const MAX_FALLBACKS: usize = 64;

/// Why an instance could not take a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// `JOBYARD_INSTANCE` names an instance that is alive.
    #[error(
        "JOBYARD_INSTANCE={name} is taken: a live instance holds this name (run {run_id}, \
         started {started_at}, last seen {last_seen}); give each instance a name of its own, or \
         stop that one first"
    )]
    Taken {
        /// The name asked for.
        name: String,
        /// The run holding it.
        run_id: String,
        /// When that run started.
        started_at: chrono::DateTime<chrono::Utc>,
        /// Its latest heartbeat.
        last_seen: chrono::DateTime<chrono::Utc>,
    },
    /// Every default name was held by a live instance.
    #[error(
        "no free instance name: {first} and its {tried} fallbacks are held by live instances; \
         set JOBYARD_INSTANCE"
    )]
    Exhausted {
        /// The first name tried (the host name).
        first: String,
        /// How many fallbacks were tried.
        tried: usize,
    },
}

/// A new run id: one per started runtime (so one per `jobyard serve` process), telling a
/// restarted instance from the one before it under the same name.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The runs started in this process that have not stopped: a holder of a name found here is
/// alive, with no need to watch its heartbeats (several runtimes in one process, as tests and
/// some embedders start them).
static LOCAL_RUNS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Marks a run of this process as live until dropped.
#[derive(Debug)]
pub struct LocalRun(String);

impl LocalRun {
    /// Marks `run_id` live in this process.
    pub fn enter(run_id: &str) -> Self {
        LOCAL_RUNS.lock().unwrap_or_else(PoisonError::into_inner).insert(run_id.to_owned());
        LocalRun(run_id.to_owned())
    }

    /// Whether `run_id` is a run of this process that still lives.
    pub fn is_live(run_id: &str) -> bool {
        LOCAL_RUNS.lock().unwrap_or_else(PoisonError::into_inner).contains(run_id)
    }
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        LOCAL_RUNS.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.0);
    }
}

/// The kinds the live instances sharing the backend handle, as the latest heartbeat round read
/// them: submits consult it (a read lock, no backend call), the heartbeat replaces it.
#[derive(Clone, Default)]
pub struct ClusterKinds(Arc<RwLock<HashSet<Arc<str>>>>);

impl ClusterKinds {
    /// Replaces the set.
    pub fn set(&self, kinds: impl IntoIterator<Item = String>) {
        let kinds: HashSet<Arc<str>> = kinds.into_iter().map(Arc::from).collect();
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = kinds;
    }

    /// Every kind a live instance handles.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// The shared name of `kind` when a live instance handles it.
    pub fn get(&self, kind: &str) -> Option<Arc<str>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).get(kind).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        for good in ["worker-0", "a", "pod.ns:8080", "svc@eu_1", &"x".repeat(128)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "a/b", "a b", "é", "a\nb", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_host_name_and_its_fallbacks_are_valid_names() {
        let naming = Naming::Default;
        let names: Vec<String> = (0..).map_while(|n| naming.candidate(n)).collect();
        assert_eq!(names.len(), MAX_FALLBACKS + 1);
        assert_eq!(names[0], host_name());
        assert_eq!(names[1], format!("{}-{}", host_name(), std::process::id()));
        assert_eq!(names[2], format!("{}-2", names[1]));
        assert!(names.iter().all(|n| valid_name(n)), "{names:?}");
        let explicit = Naming::from_config(Some("w-1"));
        assert_eq!((explicit.candidate(0), explicit.candidate(1)), (Some("w-1".into()), None));
    }

    #[test]
    fn local_runs_live_until_dropped() {
        let id = new_run_id();
        let run = LocalRun::enter(&id);
        assert!(LocalRun::is_live(&id));
        drop(run);
        assert!(!LocalRun::is_live(&id));
    }
}
