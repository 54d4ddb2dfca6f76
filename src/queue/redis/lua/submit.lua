-- submit: inserts a batch of jobs, all or nothing.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   'B' (bulk) or 'J' (job by job)
-- ARGV[3]   the most jobs waiting to run (waiting, scheduled, queued) a queue may hold: a batch
--           that would take a queue past it is refused whole ('queue_full <queue>')
-- ARGV[4]   l, then l times: a limit the batch's jobs name and the highest cost among them:
--           a limit that does not exist refuses the batch ('unknown_limit <name>'), and so does
--           a cost above its rate's tokens ('cost_over_limit <name>,<cost>,<tokens>')
-- Then, from A = 5 + 2l:
--
-- 'B': a batch of jobs without dependencies or idempotency keys, which Rust prepared whole:
--   ARGV[A]     the first job's key (a retried call that did run finds it stored)
--   ARGV[A + 1] how many jobs are queued, ARGV[A + 2] the earliest run_at of the scheduled
--               ones (0)
--   ARGV[A + 3] q, then q times: a queue and how many jobs the batch adds to it
--   then prepared commands (see `prepared` in lib.lua): the records (MSET), the index entries
--   (lanes, ready sets, delayed, listings), the registries and the counters.
--
-- 'J': then, per job: id, kind, queue, status (queued or scheduled, as Rust found it), score
--   (the ready score when queued, run_at in ms when scheduled), idempotency key ('' none), its
--   lane ('' none), number of dependencies n, n dependency ids, the record.
--   A job whose idempotency key belongs to a stored job is not inserted: that job answers for
--   it. Every dependency must be a stored job or a job of the batch; an unknown one refuses the
--   whole batch before anything is written. A job with unfinished dependencies is stored
--   `waiting`; one whose dependency already failed or was cancelled is stored `cancelled`,
--   naming it.
--
-- Safe to retry: a batch whose first job is already stored (a retried call that did run) is
-- answered with what is stored and nothing is written again.
--
-- Returns {changes, results} with changes = {ready count, earliest due (0: none), finished
-- ids...}. 'B': results is {} ('stored' instead of changes when the batch was stored already:
-- the caller reads it back). 'J': results = {the job's id in the request, created (1/0), id
-- of the job that answers, its record ('' when stored as sent), its running attempt ('' none)}
-- per job. Errors: 'unknown_dependency <id>', 'queue_full <queue>', 'unknown_limit <name>',
-- 'cost_over_limit <name>,<cost>,<tokens>' (names hold no comma).

local now = tonumber(ARGV[1])
local max_queued = tonumber(ARGV[3])
local A = 5 + 2 * tonumber(ARGV[4])

-- Why the limits the batch names refuse it, if they do (checked once the batch is known not
-- to be stored already, so that a retried call that did run is answered).
local function refused_by_limits()
  for k = 5, A - 1, 2 do
    local name, cost = ARGV[k], tonumber(ARGV[k + 1])
    local limit = redis.call('HMGET', limit_key(name), 'created', 'tokens')
    if not limit[1] then return 'unknown_limit ' .. name end
    if limit[2] and tonumber(limit[2]) < cost then
      return 'cost_over_limit ' .. name .. ',' .. cost .. ',' .. limit[2]
    end
  end
  return nil
end

-- The queue that `added` more jobs waiting to run would take past the limit, if one would.
local function over_limit(added)
  for queue, n in pairs(added) do
    local c = redis.call('HMGET', COUNTS, queue .. ':waiting', queue .. ':scheduled', queue .. ':queued')
    local waiting = (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0)
    if waiting + n > max_queued then return queue end
  end
  return nil
end

if ARGV[2] == 'B' then
  if redis.call('EXISTS', ARGV[A]) == 1 then return { 'stored', {} } end
  local refused = refused_by_limits()
  if refused then return redis.error_reply(refused) end
  local added, at = {}, A + 4
  for _ = 1, tonumber(ARGV[A + 3]) do
    added[ARGV[at]] = tonumber(ARGV[at + 1])
    at = at + 2
  end
  local full = over_limit(added)
  if full then return redis.error_reply('queue_full ' .. full) end
  prepared(at)
  local ready = tonumber(ARGV[A + 1])
  if ready > 0 then wake() end
  return { { ready, tonumber(ARGV[A + 2]) }, {} }
end

