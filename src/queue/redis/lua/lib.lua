-- lib.lua: shared by every queue script; each script's own body is appended to it when the
-- script is loaded (src/queue/redis/scripts.rs).
--
-- KEYS[1] is the base of every queue key, `<prefix>:{q}:`. It names the hash-tag slot; every
-- other key is built from it by the functions below, mirroring src/redis/keys.rs.
--
-- A job record is one string: a fixed big-endian header (HDR) followed by eight sections whose
-- lengths end the header: kind, queue, idempotency key, data (JSON that only Rust reads:
-- payload, backoff, timeout, dependencies), worker, error, result, progress. Scripts touch the
-- header and the last four sections; src/queue/redis/record.rs is the Rust side of the format.
--
-- A script is a unit of work: records are read once (load, load_many), changed as Lua tables,
-- and written together at the end (commit); index changes are gathered per key and applied in
-- one command per key. Time is the caller's (ARGV), in milliseconds since the epoch.

local B = KEYS[1]
local HDR = '>BBBBHHhHddddddI4I4I4I4I4I4I4I4'
local HDR_LEN = 92
local WAITING, SCHEDULED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = 0, 1, 2, 3, 4, 5, 6
local STATUS = { [0] = 'waiting', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled' }
local FLAG_CANCEL = 1
-- Ready score: (1000 - priority) * 2^42 + the job id's millisecond timestamp (UUIDv7), so
-- ZPOPMIN takes the highest priority first, then the oldest id (ties: the id itself, in order).
local PRIO_SPAN = 4398046511104
-- The most Lua arguments one command is given at a time (Lua's unpack limit is 8000).
local CHUNK = 6000

-- Keys -----------------------------------------------------------------------------------------

local function job_key(id) return B .. 'j:' .. id end
local function deps_key(id) return B .. 'deps:' .. id end
local function idem_key(key) return B .. 'idem:' .. key end
local function ready_key(kind) return B .. 'ready:' .. kind end
local function all_key(queue) return B .. 'lq:' .. queue end
local function listing_key(queue, st) return B .. 'ls:' .. queue .. ':' .. STATUS[st] end
local function done_key(queue) return B .. 'done:' .. queue end
local DELAYED, LEASES, COUNTS, QUEUES, KINDS = B .. 'delayed', B .. 'leases', B .. 'counts', B .. 'queues', B .. 'kinds'
local WAKE, EVENTS, WATCH, TOKENS = B .. 'wake', B .. 'events', B .. 'watch', B .. 'tok'

-- Records --------------------------------------------------------------------------------------

local function decode(id, v)
  local _, st, fl, _, a, m, pr, pend, tok, c, u, s, f, ra, lk, lq, li, ld, lw, le, lr, lp =
    struct.unpack(HDR, v)
  return { id = id, v = v, st = st, fl = fl, a = a, m = m, pr = pr, pend = pend, tok = tok,
    c = c, u = u, s = s, f = f, ra = ra, lk = lk, lq = lq, li = li, ld = ld, lw = lw, le = le,
    lr = lr, lp = lp }
end

local function kind_of(j)
  if not j.kind then j.kind = string.sub(j.v, HDR_LEN + 1, HDR_LEN + j.lk) end
  return j.kind
end

local function queue_of(j)
  if not j.queue then
    local o = HDR_LEN + j.lk
    j.queue = string.sub(j.v, o + 1, o + j.lq)
  end
  return j.queue
end

local function idem_of(j)
  local o = HDR_LEN + j.lk + j.lq
  return string.sub(j.v, o + 1, o + j.li)
end

-- The record as stored: the header rebuilt, the immutable sections copied, the mutable ones
-- (w, e, r, p when a script set them) replaced.
local function encode(j)
  local v = j.v
  local fixed = HDR_LEN + j.lk + j.lq + j.li + j.ld
  local o = fixed
  local w = j.w or string.sub(v, o + 1, o + j.lw)
  o = o + j.lw
  local e = j.e or string.sub(v, o + 1, o + j.le)
  o = o + j.le
  local r = j.r or string.sub(v, o + 1, o + j.lr)
  o = o + j.lr
  local p = j.p or string.sub(v, o + 1, o + j.lp)
  return struct.pack(HDR, 1, j.st, j.fl, 0, j.a, j.m, j.pr, j.pend, j.tok, j.c, j.u, j.s, j.f,
    j.ra, j.lk, j.lq, j.li, j.ld, #w, #e, #r, #p) .. string.sub(v, HDR_LEN + 1, fixed) .. w .. e .. r .. p
end

-- The unit of work: records read in this call (by id) and those to write back.
local jobs, dirty = {}, {}

local function load(id)
  local j = jobs[id]
  if j == nil then
    local v = redis.call('GET', job_key(id))
    j = v and decode(id, v) or false
    jobs[id] = j
  end
  return j or nil
end

-- Reads many records with MGET (those not read yet in this call).
local function load_many(ids)
  local missing, keys = {}, {}
  for _, id in ipairs(ids) do
    if jobs[id] == nil then
      missing[#missing + 1] = id
      keys[#keys + 1] = job_key(id)
    end
  end
  for i = 1, #keys, CHUNK do
    local values = redis.call('MGET', unpack(keys, i, math.min(i + CHUNK - 1, #keys)))
    for k, v in ipairs(values) do
      local id = missing[i + k - 1]
      jobs[id] = v and decode(id, v) or false
    end
  end
end

local function save(j)
  dirty[j.id] = j
end

-- Index changes, gathered per key -------------------------------------------------------------

local adds, rems, counts = {}, {}, {}

local function zadd(key, score, member)
  local t = adds[key]
  if not t then t = {}; adds[key] = t end
  t[#t + 1] = score
  t[#t + 1] = member
end

local function zrem(key, member)
  local t = rems[key]
  if not t then t = {}; rems[key] = t end
  t[#t + 1] = member
end

local function count(queue, st, delta)
  local field = queue .. ':' .. STATUS[st]
  counts[field] = (counts[field] or 0) + delta
end

local function apply(cmd, key, args)
  for i = 1, #args, CHUNK do
    redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- Applies the gathered index changes (removals first).
local function flush_indexes()
  for key, t in pairs(rems) do apply('ZREM', key, t) end
  for key, t in pairs(adds) do apply('ZADD', key, t) end
  for field, delta in pairs(counts) do
    if delta ~= 0 then redis.call('HINCRBY', COUNTS, field, delta) end
  end
  adds, rems, counts = {}, {}, {}
end

-- Writes every changed record and applies the index changes.
local function commit()
  local args = {}
  for id, j in pairs(dirty) do
    j.v = encode(j)
    j.w, j.e, j.r, j.p = nil, nil, nil, nil
    j.lw, j.le, j.lr, j.lp = struct.unpack('>I4I4I4I4', j.v, 77)
    args[#args + 1] = job_key(id)
    args[#args + 1] = j.v
  end
  for i = 1, #args, CHUNK do
    redis.call('MSET', unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
  dirty = {}
  flush_indexes()
end

-- Transitions -----------------------------------------------------------------------------------

-- What a call changed, for the caller (queue::Changes): ids that became terminal, how many
-- became queued, the earliest run_at of jobs it scheduled.
local changes = { finished = {}, ready = 0, due = 0 }

local function ready_score(j)
  local id = j.id
  return (1000 - j.pr) * PRIO_SPAN + tonumber(string.sub(id, 1, 8) .. string.sub(id, 10, 13), 16)
end

-- Removes a job from the index of its current status (terminal jobs stay until purged).
local function leave(j)
  local st = j.st
  if st == QUEUED then
    zrem(ready_key(kind_of(j)), j.id)
  elseif st == RUNNING then
    zrem(LEASES, j.id)
  elseif st == SCHEDULED then
    zrem(DELAYED, j.id)
    zrem(listing_key(queue_of(j), SCHEDULED), j.id)
  elseif st == WAITING then
    zrem(listing_key(queue_of(j), WAITING), j.id)
  end
end

-- Enters a job in the index of its (new) status. `lease_until` is the lease of a running job.
local function enter(j, now, lease_until)
  local st = j.st
  if st == QUEUED then
    zadd(ready_key(kind_of(j)), ready_score(j), j.id)
    changes.ready = changes.ready + 1
  elseif st == RUNNING then
    zadd(LEASES, lease_until, j.id)
  elseif st == SCHEDULED then
    zadd(DELAYED, j.ra, j.id)
    zadd(listing_key(queue_of(j), SCHEDULED), 0, j.id)
    if changes.due == 0 or j.ra < changes.due then changes.due = j.ra end
  elseif st == WAITING then
    zadd(listing_key(queue_of(j), WAITING), 0, j.id)
  else
    zadd(done_key(queue_of(j)), now, j.id)
    if st ~= SUCCEEDED then zadd(listing_key(queue_of(j), st), 0, j.id) end
    changes.finished[#changes.finished + 1] = j.id
  end
end

-- The one place a job changes status: indexes, counters, timestamps.
local function move(j, to, now, lease_until)
  leave(j)
  count(queue_of(j), j.st, -1)
  j.st = to
  j.u = now
  if to ~= RUNNING then j.tok = 0 end
  if to >= SUCCEEDED then j.f = now end
  count(queue_of(j), to, 1)
  enter(j, now, lease_until)
  save(j)
end

-- A job whose dependencies all succeeded: scheduled when its run_at is ahead, else queued.
local function make_runnable(j, now)
  if j.ra > now then move(j, SCHEDULED, now) else move(j, QUEUED, now) end
end

-- Settles the dependents of every job in changes.finished from position `from` on, including
-- jobs this settling cancels itself: one fewer pending dependency on success, cancelled (with
-- the dependency named) otherwise. A work list, so long chains never recurse.
local function settle(from, now)
  local i = from
  local finished = changes.finished
  while i <= #finished do
    local id = finished[i]
    i = i + 1
    local key = deps_key(id)
    local dependents = redis.call('SMEMBERS', key)
    if #dependents > 0 then
      redis.call('DEL', key)
      local st = load(id).st
      load_many(dependents)
      for _, d in ipairs(dependents) do
        local dj = load(d)
        if dj and dj.st == WAITING then
          if st == SUCCEEDED then
            dj.pend = dj.pend - 1
            if dj.pend <= 0 then make_runnable(dj, now) else save(dj) end
          else
            dj.e = 'dependency ' .. id .. ' ' .. STATUS[st]
            move(dj, CANCELLED, now)
          end
        end
      end
    end
  end
end

-- Wakes one idle instance (the marker list holds at most one element; each waiting instance
-- pops it, and a claim that leaves work behind pushes it again for the next instance).
local function wake()
  if redis.call('LLEN', WAKE) == 0 then redis.call('RPUSH', WAKE, '1') end
end

-- Tells instances waiting on these jobs (watched by a long poll) that they finished.
local function notify_finished(ids)
  if #ids == 0 or redis.call('EXISTS', WATCH) == 0 then return end
  local watched = {}
  for i = 1, #ids, CHUNK do
    local scores = redis.call('ZMSCORE', WATCH, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    for k, score in ipairs(scores) do
      if score then watched[#watched + 1] = ids[i + k - 1] end
    end
  end
  if #watched > 0 then redis.call('PUBLISH', EVENTS, 'f ' .. table.concat(watched, ' ')) end
end

-- Moves `scheduled` jobs whose time has come to `queued`, at most `limit` of them; true when
-- more may be due.
local function promote_due(now, limit)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then return false end
  load_many(due)
  for _, id in ipairs(due) do
    local j = load(id)
    if j and j.st == SCHEDULED then move(j, QUEUED, now) else zrem(DELAYED, id) end
  end
  return #due == limit
end

-- Ends a call that changed jobs: writes, settles, wakes and notifies; answers the changes as
-- {ready count, earliest due (0: none), finished ids...}.
local function finish(now)
  settle(1, now)
  commit()
  if changes.ready > 0 then wake() end
  notify_finished(changes.finished)
  local out = { changes.ready, changes.due }
  for _, id in ipairs(changes.finished) do out[#out + 1] = id end
  return out
end
