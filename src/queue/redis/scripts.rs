//! The queue's Lua scripts, one per state transition, each in its own file under `lua/` with
//! the shared library (`lua/lib.lua`) in front of it. They are sent by SHA (`EVALSHA`) and
//! loaded on first use, and again after a Redis restart flushed the script cache.

use ::redis::Script;

const LIB: &str = include_str!("lua/lib.lua");

/// Every script of the queue.
pub(super) struct Scripts {
    pub submit: Script,
    pub claim: Script,
    pub complete: Script,
    pub renew: Script,
    pub release: Script,
    pub cancel: Script,
    pub progress: Script,
    pub promote: Script,
    pub reap: Script,
    pub recover: Script,
    pub purge: Script,
    pub schedule_put: Script,
    pub schedule_fire: Script,
}

fn with_lib(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            submit: with_lib(include_str!("lua/submit.lua")),
            claim: with_lib(include_str!("lua/claim.lua")),
            complete: with_lib(include_str!("lua/complete.lua")),
            renew: with_lib(include_str!("lua/renew.lua")),
            release: with_lib(include_str!("lua/release.lua")),
            cancel: with_lib(include_str!("lua/cancel.lua")),
            progress: with_lib(include_str!("lua/progress.lua")),
            promote: with_lib(include_str!("lua/promote.lua")),
            reap: with_lib(include_str!("lua/reap.lua")),
            recover: with_lib(include_str!("lua/recover.lua")),
            purge: with_lib(include_str!("lua/purge.lua")),
            schedule_put: with_lib(include_str!("lua/schedule_put.lua")),
            schedule_fire: with_lib(include_str!("lua/schedule_fire.lua")),
        }
    }
}
