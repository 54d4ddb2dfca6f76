-- submit: inserts a batch of jobs, all or nothing.
--
-- ARGV[1]   now (ms)
-- then, per job: id, kind, queue, priority, run_at (ms, 0: none), idempotency key ('' none),
--                number of dependencies n, n dependency ids, the record (as built by Rust:
--                status queued or scheduled, no pending dependencies)
--
-- A job whose idempotency key belongs to a stored job is not inserted: that job answers for it.
-- Every dependency must be a stored job or a job of the batch; an unknown one refuses the whole
-- batch before anything is written. A job with unfinished dependencies is stored `waiting`; one
-- whose dependency already failed or was cancelled is stored `cancelled`, naming it.
--
-- Safe to retry: when the batch's first new job is already stored (a retried call that did run),
-- the stored records are returned and nothing is written again.
--
-- Returns {changes, results}: changes = {ready count, earliest due (0: none), finished ids...};
-- results, in request order, = {created (1/0), id, record ('' when stored as sent)} per job.
-- Error: {err = 'unknown_dependency <id>'}.

local now = tonumber(ARGV[1])
local batch = {}
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i + 6])
  local deps = {}
  for k = 1, n do deps[k] = ARGV[i + 6 + k] end
  batch[#batch + 1] = { id = ARGV[i], kind = ARGV[i + 1], queue = ARGV[i + 2],
    pr = tonumber(ARGV[i + 3]), ra = tonumber(ARGV[i + 4]), idem = ARGV[i + 5], deps = deps,
    blob = ARGV[i + 7 + n] }
  i = i + 8 + n
end

-- Idempotency: a key seen before names the job that answers instead.
local alias = {}
for _, job in ipairs(batch) do
  if job.idem ~= '' then
    local existing = redis.call('GET', idem_key(job.idem))
    if existing and load(existing) then alias[job.id] = existing end
  end
end

local fresh, results = {}, {}
for _, job in ipairs(batch) do
  if not alias[job.id] then fresh[job.id] = job end
end

-- A retried call whose first attempt was applied: answer what is stored.
for _, job in ipairs(batch) do
  if fresh[job.id] then
    if redis.call('EXISTS', job_key(job.id)) == 1 then
      for _, again in ipairs(batch) do
        local id = alias[again.id] or again.id
        local j = load(id)
        results[#results + 1] = { alias[again.id] and 0 or 1, id, j and j.v or '' }
      end
      return { { 0, 0 }, results }
    end
    break
  end
end

-- Validate every dependency before writing anything.
local function resolve(dep) return alias[dep] or dep end
for _, job in ipairs(batch) do
  if fresh[job.id] then
    for _, dep in ipairs(job.deps) do
      local id = resolve(dep)
      if not fresh[id] and not load(id) then
        return redis.error_reply('unknown_dependency ' .. id)
      end
    end
  end
end

local raw, doomed, queues, kinds = {}, {}, {}, {}
for _, job in ipairs(batch) do
  if fresh[job.id] then
    local id = job.id
    local pending, doom = 0, nil
    for _, dep in ipairs(job.deps) do
      local d = resolve(dep)
      local st = (not fresh[d]) and load(d).st or nil
      if st == FAILED or st == CANCELLED then
        doom = doom or { d, st }
      elseif st ~= SUCCEEDED then
        pending = pending + 1
        redis.call('SADD', deps_key(d), id)
      end
    end
    if job.idem ~= '' then redis.call('SET', idem_key(job.idem), id) end
    zadd(all_key(job.queue), 0, id)
    queues[job.queue] = true
    kinds[job.kind] = true
    if pending == 0 and not doom then
      -- The common case: stored exactly as Rust built it.
      raw[#raw + 1] = job_key(id)
      raw[#raw + 1] = job.blob
      local j = { id = id, st = job.ra > now and SCHEDULED or QUEUED, pr = job.pr, ra = job.ra,
        kind = job.kind, queue = job.queue }
      count(job.queue, j.st, 1)
      enter(j, now)
      results[#results + 1] = { 1, id, '' }
    else
      local j = decode(id, job.blob)
      j.st, j.pend = WAITING, pending
      jobs[id] = j
      save(j)
      count(job.queue, WAITING, 1)
      enter(j, now)
      if doom then doomed[#doomed + 1] = { j, doom } end
      results[#results + 1] = { 1, id, j }
    end
  else
    local id = alias[job.id]
    results[#results + 1] = { 0, id, load(id).v }
  end
end

for k = 1, #raw, CHUNK do
  redis.call('MSET', unpack(raw, k, math.min(k + CHUNK - 1, #raw)))
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
for _, r in ipairs(results) do
  if type(r[3]) == 'table' then r[3] = encode(r[3]) end
end
return { out, results }
