//! The queue's Lua scripts, one per state transition, each in its own file under `lua/` with
//! what it shares with others in front of it: `lua/prelude.lua` (keys, constants, running
//! attempts) always, `lua/lib.lua` (records, indexes, transitions) for those that move jobs,
//! `lua/limits.lua` for those that read limits. They are sent by SHA (`EVALSHA`) and loaded on
//! first use, and again after a Redis restart flushed the script cache.
//!
//! A call is built straight into one command buffer ([`Call`]): a batch's arguments (records of
//! hundreds of bytes, a thousand at a time) are written once, not kept one allocation each and
//! copied again into the command.

use ::redis::{Cmd, Script, ToRedisArgs};

use crate::queue::SETTLE_LIMIT;

/// What every script shares: the keys, the constants, reading running attempts.
const PRELUDE: &str = include_str!("lua/prelude.lua");
/// What the scripts that move jobs between states share.
const LIB: &str = include_str!("lua/lib.lua");
/// What the scripts that read limits share.
const LIMITS: &str = include_str!("lua/limits.lua");

/// Every script of the queue.
pub(super) struct Scripts {
    pub submit: Lua,
    pub claim: Lua,
    pub complete: Lua,
    pub renew: Lua,
    pub release: Lua,
    pub cancel: Lua,
    pub retry: Lua,
    pub run_now: Lua,
    pub delete: Lua,
    pub progress: Lua,
    pub promote: Lua,
    pub reap: Lua,
    pub recover: Lua,
    pub purge: Lua,
    pub schedule_put: Lua,
    pub schedule_fire: Lua,
    pub limit: Lua,
    pub throttled: Lua,
    pub limit_jobs: Lua,
    pub heartbeat: Lua,
    pub leave: Lua,
    pub takeover: Lua,
}

/// One script: its source (to load it when Redis does not know it) and its SHA.
pub(super) struct Lua {
    pub source: String,
    pub sha: String,
}

/// A script that moves jobs between states: the prelude, `LIB`, its body.
fn with_lib(body: &str) -> Lua {
    with_libs(&[LIB], body)
}

/// A script that needs only the prelude (keys, constants, running attempts).
fn with_prelude(body: &str) -> Lua {
    with_libs(&[], body)
}

/// A script that reads limits: the prelude, `LIMITS`, its body.
fn with_limits(body: &str) -> Lua {
    with_libs(&[LIMITS], body)
}

/// The prelude, then `libs`, then `body`. Each script carries only what it uses: Redis keeps
/// every loaded script in its Lua state, whose garbage collector walks all of it on every call
/// (measured: five more copies of the library cost every call about 2 %).
fn with_libs(libs: &[&str], body: &str) -> Lua {
    // The library's constants shared with Rust come first, from their one definition.
    let libs = libs.join("\n");
    let source = format!("local SETTLE_LIMIT = {SETTLE_LIMIT}\n{PRELUDE}\n{libs}\n{body}");
    let sha = Script::new(&source).get_hash().to_owned();
    Lua { source, sha }
}

/// A call of a script being built: `EVALSHA <sha> 1 <base key>` and its arguments.
pub(super) struct Call<'a> {
    pub lua: &'a Lua,
    pub cmd: Cmd,
}

impl<'a> Call<'a> {
    pub fn new(lua: &'a Lua, base: &str) -> Self {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(&lua.sha).arg(1).arg(base);
        Call { lua, cmd }
    }

    /// Adds an argument (`ARGV[i]`).
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.cmd.arg(arg);
        self
    }
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            submit: with_lib(include_str!("lua/submit.lua")),
            claim: with_libs(&[LIB, LIMITS], include_str!("lua/claim.lua")),
            complete: with_lib(include_str!("lua/complete.lua")),
            renew: with_prelude(include_str!("lua/renew.lua")),
            release: with_lib(include_str!("lua/release.lua")),
            cancel: with_lib(include_str!("lua/cancel.lua")),
            retry: with_lib(include_str!("lua/retry.lua")),
            run_now: with_lib(include_str!("lua/run_now.lua")),
            delete: with_lib(include_str!("lua/delete.lua")),
            progress: with_prelude(include_str!("lua/progress.lua")),
            promote: with_lib(include_str!("lua/promote.lua")),
            reap: with_lib(include_str!("lua/reap.lua")),
            recover: with_lib(include_str!("lua/recover.lua")),
            purge: with_lib(include_str!("lua/purge.lua")),
            schedule_put: with_prelude(include_str!("lua/schedule_put.lua")),
            schedule_fire: with_prelude(include_str!("lua/schedule_fire.lua")),
            limit: with_limits(include_str!("lua/limit.lua")),
            throttled: with_limits(include_str!("lua/throttled.lua")),
            limit_jobs: with_limits(include_str!("lua/limit_jobs.lua")),
            heartbeat: with_prelude(include_str!("lua/heartbeat.lua")),
            leave: with_prelude(include_str!("lua/leave.lua")),
            takeover: with_lib(include_str!("lua/takeover.lua")),
        }
    }
}
