//! The presence actor: this instance in the backend's instance registry.
//!
//! At start it claims the instance's name (`presence/claim.rs`), takes back whatever a dead
//! run of that name left running (`QueueBackend::take_over`: a restarted instance does not wait
//! for its old leases), and only then names the worker pool, which claims nothing before: none
//! of the attempts taken back can be the pool's own. Every [`HEARTBEAT_EVERY`] it heartbeats what the
//! pool is doing, and reads which kinds the live instances handle, for submits
//! ([`ClusterKinds`]). At shutdown ([`Leave`]) it removes the instance's entry. It is off the
//! job pipeline: nothing a job does waits on it.

mod claim;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::instance::{ClusterKinds, LocalRun, NameError, Naming};
use crate::queue::instances::HEARTBEAT_EVERY;
use crate::queue::{InstanceInfo, InstanceWorkers, Registration};

use super::queue::{LeaveRegistry, ListInstances, QueueActor, RecordHeartbeat, TakeOver};
use super::worker::{GetPoolStats, Named, WorkerPool};
use claim::{claim_name, Claimed, Link};

/// How long the claim of a name, or the takeover after it, waits after the backend failed it.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Where the instance stands with its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameState {
    /// Claiming its name.
    Claiming,
    /// The registry did not answer; claiming again (the rest of the runtime serves meanwhile,
    /// running no jobs).
    Retrying,
    /// Holds this name; its pool claims jobs.
    Named(Arc<str>),
    /// No name could be had: the instance runs no jobs.
    Refused(NameError),
}

/// Leave the registry (the end of a shutdown): no heartbeat follows.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

/// What the presence actor is given.
pub struct PresenceSettings {
    /// The names it may take.
    pub naming: Naming,
    /// This run's entry; its name, pool figures and time are filled in per heartbeat.
    pub entry: InstanceInfo,
    /// Where the live instances' kinds go.
    pub cluster: ClusterKinds,
    /// Where its state with its name goes.
    pub state: watch::Sender<NameState>,
}

/// The presence actor; see the module doc.
pub struct Presence {
    queue: Addr<QueueActor>,
    pool: Addr<WorkerPool>,
    settings: PresenceSettings,
    /// A claim is under way (dropped, and made again, if the actor restarts).
    claiming: bool,
    /// The takeover after the claim is under way (likewise), or done: the pool has its name.
    taking_back: bool,
    pool_named: bool,
    /// Left the registry: no more heartbeats.
    left: bool,
    /// Logged that another run took the name, until it is ours again.
    lost: bool,
    /// Marks this run live in the process while the actor lives.
    _run: LocalRun,
}

impl Presence {
    /// A presence for the runtime whose queue actor and pool these are.
    pub fn new(
        queue: Addr<QueueActor>,
        pool: Addr<WorkerPool>,
        settings: PresenceSettings,
    ) -> Self {
        let run = LocalRun::enter(&settings.entry.run_id);
        Presence {
            queue,
            pool,
            settings,
            claiming: false,
            taking_back: false,
            pool_named: false,
            left: false,
            lost: false,
            _run: run,
        }
    }

    /// The entry of a new run of this process, with no name yet.
    pub(crate) fn entry(
        run_id: String,
        kinds: Vec<String>,
        total: usize,
        clock: &Clock,
    ) -> InstanceInfo {
        let now = clock.now();
        InstanceInfo {
            name: String::new(),
            run_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: now,
            last_seen: now,
            kinds,
            workers: InstanceWorkers { busy: 0, total },
            draining: false,
        }
    }

    fn named(&self) -> bool {
        !self.settings.entry.name.is_empty()
    }

