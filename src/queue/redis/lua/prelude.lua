-- prelude.lua: what every queue script shares, in front of its body (src/queue/redis/
-- scripts.rs): the keys, the constants, and how to read the running attempts. Scripts that
-- move jobs between states add lib.lua; those that read limits add limits.lua. Kept small on
-- purpose: Redis keeps every loaded script's code in its Lua state, and its garbage collector
-- walks all of it, so each copy of a library in a script costs every script call a little.
--
-- KEYS[1] is the base of every queue key, `<prefix>:{q}:`. It names the hash-tag slot; every
-- other key is built from it here, mirroring src/redis/keys.rs. Time is the caller's (ARGV), in
-- milliseconds since the epoch.

local B = KEYS[1]
local HDR = '>BBBBHHhHI4I4dddddI4I4I4I4I4I4I4I4I4'
local HDR_LEN = 96
local VERSION = 3
local WAITING, SCHEDULED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = 0, 1, 2, 3, 4, 5, 6
local STATUS = { [0] = 'waiting', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled' }
-- The record's flags: bit 0, a cancel was requested while it ran.
local FLAG_CANCEL = 1
-- Ready score: (1000 - priority) * 2^42 + the job id's millisecond timestamp (UUIDv7), so
-- ZPOPMIN takes the highest priority first, then the oldest id (ties: the id itself, in order).
local PRIO_SPAN = 4398046511104
-- The most Lua arguments one command is given at a time (Lua's unpack limit is 8000).
local CHUNK = 6000
-- Scripts that change jobs take `now` as ARGV[1]; kept as text too, since a number passed to
-- a Redis command is formatted again each time.
local NOW_TEXT = ARGV[1]

-- Keys -----------------------------------------------------------------------------------------

local function job_key(id) return B .. 'j:' .. id end
local function batch_key(batch) return B .. 'db:' .. batch end
local function deps_key(id) return B .. 'deps:' .. id end
local function idem_key(key) return B .. 'idem:' .. key end
local function lease_key(token) return B .. 'lb:' .. token end
local DELAYED, LEASES, COUNTS, QUEUES, KINDS = B .. 'delayed', B .. 'leases', B .. 'counts', B .. 'queues', B .. 'kinds'
local RUN, CANCELS, PROGRESS, PARENTS = B .. 'run', B .. 'cx', B .. 'prog', B .. 'parents'
-- Jobs that ended with dependents still to settle, oldest first, as '<id> <status>'.
local SETTLE = B .. 'settle'
local READY_SETS, DONE_SEQ = B .. 'rq', B .. 'dseq'
-- A field kept in RUN with a value too long for a compact hash: Redis stores small hashes as a
-- flat list whose every write scans it, which made a claim of n jobs cost n^2; this keeps RUN
-- a real hash table (Redis never converts one back).
local RUN_SENTINEL = '~'
local WAKE, EVENTS, WATCH, TOKENS = B .. 'wake', B .. 'events', B .. 'watch', B .. 'tok'
-- Flow control (src/redis/keys.rs has the layout): lanes of ready jobs that name a group or
-- limits, limits and their windows, running counts per limit, paused queues, group weights.
local LANES, LIMITS, LIMRUN, PAUSED, WEIGHTS = B .. 'lanes', B .. 'limits', B .. 'limrun', B .. 'paused', B .. 'gw'
local function lane_key(member) return B .. 'lane:' .. member end
-- The fresh lanes: the jobs a bulk submit queued in a lane, per priority, in arrival order
-- (lists, as the fresh lists of jobs without flow; the registry FRESH_LANES names them as
-- `<priority>|<lane>`), and the ids cancelled while they waited there (claims pass over them).
local FRESH_LANES = B .. 'flanes'
local function fresh_lane_key(priority, lane) return B .. 'flane:' .. priority .. '|' .. lane end
local function fresh_lane_skips(priority, lane) return B .. 'fskip:' .. priority .. '|' .. lane end
local function limit_key(name) return B .. 'lim:' .. name end
-- The instance registry (name -> '<run id>|<entry JSON>'), instances by last heartbeat, and the
-- attempts taken from workers that are gone, per cause.
local INSTANCES, ALIVE, TAKEOVERS = B .. 'instances', B .. 'alive', B .. 'takeovers'

-- Running attempts -------------------------------------------------------------------------------

-- The running attempts of `ids`: their `run` entries (false where none), cancel requests and
-- progress reports (false where none).
local function running_of(ids)
  local run, cancel, progress = {}, {}, {}
  for i = 1, #ids, CHUNK do
    local last = math.min(i + CHUNK - 1, #ids)
    for k, v in ipairs(redis.call('HMGET', RUN, unpack(ids, i, last))) do run[i + k - 1] = v end
  end
  if redis.call('EXISTS', CANCELS) == 1 then
    for i = 1, #ids, CHUNK do
      local last = math.min(i + CHUNK - 1, #ids)
      for k, v in ipairs(redis.call('SMISMEMBER', CANCELS, unpack(ids, i, last))) do cancel[i + k - 1] = v == 1 end
    end
  end
  if redis.call('EXISTS', PROGRESS) == 1 then
    for i = 1, #ids, CHUNK do
      local last = math.min(i + CHUNK - 1, #ids)
      for k, v in ipairs(redis.call('HMGET', PROGRESS, unpack(ids, i, last))) do progress[i + k - 1] = v end
    end
  end
  return run, cancel, progress
end

-- Whether a run entry belongs to the attempt of lease token `token`.
local token_prefix = {}
local function holds(run, token)
  if not run then return false end
  local prefix = token_prefix[token]
  if not prefix then prefix = token .. '|'; token_prefix[token] = prefix end
  return string.sub(run, 1, #prefix) == prefix
end

-- Wakes one idle instance (the marker list holds at most one element; each waiting instance
-- pops it, and a claim that leaves work behind pushes it again for the next instance).
local function wake()
  if redis.call('LLEN', WAKE) == 0 then redis.call('RPUSH', WAKE, '1') end
end
