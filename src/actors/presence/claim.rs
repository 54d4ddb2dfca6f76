//! Claiming an instance name at start, so that two live instances never share one.
//!
//! A name is taken by a heartbeat the backend refuses while another run holds the name and
//! was seen within [`GONE_AFTER`]. A refused name's holder is watched: if it heartbeats again
//! it is alive (an explicit name is then refused; the default name falls back to the next
//! one); if it is not seen again before it has missed 3 heartbeats (or for as long in real
//! time, so that a test clock standing still cannot stall a start), it died, and its name is
//! taken from it. A holder that is a run of this very process is alive without watching.

use std::time::Instant;

use actix::prelude::*;

use crate::actors::queue::{ListInstances, QueueActor, RecordHeartbeat};
use crate::instance::{LocalRun, NameError, Naming};
use crate::queue::instances::{GONE_AFTER, HEARTBEAT_EVERY};
use crate::queue::{InstanceInfo, QueueError, Registration};

/// The registry, reached through the queue actor.
#[derive(Clone)]
pub(super) struct Link(pub Addr<QueueActor>);

impl Link {
    async fn heartbeat(
        &self,
        instance: &InstanceInfo,
        displace: Option<String>,
    ) -> Result<Registration, QueueError> {
        let msg = RecordHeartbeat { instance: instance.clone(), displace };
        self.0.send(msg).await.map_err(unreachable)?
    }

    async fn instances(&self) -> Result<Vec<InstanceInfo>, QueueError> {
        self.0.send(ListInstances).await.map_err(unreachable)?
    }
}

fn unreachable(err: MailboxError) -> QueueError {
    QueueError::Unavailable(format!("queue actor: {err}"))
}

/// A name taken.
#[derive(Debug)]
pub(super) struct Claimed {
    /// The instance's name.
    pub name: String,
    /// The entry of the run that held the name before (gone, or found dead).
    pub replaced: Option<InstanceInfo>,
}

/// Takes the first name of `naming` no live run holds, heartbeating `entry` under it. The
/// outer error is the backend's (try again later); the inner one says no name can be had.
pub(super) async fn claim_name(
    link: &Link,
    naming: &Naming,
    entry: &InstanceInfo,
) -> Result<Result<Claimed, NameError>, QueueError> {
    let first = naming.candidate(0).unwrap_or_default();
    let mut tried = 0;
    while let Some(name) = naming.candidate(tried) {
        let holder = match try_name(link, &name, entry).await? {
            Ok(replaced) => return Ok(Ok(Claimed { name, replaced })),
            Err(holder) => holder,
        };
        if let Naming::Explicit(_) = naming {
            return Ok(Err(NameError::Taken {
                name,
                run_id: holder.run_id,
                started_at: holder.started_at,
                last_seen: holder.last_seen,
            }));
        }
        tried += 1;
        if let Some(next) = naming.candidate(tried) {
            tracing::info!(
                held = %name, by_run = %holder.run_id, instead = %next,
                "another live instance holds the name {name}; this one takes {next}"
            );
        }
    }
    Ok(Err(NameError::Exhausted { first, tried: tried.saturating_sub(1) }))
}

/// Takes `name` unless a live run holds it: `Ok` with the entry it replaced, `Err` with the
/// live holder.
async fn try_name(
    link: &Link,
    name: &str,
    entry: &InstanceInfo,
) -> Result<Result<Option<InstanceInfo>, InstanceInfo>, QueueError> {
    let mine = InstanceInfo { name: name.to_owned(), ..entry.clone() };
    let mut displace = None;
    loop {
        let holder = match link.heartbeat(&mine, displace.take()).await? {
            Registration::Recorded { replaced } => return Ok(Ok(replaced)),
            Registration::Held(holder) => holder,
        };
        let run = holder.run_id.clone();
        if let Some(live) = live_holder(link, holder).await? {
            return Ok(Err(live));
        }
        // It did not heartbeat again: displace exactly that run (one that took the name
        // meanwhile is refused, and watched in turn).
        displace = Some(run);
    }
}

