-- claim: promotes due jobs, then hands up to one queued job per worker slot to this instance,
-- highest priority first, oldest first within a priority, only of the kinds it can run.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   lease (ms)
-- ARGV[3]   number of worker slots w; ARGV[4 .. 3 + w] their names
-- ARGV[4 + w ..] the kinds this instance has handlers for
--
-- The ready sets are per queue and kind (the registry READY_SETS names them); the first w of
-- every claimable set are merged by score. The claimed jobs run under one fresh lease token:
-- each gets a `run` entry (`<token>|<now>|<worker>`), the token's set `lb:<token>` lists them
-- and the lease index holds the token until its expiry. Their records are not rewritten (they
-- stay `queued` in Redis; the `run` entry is what makes them running). When the claim took as
-- many jobs as it could and work is left, the wake marker is pushed again for the next idle
-- instance.
--
-- Not safe to retry: a retry would claim other jobs (what a lost answer gave the instance is
-- taken back by its next claim, see recover.lua). Returns {token, then id, stored record, run
-- entry per claimed job}, in claim order; {} when nothing was claimed.

local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local w = tonumber(ARGV[3])
if w < 1 then return {} end
local claimable = {}
for k = 4 + w, #ARGV do claimable[ARGV[k]] = true end

if promote_due(now, 250) then wake() end
commit()
if changes.ready > 0 then wake() end

-- The claimable ready sets that hold jobs, with their first w. With one, those are the claim,
-- in its order; with several, they are merged by score, then id. Scores are read only then:
-- Redis formats each one as text, which costs more than reading the member.
local sources = {}
for _, set in ipairs(redis.call('SMEMBERS', READY_SETS)) do
  local colon = string.find(set, ':', 1, true)
  local queue, kind = string.sub(set, 1, colon - 1), string.sub(set, colon + 1)
  if claimable[kind] then
    local key = ready_key(queue, kind)
    local top = redis.call('ZRANGE', key, 0, w - 1)
    if #top > 0 then sources[#sources + 1] = { key = key, queue = queue, top = top, taken = 0 } end
  end
end
if #sources == 0 then return {} end

local ids, from = {}, {}
if #sources == 1 then
  local source = sources[1]
  ids = source.top
  source.taken = #ids
  for k = 1, #ids do from[k] = source end
else
  local candidates = {}
  for _, source in ipairs(sources) do
    local top = redis.call('ZRANGE', source.key, 0, w - 1, 'WITHSCORES')
    for k = 1, #top, 2 do candidates[#candidates + 1] = { tonumber(top[k + 1]), top[k], source } end
  end
  table.sort(candidates, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for k = 1, math.min(#candidates, w) do
    ids[k] = candidates[k][2]
    local source = candidates[k][3]
    from[k] = source
    source.taken = source.taken + 1
  end
end
-- Each set's share is a prefix of it: remove it by rank.
for _, source in ipairs(sources) do
  if source.taken > 0 then redis.call('ZREMRANGEBYRANK', source.key, 0, source.taken - 1) end
end

local keys = {}
for k, id in ipairs(ids) do keys[k] = job_key(id) end
local values = redis.call('MGET', unpack(keys))
local token = redis.call('INCR', TOKENS)
local prefix = token .. '|' .. ARGV[1] .. '|'
local out, run, members = { token }, {}, {}
for k, id in ipairs(ids) do
  local v = values[k]
  -- A ready set holds only queued jobs; a record missing or not queued (never expected) is
  -- dropped from the set unclaimed.
  if v and string.byte(v, 2) == QUEUED then
    local attempt = prefix .. ARGV[3 + k]
    run[#run + 1] = id
    run[#run + 1] = attempt
    members[#members + 1] = id
    out[#out + 1] = id
    out[#out + 1] = v
    out[#out + 1] = attempt
  else
    local source = from[k]
    source.taken = source.taken - 1
  end
end
for _, source in ipairs(sources) do
  if source.taken > 0 then
    count(source.queue, QUEUED, -source.taken)
    count(source.queue, RUNNING, source.taken)
  end
end
if #members == 0 then
  flush_indexes()
  return {}
end
if redis.call('HEXISTS', RUN, RUN_SENTINEL) == 0 then
  redis.call('HSET', RUN, RUN_SENTINEL, string.rep('-', 4096))
end
apply('HSET', RUN, run)
apply('SADD', lease_key(token), members)
redis.call('ZADD', LEASES, now + lease, token)
flush_indexes()

if #ids == w then
  for _, source in ipairs(sources) do
    if redis.call('ZCARD', source.key) > 0 then wake() break end
  end
end
return out
