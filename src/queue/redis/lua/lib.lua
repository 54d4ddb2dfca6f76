-- lib.lua: shared by the scripts that move jobs between states (after prelude.lua, which holds
-- the keys and constants); each script's own body is appended when it is loaded
-- (src/queue/redis/scripts.rs).
--
-- A job record is one string: a fixed big-endian header (HDR) followed by nine sections whose
-- lengths end the header: kind, queue, idempotency key, data (JSON that only Rust reads),
-- worker, error, result, progress, history; then the flow section (`<group>|<limits>`, empty
-- for a job with neither), whose length and the job's cost sit in the header
-- (src/queue/redis/record.rs is the Rust side of the format, version 3; version 2 records,
-- with zeros there, read as jobs without flow). The history holds the attempts that ended
-- without success as JSON objects separated by commas, without brackets, oldest first (see
-- `add_failure`).
-- A stored record is `waiting`, `scheduled`, `queued` or terminal. A running job keeps its
-- `queued` record untouched: its attempt lives in the `run` hash (`<token>|<started>|<worker>`),
-- with its cancel request in the `cx` set and its progress in the `prog` hash, until the
-- attempt ends and Rust's final record replaces the stored one. So claiming and completing a
-- job cost a few small writes, not a rewrite of its record in Lua.
--
-- Scripts are units of work: records read in a call are cached (load, load_many), changed as
-- Lua tables and written together (commit); index changes are gathered per key and applied in
-- one command per key.

-- The table under `k` in `t`, made (empty) on first use.
local function table_at(t, k)
  local v = t[k]
  if not v then v = {}; t[k] = v end
  return v
end
-- Appends `v` to the list under `k` in `t`.
local function push_at(t, k, v)
  local list = table_at(t, k)
  list[#list + 1] = v
end

-- Keys named per kind and queue, built once per call (no string is built on a second use).
local memo = {}
local function named(prefix, name)
  local by_name = table_at(memo, prefix)
  local k = by_name[name]
  if not k then k = B .. prefix .. name; by_name[name] = k end
  return k
end
-- The ready set of a queue and kind, and its name in the registry of ready sets (READY_SETS).
local ready_memo = {}
local function ready_entry(queue, kind)
  local by_kind = table_at(ready_memo, queue)
  local entry = by_kind[kind]
  if not entry then
    entry = { B .. 'ready:' .. queue .. ':' .. kind, queue .. ':' .. kind }
    by_kind[kind] = entry
  end
  return entry
end
local function ready_key(queue, kind) return ready_entry(queue, kind)[1] end
-- The fresh list of a queue, kind and priority (jobs a bulk submit queued, in arrival order;
-- the registry READY_LISTS names them as `<queue>:<kind>:<priority>`), and the set of its ids
-- cancelled while they waited there (a claim passes over them: removing an id from the middle
-- of a list would cost Redis the whole list).
local READY_LISTS = B .. 'rl'
local function fresh_key(queue, kind, priority) return B .. 'fresh:' .. queue .. ':' .. kind .. ':' .. priority end
local function skips_key(queue, kind, priority) return B .. 'skip:' .. queue .. ':' .. kind .. ':' .. priority end
-- The index of every job of a queue is cut in time slices: a job's slice is its id's
-- millisecond timestamp divided by SLICE_MS (as `bulk::slice_of` in Rust). `lt:<queue>` holds the
-- slices that hold jobs, `lj:<queue>:<slice>` is a slice's ids end to end (36 bytes each: one
-- APPEND per call, not one list entry per job), `ln:<queue>` counts them.
local SLICE_MS = 100
local function slices_key(queue) return named('lt:', queue) end
local function slice_counts_key(queue) return named('ln:', queue) end
local function slice_key(queue, slice) return B .. 'lj:' .. queue .. ':' .. slice end
-- As text, written as Rust writes it: a Lua number given to a Redis command is formatted by
-- Redis, in exponent form by some versions.
local function slice_of(id)
  return string.format('%d', math.floor(tonumber(string.sub(id, 1, 8) .. string.sub(id, 10, 13), 16) / SLICE_MS))
end
local function done_key(queue) return named('done:', queue) end
local function listing_key(queue, st) return named('ls:' .. STATUS[st] .. ':', queue) end

-- Records --------------------------------------------------------------------------------------