    /// Claims a name, trying again while the backend fails.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        self.claiming = true;
        let link = Link(self.queue.clone());
        let (naming, entry) = (self.settings.naming.clone(), self.settings.entry.clone());
        let state = self.settings.state.clone();
        let claim = async move {
            loop {
                match claim_name(&link, &naming, &entry).await {
                    Ok(outcome) => return outcome,
                    Err(err) => {
                        tracing::warn!("cannot claim an instance name yet (will retry): {err}");
                        state.send_replace(NameState::Retrying);
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
            }
        };
        ctx.spawn(claim.into_actor(self).map(|outcome, act, ctx| {
            act.claiming = false;
            match outcome {
                Ok(claimed) => act.hold(claimed, ctx),
                Err(err) => {
                    tracing::error!("{err}; this instance runs no jobs");
                    act.settings.state.send_replace(NameState::Refused(err));
                }
            }
        }));
    }

    /// The name is ours: heartbeats carry it from now on; what a dead run of it left running
    /// is taken back, then the pool starts.
    fn hold(&mut self, Claimed { name, replaced }: Claimed, ctx: &mut Context<Self>) {
        self.settings.entry.name = name.clone();
        if self.left {
            // Shut down while claiming: leave at once.
            self.queue.do_send(LeaveRegistry { name, run_id: self.settings.entry.run_id.clone() });
            return;
        }
        match replaced {
            Some(dead) => tracing::info!(
                instance = %name, replaced_run = %dead.run_id, last_seen = %dead.last_seen,
                "instance {name} restarted: its previous run is gone; taking back what it ran"
            ),
            None => tracing::info!(instance = %name, "instance {name} started"),
        }
        self.take_back(ctx);
    }

    /// Takes back what a dead run of this instance's name left running, then names the pool.
    /// Safe to repeat until then (after a restart of this actor): the pool has claimed nothing.
    fn take_back(&mut self, ctx: &mut Context<Self>) {
        self.taking_back = true;
        let queue = self.queue.clone();
        let name = self.settings.entry.name.clone();
        let takeover_name = name.clone();
        let take_back = async move {
            loop {
                match queue.send(TakeOver(takeover_name.clone())).await {
                    Ok(Ok(changes)) if changes.more => {}
                    Ok(Ok(_)) => return,
                    Ok(Err(err)) => {
                        tracing::warn!(
                            "taking back the previous run's jobs failed (will retry): {err}"
                        );
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                    Err(_) => tokio::time::sleep(RETRY_AFTER).await,
                }
            }
        };
        ctx.spawn(take_back.into_actor(self).map(move |(), act, _| {
            act.taking_back = false;
            act.pool_named = true;
            let name: Arc<str> = Arc::from(name);
            act.pool.do_send(Named(name.clone()));
            act.settings.state.send_replace(NameState::Named(name));
        }));
    }

    /// One heartbeat (once named) and a read of the live instances' kinds. The actor waits for
    /// it: beats never overlap, and a [`Leave`] comes after the last one.
    fn beat(&mut self, ctx: &mut Context<Self>) {
        if self.left {
            return;
        }
        let (queue, pool) = (self.queue.clone(), self.pool.clone());
        let mut entry = self.named().then(|| self.settings.entry.clone());
        let beat = async move {
            let mut registration = None;
            if let Some(entry) = entry.as_mut() {
                if let Ok(workers) = pool.send(GetPoolStats).await {
                    entry.workers = InstanceWorkers { busy: workers.busy, total: workers.total };
                    entry.draining = workers.draining;
                }
                let beat = RecordHeartbeat { instance: entry.clone(), displace: None };
                registration = Some(queue.send(beat).await);
            }
            (registration, queue.send(ListInstances).await)
        };
        beat.into_actor(self)
            .map(|(registration, instances), act, _| {
                match registration {
                    Some(Ok(Ok(Registration::Held(holder)))) if !act.lost => {
                        act.lost = true;
                        tracing::error!(
                            instance = %holder.name, other_run = %holder.run_id,
                            "another run now holds this instance's name (it took this one for \
                             dead: its heartbeats stopped for 3 s); jobs this instance runs may \
                             run again there"
                        );
                    }
                    Some(Ok(Ok(Registration::Recorded { .. }))) => act.lost = false,
                    Some(Ok(Err(err))) => tracing::debug!("heartbeat not recorded: {err}"),
                    _ => {}
                }
                if let Ok(Ok(instances)) = instances {
                    act.settings.cluster.set(instances.into_iter().flat_map(|i| i.kinds));
                }
            })
            .wait(ctx);
    }
}

impl Actor for Presence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if !self.named() && !self.claiming && !self.left {
            self.claim(ctx);
        } else if self.named() && !self.pool_named && !self.taking_back {
            self.take_back(ctx);
        }
        self.beat(ctx);
        ctx.run_interval(HEARTBEAT_EVERY, |act, ctx| act.beat(ctx));
    }
}

impl Supervised for Presence {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("presence restarting");
        // A claim or takeover in flight was dropped with the actor's futures: `started` makes
        // it again.
        self.claiming = false;
        self.taking_back = false;
    }
}

impl Handler<Leave> for Presence {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Leave, _: &mut Context<Self>) -> Self::Result {
        self.left = true;
        let leave = self.named().then(|| LeaveRegistry {
            name: self.settings.entry.name.clone(),
            run_id: self.settings.entry.run_id.clone(),
        });
        let queue = self.queue.clone();
        Box::pin(
            async move {
                if let Some(leave) = leave {
                    if let Ok(Err(err)) = queue.send(leave).await {
                        tracing::warn!("leaving the instance registry failed: {err}");
                    }
                }
            }
            .into_actor(self),
        )
    }
}