local slow_jobs = {}
local i = A
while i <= #ARGV do
  local n = tonumber(ARGV[i + 7])
  local deps = {}
  for k = 1, n do deps[k] = ARGV[i + 7 + k] end
  local lane = ARGV[i + 6]
  slow_jobs[#slow_jobs + 1] = { id = ARGV[i], kind = ARGV[i + 1], queue = ARGV[i + 2],
    st = tonumber(ARGV[i + 3]), score = ARGV[i + 4], idem = ARGV[i + 5], deps = deps,
    lane = lane ~= '' and lane or nil, blob = ARGV[i + 8 + n] }
  i = i + 9 + n
end

-- A stored job's record and running attempt, as a result.
local function stored(asked, created, id)
  local j = load(id)
  return { asked, created, id, j and j.v or '', redis.call('HGET', RUN, id) or '' }
end

-- Idempotency: a key seen before names the job that answers instead.
local alias = {}
for _, job in ipairs(slow_jobs) do
  if job.idem ~= '' then
    local existing = redis.call('GET', idem_key(job.idem))
    if existing and load(existing) then alias[job.id] = existing end
  end
end

local results, first = {}, nil
for _, job in ipairs(slow_jobs) do
  if not alias[job.id] then first = first or job.id end
end
-- A retried call whose first attempt was applied: answer what is stored.
if first and redis.call('EXISTS', job_key(first)) == 1 then
  for _, job in ipairs(slow_jobs) do
    results[#results + 1] = stored(job.id, alias[job.id] and 0 or 1, alias[job.id] or job.id)
  end
  return { { 0, 0 }, results }
end
local refused = refused_by_limits()
if refused then return redis.error_reply(refused) end

-- New jobs of the batch (needed only to check dependencies within it).
local fresh = {}
for _, job in ipairs(slow_jobs) do
  if not alias[job.id] then fresh[job.id] = true end
end

-- Room in every queue the batch adds to.
local added = {}
for _, job in ipairs(slow_jobs) do
  if not alias[job.id] then added[job.queue] = (added[job.queue] or 0) + 1 end
end
local full = over_limit(added)
if full then return redis.error_reply('queue_full ' .. full) end

-- Validate every dependency before writing anything.
local function resolve(dep) return alias[dep] or dep end
for _, job in ipairs(slow_jobs) do
  if not alias[job.id] then
    for _, dep in ipairs(job.deps) do
      local id = resolve(dep)
      if not fresh[id] and not load(id) then
        return redis.error_reply('unknown_dependency ' .. id)
      end
    end
  end
end

local queues, kinds = {}, {}
local doomed, slow = {}, {}
for _, job in ipairs(slow_jobs) do
  local id = job.id
  if alias[id] then
    results[#results + 1] = stored(id, 0, alias[id])
  else
    local pending, doom = 0, nil
    for _, dep in ipairs(job.deps) do
      local d = resolve(dep)
      local st = (not fresh[d]) and load(d).st or nil
      if st == FAILED or st == CANCELLED then
        doom = doom or { d, st }
      elseif st ~= SUCCEEDED then
        -- Pending (a running job's record says queued: it has not succeeded either).
        pending = pending + 1
        redis.call('SADD', deps_key(d), id)
        redis.call('SADD', PARENTS, d)
      end
    end
    if job.idem ~= '' then redis.call('SET', idem_key(job.idem), id) end
    list_job(job.queue, id)
    queues[job.queue] = true
    kinds[job.kind] = true
    if pending == 0 and not doom then
      writes[#writes + 1] = job_key(id)
      writes[#writes + 1] = job.blob
      count(job.queue, job.st, 1)
      enter_index(id, job.queue, job.kind, job.st, job.score, now, job.lane)
      results[#results + 1] = { id, 1, id, '', '' }
    else
      local j = decode(id, job.blob)
      j.st, j.pend = WAITING, pending
      jobs[id] = j
      save(j)
      count(job.queue, WAITING, 1)
      enter(j, now)
      if doom then doomed[#doomed + 1] = { j, doom } end
      slow[#results + 1] = j
      results[#results + 1] = { id, 1, id, '', '' }
    end
  end
end

for queue in pairs(queues) do redis.call('SADD', QUEUES, queue) end
for kind in pairs(kinds) do redis.call('SADD', KINDS, kind) end

for _, d in ipairs(doomed) do
  local j, dep = d[1], d[2]
  if j.st == WAITING then
    j.e = 'dependency ' .. dep[1] .. ' ' .. STATUS[dep[2]]
    move(j, CANCELLED, now)
  end
end

local out = finish(now)
for k, j in pairs(slow) do results[k][4] = j.v end
return { out, results }