/// Watches `holder` until it heartbeats again (`Some`: alive, or the live run that took the
/// name meanwhile) or has missed 3 heartbeats (`None`: dead).
async fn live_holder(
    link: &Link,
    holder: InstanceInfo,
) -> Result<Option<InstanceInfo>, QueueError> {
    if LocalRun::is_live(&holder.run_id) {
        return Ok(Some(holder));
    }
    tracing::info!(
        name = %holder.name, run = %holder.run_id, last_seen = %holder.last_seen,
        "the name {} is held by another run: watching whether it is alive", holder.name
    );
    let watching = Instant::now();
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY / 4).await;
        let now = link.instances().await?.into_iter().find(|i| i.name == holder.name);
        match now {
            // Gone (unseen for 3 heartbeats) or left.
            None => return Ok(None),
            Some(seen) if seen.run_id != holder.run_id || seen.last_seen != holder.last_seen => {
                return Ok(Some(seen))
            }
            Some(_) if watching.elapsed() > GONE_AFTER => return Ok(None),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::queue::{InstanceWorkers, MemoryQueue, QueueBackend};

    fn entry(name: &str, run: &str) -> InstanceInfo {
        let now = chrono::Utc::now();
        InstanceInfo {
            name: name.into(),
            run_id: run.into(),
            version: "test".into(),
            started_at: now,
            last_seen: now,
            kinds: Vec::new(),
            workers: InstanceWorkers::default(),
            draining: false,
        }
    }

    fn link_to(backend: Arc<dyn QueueBackend>) -> Link {
        Link(QueueActor::new(backend, Clock::default(), Default::default()).start())
    }

    /// A holder that stops heartbeating (a crash) loses its name after 3 missed heartbeats;
    /// one that keeps heartbeating keeps it, and an explicit name is then refused.
    #[actix::test]
    async fn a_dead_holder_loses_its_name_and_a_live_one_keeps_it() {
        let backend: Arc<dyn QueueBackend> = Arc::new(MemoryQueue::new());
        let link = link_to(backend.clone());
        let crashed = entry("w", "crashed");
        backend.heartbeat(&crashed, None, chrono::Utc::now()).await.unwrap();
        let naming = Naming::Explicit("w".into());
        let started = Instant::now();
        let claimed = claim_name(&link, &naming, &entry("", "next")).await.unwrap().unwrap();
        assert_eq!(claimed.name, "w");
        assert_eq!(claimed.replaced.map(|r| r.run_id).as_deref(), Some("crashed"));
        assert!(started.elapsed() >= Duration::from_secs(2), "watched it first");

        // `next` holds it now and keeps heartbeating, from elsewhere (not this process's run).
        let beating = backend.clone();
        let heartbeats = actix_rt::spawn(async move {
            loop {
                let alive = entry("w", "next");
                beating.heartbeat(&alive, None, chrono::Utc::now()).await.unwrap();
                tokio::time::sleep(HEARTBEAT_EVERY / 5).await;
            }
        });
        let refused = claim_name(&link, &naming, &entry("", "third")).await.unwrap();
        let Err(NameError::Taken { name, run_id, .. }) = refused else { panic!("{refused:?}") };
        assert_eq!((name.as_str(), run_id.as_str()), ("w", "next"));
        heartbeats.abort();
    }

    /// A holder that is a live run of this process is alive without watching: the default
    /// name falls back at once.
    #[actix::test]
    async fn a_run_of_this_process_holds_its_name_without_watching() {
        let backend: Arc<dyn QueueBackend> = Arc::new(MemoryQueue::new());
        let link = link_to(backend.clone());
        let _first = LocalRun::enter("first");
        let host = crate::instance::host_name();
        backend.heartbeat(&entry(&host, "first"), None, chrono::Utc::now()).await.unwrap();
        let started = Instant::now();
        let claimed = claim_name(&link, &Naming::Default, &entry("", "second")).await;
        let claimed = claimed.unwrap().unwrap();
        assert_eq!(claimed.name, crate::instance::host_pid());
        assert!(claimed.replaced.is_none());
        assert!(started.elapsed() < HEARTBEAT_EVERY, "no watching: {:?}", started.elapsed());
    }
}
