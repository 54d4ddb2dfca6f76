//! The memory backend's instance registry: a table of entries by name. Only the runtimes of
//! this process share it, but it keeps the same rules as the Redis registry (names held by live
//! runs, gone after [`GONE_AFTER`], pruned after [`PRUNE_AFTER`]), so one conformance suite
//! covers both.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::queue::instances::{InstanceInfo, Registration, GONE_AFTER, PRUNE_AFTER};

/// Instance entries by name, each with its last sighting (the backend's `now` at its
/// heartbeat).
#[derive(Default)]
pub struct InstanceTable {
    entries: BTreeMap<String, InstanceInfo>,
}

impl InstanceTable {
    /// See [`crate::queue::QueueBackend::heartbeat`].
    pub fn heartbeat(
        &mut self,
        instance: &InstanceInfo,
        displace: Option<&str>,
        now: DateTime<Utc>,
    ) -> Registration {
        let previous = self.entries.get(&instance.name);
        if let Some(holder) = previous {
            let other = holder.run_id != instance.run_id && Some(&*holder.run_id) != displace;
            if other && !gone(holder, now) {
                return Registration::Held(holder.clone());
            }
        }
        let entry = InstanceInfo { last_seen: now, ..instance.clone() };
        let previous = self.entries.insert(instance.name.clone(), entry);
        self.prune(now);
        let replaced = previous.filter(|p| p.run_id != instance.run_id);
        Registration::Recorded { replaced }
    }

    /// See [`crate::queue::QueueBackend::instances`].
    pub fn live(&self, now: DateTime<Utc>) -> Vec<InstanceInfo> {
        self.entries.values().filter(|e| !gone(e, now)).cloned().collect()
    }

    /// See [`crate::queue::QueueBackend::leave`].
    pub fn leave(&mut self, name: &str, run_id: &str) {
        if self.entries.get(name).is_some_and(|e| e.run_id == run_id) {
            self.entries.remove(name);
        }
    }

    fn prune(&mut self, now: DateTime<Utc>) {
        let cutoff = now - PRUNE_AFTER;
        self.entries.retain(|_, e| e.last_seen >= cutoff);
    }
}

/// Whether `entry` was last seen more than [`GONE_AFTER`] before `now`.
fn gone(entry: &InstanceInfo, now: DateTime<Utc>) -> bool {
    entry.last_seen < now - GONE_AFTER
}
