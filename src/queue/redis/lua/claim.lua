-- claim: promotes due jobs, then hands up to one queued job per worker slot to this instance,
-- highest priority first, oldest first within a priority, only of the kinds it can run.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   lease (ms)
-- ARGV[3]   number of worker slots w; ARGV[4 .. 3 + w] their names
-- ARGV[4 + w ..] the kinds this instance has handlers for
--
-- Ready jobs wait in fresh lists (jobs queued by a bulk submit, per queue, kind and priority,
-- in arrival order; the registry READY_LISTS names them) and in ready sets (every other way to
-- become queued: retries, due jobs, released dependents, per queue and kind, by score; the
-- registry READY_SETS names them); the first w of every claimable source are merged. The
-- claimed jobs run under one fresh lease token: each gets a `run` entry (`<token>|<now>|<worker>`), the token's set `lb:<token>` lists them
-- and the lease index holds the token until its expiry. Their records are not rewritten (they
-- stay `queued` in Redis; the `run` entry is what makes them running). When the claim took as
-- many jobs as it could and work is left, the wake marker is pushed again for the next idle
-- instance.
--
-- Not safe to retry: a retry would claim other jobs (what a lost answer gave the instance is
-- taken back by its next claim, see recover.lua). Returns {token, then id, stored record, run
-- entry per claimed job}, in claim order; {} when nothing was claimed.

-- The most ids of fresh lists one claim passes over.
local SKIPS_PER_CLAIM = 1000
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local w = tonumber(ARGV[3])
if w < 1 then return {} end
local claimable = {}
for k = 4 + w, #ARGV do claimable[ARGV[k]] = true end

if promote_due(now, 250) then wake() end
commit()
if changes.ready > 0 then wake() end

-- The claimable sources that hold jobs, each with its first w: the ready sets (one per queue
-- and kind) and the fresh lists (one per queue, kind and priority). With one source, those are
-- the claim, in its order; with several, they are merged by (priority, id): a list's priority
-- is in its name, a ready set's is read from its scores, which are read only then (Redis
-- formats each score as text, which costs more than reading the member). Each source gives a
-- prefix of itself: ready sets are ordered, lists are in arrival order.
local sources = {}
for _, set in ipairs(redis.call('SMEMBERS', READY_SETS)) do
  local colon = string.find(set, ':', 1, true)
  local queue, kind = string.sub(set, 1, colon - 1), string.sub(set, colon + 1)
  if claimable[kind] then
    local key = ready_key(queue, kind)
    local top = redis.call('ZRANGE', key, 0, w - 1)
    if #top > 0 then
      sources[#sources + 1] = { key = key, queue = queue, top = top }
    else
      -- Emptied: forgotten until a job enters it again (every way in names it anew), so that
      -- the registries every claim reads do not grow with every queue and kind ever used.
      redis.call('SREM', READY_SETS, set)
    end
  end
end
local skip_budget = SKIPS_PER_CLAIM
for _, list in ipairs(redis.call('SMEMBERS', READY_LISTS)) do
  local queue, kind, priority = string.match(list, '^([^:]*):(.*):(-?%d+)$')
  if claimable[kind] then
    local key, skips = fresh_key(queue, kind, priority), skips_key(queue, kind, priority)
    -- Room for the ids to pass over too (a bounded number per claim: a claim left short by
    -- them wakes the next one, see below).
    local cancelled = redis.call('SCARD', skips)
    local extra = math.min(cancelled, skip_budget)
    skip_budget = skip_budget - extra
    local window = w + extra
    local top = redis.call('LRANGE', key, 0, window - 1)
    if #top > 0 then
      -- Which of them were cancelled while they waited: passed over (and forgotten) when
      -- reached.
      local skip = cancelled > 0 and redis.call('SMISMEMBER', skips, unpack(top)) or nil
      sources[#sources + 1] = { key = key, queue = queue, top = top, list = true,
        band = 1000 - tonumber(priority), skips = skips, skip = skip, more = #top == window }
    else
      -- Emptied, as above; none of its ids waits any more, so its skips are moot.
      redis.call('SREM', READY_LISTS, list)
      if cancelled > 0 then redis.call('DEL', skips) end
    end
  end
end
if #sources == 0 then return {} end
if #sources > 1 then
  for _, source in ipairs(sources) do
    if not source.list then
      local top = redis.call('ZRANGE', source.key, 0, w - 1, 'WITHSCORES')
      local bands = {}
      for k = 2, #top, 2 do bands[k / 2] = math.floor(tonumber(top[k]) / PRIO_SPAN) end
      source.bands = bands
    end
  end
end
-- Merge: each step takes the head that comes first; `used` counts each source's prefix
-- (claimed or passed over), `taken` its claimed jobs.
local ids, from = {}, {}
for _, source in ipairs(sources) do source.used, source.taken = 0, 0 end
while #ids < w do
  local best, best_band, best_id = nil, nil, nil
  for _, source in ipairs(sources) do
    local at = source.used + 1
    local id = source.top[at]
    if id then
      local band = source.band or (source.bands and source.bands[at]) or 0
      if not best or band < best_band or (band == best_band and id < best_id) then
        best, best_band, best_id = source, band, id
      end
    end
  end
  if not best then break end
  best.used = best.used + 1
  if best.skip and best.skip[best.used] == 1 then
    redis.call('SREM', best.skips, best_id)
  else
    best.taken = best.taken + 1
    ids[#ids + 1] = best_id
    from[#ids] = best
  end
end
-- Each source's share is a prefix of it: remove it by rank.
for _, source in ipairs(sources) do
  if source.used > 0 then
    if source.list then
      redis.call('LTRIM', source.key, source.used, -1)
    else
      redis.call('ZREMRANGEBYRANK', source.key, 0, source.used - 1)
    end
  end
end
-- Work may be left when the claim filled its slots, or when passed-over ids used up a list's
-- window: the wake marker goes out again for the next idle instance.
local function wake_if_left(claimed)
  local full = claimed == w
  for _, source in ipairs(sources) do
    if source.more and source.used == #source.top then full = true end
  end
  if not full then return end
  for _, source in ipairs(sources) do
    if redis.call(source.list and 'LLEN' or 'ZCARD', source.key) > 0 then
      wake()
      return
    end
  end
end

if #ids == 0 then
  flush_indexes()
  wake_if_left(0)
  return {}
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
  wake_if_left(#ids)
  return {}
end
if redis.call('HEXISTS', RUN, RUN_SENTINEL) == 0 then
  redis.call('HSET', RUN, RUN_SENTINEL, string.rep('-', 4096))
end
apply('HSET', RUN, run)
apply('SADD', lease_key(token), members)
redis.call('ZADD', LEASES, now + lease, token)
flush_indexes()
wake_if_left(#ids)
return out