local function decode(id, v)
  local _, st, fl, _, a, m, pr, pend, co, lf, c, u, s, f, ra, lk, lq, li, ld, lw, le, lr, lp, lh =
    struct.unpack(HDR, v)
  return { id = id, v = v, st = st, fl = fl, a = a, m = m, pr = pr, pend = pend, co = co,
    lf = lf, c = c, u = u, s = s, f = f, ra = ra, lk = lk, lq = lq, li = li, ld = ld, lw = lw,
    le = le, lr = lr, lp = lp, lh = lh }
end

-- The flow section of a record (`<group>|<limits>`; '' for a job with neither).
local function flow_of(j)
  if j.lf == 0 then return '' end
  return string.sub(j.v, #j.v - j.lf + 1)
end

-- The lane of jobs of `queue` and `kind` with flow section `flow` (non-empty) and `cost`:
-- `<queue>|<group>|<limits>|<cost>|<kind>`, cost 1 for jobs under no limit (as
-- keys::lane_member in Rust). nil for a job without flow: it goes to the fresh lists and
-- ready sets.
local function lane_member(queue, kind, flow, cost)
  if flow == '' then return nil end
  if string.sub(flow, -1) == '|' then cost = 1 end
  return queue .. '|' .. flow .. '|' .. math.max(cost, 1) .. '|' .. kind
end

-- The limits a flow section names.
local function limits_of(flow)
  local names = {}
  local list = string.match(flow, '|(.*)$')
  if list then
    for name in string.gmatch(list, '[^,]+') do names[#names + 1] = name end
  end
  return names
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

-- The queue of a stored record, read from its header alone.
local function queue_of_record(v)
  local lk, lq = struct.unpack('>I4I4', v, 61)
  return string.sub(v, HDR_LEN + lk + 1, HDR_LEN + lk + lq)
end

local function idem_of(j)
  local o = HDR_LEN + j.lk + j.lq
  return string.sub(j.v, o + 1, o + j.li)
end

-- The history section of a record as stored (or as this call changed it).
local function history_of(j)
  if j.h then return j.h end
  local o = HDR_LEN + j.lk + j.lq + j.li + j.ld + j.lw + j.le + j.lr + j.lp
  return string.sub(j.v, o + 1, o + j.lh)
end

-- The record as stored: the header rebuilt, the immutable sections copied, the mutable ones
-- (w, e, r, p, h when a script set them) replaced.
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
  o = o + j.lp
  local h = j.h or string.sub(v, o + 1, o + j.lh)
  return struct.pack(HDR, VERSION, j.st, j.fl, 0, j.a, j.m, j.pr, j.pend, j.co, j.lf, j.c, j.u,
    j.s, j.f, j.ra, j.lk, j.lq, j.li, j.ld, #w, #e, #r, #p, #h) ..
    string.sub(v, HDR_LEN + 1, fixed) .. w .. e .. r .. p .. h .. flow_of(j)
end

-- The most entries a history keeps (the latest), as JobRecord::MAX_HISTORY.
local HISTORY_MAX = 100
-- How every history entry starts; never inside an error text, whose quotes are escaped.
local ENTRY_START = '{"attempt":'

-- Appends attempt number `attempt` of `j`, ended now without success for `err`, to its history
-- (j.h). `err` is one of the scripts' fixed texts, which need no JSON escaping. Entries are
-- counted, and the oldest dropped beyond HISTORY_MAX, only when the attempt number allows that
-- many.
local function add_failure(j, attempt, err)
  local entry = ENTRY_START .. attempt .. ',"error":"' .. err .. '","at":' .. NOW_TEXT .. '}'
  local h = history_of(j)
  if h == '' then h = entry else h = h .. ',' .. entry end
  if attempt > HISTORY_MAX then
    local starts, at = {}, 1
    while true do
      local found = string.find(h, ENTRY_START, at, true)
      if not found then break end
      starts[#starts + 1] = found
      at = found + #ENTRY_START
    end
    if #starts > HISTORY_MAX then h = string.sub(h, starts[#starts - HISTORY_MAX + 1]) end
  end
  j.h = h
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

-- Index changes, gathered per key ----------------------------------------------------------------

local adds, rems, counts, writes, done = {}, {}, {}, {}, {}
-- Jobs entered in (ids) and removed from (a number) the index of every job, per queue and slice.
local listed, unlisted = {}, {}
-- Ready sets entered in this call (`<queue>:<kind>`), and lanes, for the registries claims read.
local ready_sets, lanes_entered = {}, {}
-- Changes of the running counts per limit.
local limit_running = {}

local function zadd(key, score, member)
  local t = table_at(adds, key)
  t[#t + 1] = score
  t[#t + 1] = member
end

local function zrem(key, member)
  push_at(rems, key, member)
end

-- Enters new job `id` in the index of every job of `queue`.
local function list_job(queue, id)
  push_at(table_at(listed, queue), slice_of(id), id)
end

-- Removes job `id` from that index: a slice's ids go when its last job does (they keep the ids of
-- removed jobs until then; listings skip them).
local function unlist_job(queue, id)
  local slices = table_at(unlisted, queue)
  local slice = slice_of(id)
  slices[slice] = (slices[slice] or 0) + 1
end

local function count(queue, st, delta)
  local q = table_at(counts, queue)
  q[st] = (q[st] or 0) + delta
end

-- Runs `cmd` over `args` in chunks (after `key`, when given).
local function apply(cmd, key, args)
  for i = 1, #args, CHUNK do
    if key then
      redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
    else
      redis.call(cmd, unpack(args, i, math.min(i + CHUNK - 1, #args)))
    end
  end
end

-- Files terminal jobs of `queue` under a new batch of the queue's retention index.
local function file_done(queue, ids)
  local batch = redis.call('INCR', DONE_SEQ)
  apply('RPUSH', batch_key(batch), ids)
  redis.call('ZADD', done_key(queue), NOW_TEXT, batch)
end

-- Applies the gathered index changes (removals first) and counters.
local function flush_indexes()
  for key, t in pairs(rems) do apply('ZREM', key, t) end
  for key, t in pairs(adds) do apply('ZADD', key, t) end
  for queue, ids in pairs(done) do file_done(queue, ids) end
  for set in pairs(ready_sets) do redis.call('SADD', READY_SETS, set) end
  for lane in pairs(lanes_entered) do redis.call('SADD', LANES, lane) end
  for name, delta in pairs(limit_running) do
    if delta ~= 0 and redis.call('HINCRBY', LIMRUN, name, delta) <= 0 then redis.call('HDEL', LIMRUN, name) end
  end
  for queue, slices in pairs(listed) do
    local entries = {}
    for slice, ids in pairs(slices) do
      redis.call('APPEND', slice_key(queue, slice), table.concat(ids))
      redis.call('HINCRBY', slice_counts_key(queue), slice, #ids)
      entries[#entries + 1] = slice
      entries[#entries + 1] = slice
    end
    redis.call('ZADD', slices_key(queue), unpack(entries))
  end
  for queue, slices in pairs(unlisted) do
    for slice, n in pairs(slices) do
      if redis.call('HINCRBY', slice_counts_key(queue), slice, -n) <= 0 then
        redis.call('HDEL', slice_counts_key(queue), slice)
        redis.call('DEL', slice_key(queue, slice))
        redis.call('ZREM', slices_key(queue), slice)
      end
    end
  end
  for queue, deltas in pairs(counts) do
    for st, delta in pairs(deltas) do
      if delta ~= 0 then redis.call('HINCRBY', COUNTS, queue .. ':' .. STATUS[st], delta) end
    end
  end
  adds, rems, counts, done, ready_sets, listed, unlisted = {}, {}, {}, {}, {}, {}, {}
  lanes_entered, limit_running = {}, {}
end

-- Writes every changed record and applies the index changes.
local function commit()
  for id, j in pairs(dirty) do
    j.v = encode(j)
    j.w, j.e, j.r, j.p, j.h = nil, nil, nil, nil, nil
    j.lw, j.le, j.lr, j.lp, j.lh = struct.unpack('>I4I4I4I4I4', j.v, 77)
    writes[#writes + 1] = job_key(id)
    writes[#writes + 1] = j.v
  end
  dirty = {}
  apply('MSET', nil, writes)
  writes = {}
  flush_indexes()
end

-- Transitions -----------------------------------------------------------------------------------

-- What a call changed, for the caller (queue::Changes): ids that became terminal, how many
-- became queued, the earliest run_at of jobs it scheduled.
-- `freed`: an attempt under limits ended (idle instances are woken, though no job became queued).
local changes = { finished = {}, ready = 0, due = 0, freed = false }

local function ready_score(j)
  local id = j.id
  return (1000 - j.pr) * PRIO_SPAN + tonumber(string.sub(id, 1, 8) .. string.sub(id, 10, 13), 16)
end

-- Enters job `id` of `queue` in the index of status `st`; `score` is its ready score (queued)
-- or run_at (scheduled), `now` its finish time (terminal); `lane` its lane when it has one.
local function enter_index(id, queue, kind, st, score, now, lane)
  if st == QUEUED then
    if lane then
      zadd(lane_key(lane), score, id)
      lanes_entered[lane] = true
    else
      local entry = ready_entry(queue, kind)
      zadd(entry[1], score, id)
      ready_sets[entry[2]] = true
    end
    changes.ready = changes.ready + 1
  elseif st == SCHEDULED then
    zadd(DELAYED, score, id)
    zadd(listing_key(queue, SCHEDULED), '0', id)
    local due = tonumber(score)
    if changes.due == 0 or due < changes.due then changes.due = due end
  elseif st == WAITING then
    zadd(listing_key(queue, WAITING), '0', id)
  else
    push_at(done, queue, id)
    if st ~= SUCCEEDED then zadd(listing_key(queue, st), '0', id) end
    changes.finished[#changes.finished + 1] = id
  end
end

-- Removes a stored job from the index of its status (terminal jobs stay until purged).
local function leave(j)
  local st = j.st
  if st == QUEUED then
    -- In its lane, its ready set, or else in the fresh list it was submitted to.
    local queue, kind = queue_of(j), kind_of(j)
    local lane = lane_member(queue, kind, flow_of(j), j.co)
    if lane then
      -- In its lane, or else in the fresh lane it was submitted to.
      if redis.call('ZREM', lane_key(lane), j.id) == 0 then
        redis.call('SADD', fresh_lane_skips(j.pr, lane), j.id)
      end
    elseif redis.call('ZREM', ready_key(queue, kind), j.id) == 0 then
      redis.call('SADD', skips_key(queue, kind, j.pr), j.id)
    end
  elseif st == SCHEDULED then
    zrem(DELAYED, j.id)
    zrem(listing_key(queue_of(j), SCHEDULED), j.id)
  elseif st == WAITING then
    zrem(listing_key(queue_of(j), WAITING), j.id)
  end
end

local function enter(j, now)
  local st = j.st
  local score = (st == QUEUED and ready_score(j)) or (st == SCHEDULED and j.ra) or 0
  local lane = st == QUEUED and lane_member(queue_of(j), kind_of(j), flow_of(j), j.co) or nil
  enter_index(j.id, queue_of(j), kind_of(j), st, score, now, lane)
end

-- An attempt of job `j` ended (or never ran): the limits it names count one running job fewer,
-- and an idle instance looks again (a concurrency limit may have freed a place; the instance
-- that ran the attempt claims after recording it anyway).
local function release_limits(j)
  if j.lf == 0 then return end
  local names = limits_of(flow_of(j))
  if #names == 0 then return end
  for _, name in ipairs(names) do limit_running[name] = (limit_running[name] or 0) - 1 end
  changes.freed = true
end

-- The one place a stored (not running) job changes status: indexes, counters, timestamps.
local function move(j, to, now)
  leave(j)
  count(queue_of(j), j.st, -1)
  j.st = to
  j.u = now
  if to >= SUCCEEDED then j.f = now end
  count(queue_of(j), to, 1)
  enter(j, now)
  save(j)
end

-- Ends the attempt of a running job (its record says `queued`) in status `to`: the attempt is
-- counted when `counted`, its worker, start and progress go into the record.
local function stop_running(j, run, to, now, counted, progress)
  local _, started, worker = string.match(run, '^([^|]*)|([^|]*)|(.*)$')
  release_limits(j)
  count(queue_of(j), RUNNING, -1)
  count(queue_of(j), to, 1)
  if counted then j.a = j.a + 1 end
  j.s = tonumber(started) or now
  j.w = worker
  if progress then j.p = progress end
  j.st = to
  j.u = now
  if to >= SUCCEEDED then j.f = now end
  enter(j, now)
  save(j)
end

-- Final statuses of jobs whose records this call writes without loading them (completions).
local final_status = {}

-- A job whose dependencies all succeeded: scheduled when its run_at is ahead, else queued.
local function make_runnable(j, now)
  if j.ra > now then move(j, SCHEDULED, now) else move(j, QUEUED, now) end
end

-- Whether this call settles dependents left by earlier calls even when it ended no job with
-- dependents itself (the periodic steps do).
local settle_backlog = false

-- Settles the dependents of every job in changes.finished from position `from` on, including
-- jobs this settling cancels itself, after those earlier calls left: one fewer pending
-- dependency on success, cancelled (with the dependency named) otherwise. Only jobs in the
-- `parents` set have dependents to settle; they join the `settle` list, which is worked from
-- its head, at most SETTLE_LIMIT dependents per call. True when some are left for later.
local function settle(from, now)
  local finished = changes.finished
  local i = from
  local budget = SETTLE_LIMIT
  local look = settle_backlog
  while true do
    if i <= #finished and redis.call('EXISTS', PARENTS) == 1 then
      local round = {}
      for k = i, #finished do round[#round + 1] = finished[k] end
      local flags = {}
      for k = 1, #round, CHUNK do
        local part = redis.call('SMISMEMBER', PARENTS, unpack(round, k, math.min(k + CHUNK - 1, #round)))
        for n, flag in ipairs(part) do flags[k + n - 1] = flag end
      end
      for k, id in ipairs(round) do
        if flags[k] == 1 then
          redis.call('SREM', PARENTS, id)
          local st = final_status[id] or load(id).st
          redis.call('RPUSH', SETTLE, id .. ' ' .. st)
          look = true
        end
      end
    end
    i = #finished + 1
    if not look then return false end
    local head = redis.call('LINDEX', SETTLE, 0)
    if not head then return false end
    if budget == 0 then return true end
    local id, st = string.match(head, '^(%S+) (%d+)$')
    st = tonumber(st)
    local key = deps_key(id)
    local dependents = redis.call('SPOP', key, budget)
    budget = budget - #dependents
    if redis.call('EXISTS', key) == 0 then redis.call('LPOP', SETTLE) end
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

-- Ends a call that changed jobs: settles dependents, writes, wakes and notifies; answers the
-- changes as {ready count, earliest due (0: none), finished ids...}.
local function finish(now)
  changes.unsettled = settle(1, now)
  commit()
  if changes.ready > 0 or changes.freed then wake() end
  notify_finished(changes.finished)
  local out = { changes.ready, changes.due }
  for _, id in ipairs(changes.finished) do out[#out + 1] = id end
  return out
end

-- Runs the commands Rust prepared, from ARGV position `at`: a count c, then c times a command
-- name, its key ('' for a command without one, MSET), the number n of arguments and the n
-- arguments. Returns the position after them. This is how the hot paths write: Rust builds
-- every index change, the script applies them in bulk without handling each job.
local function prepared(at)
  local c = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, c do
    local cmd, key, n = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
    local first, stop = at + 3, at + 2 + n
    for i = first, stop, CHUNK do
      local last = math.min(i + CHUNK - 1, stop)
      if key == '' then
        redis.call(cmd, unpack(ARGV, i, last))
      else
        redis.call(cmd, key, unpack(ARGV, i, last))
      end
    end
    at = stop + 1
  end
  return at
end

-- Forgets the running state of ended attempts: ids per lease token.
local function forget_running(by_token)
  local all = {}
  for token, ids in pairs(by_token) do
    apply('SREM', lease_key(token), ids)
    for _, id in ipairs(ids) do all[#all + 1] = id end
  end
  if #all == 0 then return end
  apply('HDEL', RUN, all)
  if redis.call('EXISTS', CANCELS) == 1 then apply('SREM', CANCELS, all) end
  if redis.call('EXISTS', PROGRESS) == 1 then apply('HDEL', PROGRESS, all) end
end

-- Attempts this call took from workers that are gone, for the caller: id, kind and worker of
-- each, one after the other.
local taken = {}

-- Ends the attempt of running job `j` (`run`, its run entry) whose worker is gone: its lease
-- expired, or its instance restarted. The attempt counts and enters the history; the job goes
-- back to `queued` with attempts left, else ends `failed` with `reason`, or `cancelled` when
-- its cancel was requested (`cancelled`). It is reported in `taken`. The caller forgets its
-- running state (forget_running) and counts the takeovers (count_taken).
local function lose_attempt(j, run, cancelled, progress, now, reason)
  local err = reason
  if cancelled then
    err = 'cancelled (' .. reason .. ')'
    j.e, j.fl = err, FLAG_CANCEL
    stop_running(j, run, CANCELLED, now, true, progress)
  elseif j.a + 1 < j.m then
    j.e = ''
    stop_running(j, run, QUEUED, now, true, progress)
  else
    j.e = reason
    stop_running(j, run, FAILED, now, true, progress)
  end
  add_failure(j, j.a, err)
  local _, _, worker = string.match(run, '^([^|]*)|([^|]*)|(.*)$')
  taken[#taken + 1] = j.id
  taken[#taken + 1] = kind_of(j)
  taken[#taken + 1] = worker or ''
end

-- Counts the attempts this call took under `cause` (a field of TAKEOVERS) and returns them for
-- the caller (`taken`).
local function count_taken(cause)
  if #taken > 0 then redis.call('HINCRBY', TAKEOVERS, cause, #taken / 3) end
  return taken
end
