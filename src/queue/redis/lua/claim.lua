-- claim: promotes due jobs, then hands up to one queued job per worker slot to this instance, in
-- claim order (src/queue/flow.rs): highest priority first; within a priority, the groups of
-- each queue in turn (weighted), then the oldest; across queues, the oldest. Only jobs of the
-- kinds it can run, never jobs of paused queues, never jobs a limit holds back.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   lease (ms)
-- ARGV[3]   number of worker slots w; ARGV[4 .. 3 + w] their names
-- ARGV[4 + w ..] the kinds this instance has handlers for
--
-- Ready jobs wait in four kinds of sources. Jobs without group or limits: in fresh lists (jobs
-- queued by a bulk submit, per queue, kind and priority, in arrival order; the registry
-- READY_LISTS names them) and in ready sets (every other way to become queued: retries, due
-- jobs, released dependents, per queue and kind, by score; the registry READY_SETS names them).
-- Jobs with a group or limits, per lane (queue, group, limits, cost and kind) the same way: in
-- fresh lanes, per priority, in arrival order (FRESH_LANES), and in lanes by score (LANES). The
-- first w of every claimable source are merged.
--
-- A lane's limits are checked for the lane, not per job: every job in it names the same limits
-- at the same cost. A lane they hold back is passed over whole (its jobs are not even read), so
-- throttled jobs cost a claim nothing however many there are. A limit allows a job when it is
-- not held (`held` in the future), has a place left (running < concurrency) and has the job's
-- cost left in its window (rates are sliding windows: what a claim took comes back `per_ms`
-- later; one window entry per claim and limit). Limits that do not exist (deleted) allow
-- anything.
--
-- The claimed jobs run under one fresh lease token: each gets a `run` entry
-- (`<token>|<now>|<worker>`), the token's set `lb:<token>` lists them and the lease index holds
-- the token until its expiry. Their records are not rewritten (they stay `queued` in Redis; the
-- `run` entry is what makes them running). When the claim took as many jobs as it could and
-- work it may take is left, the wake marker is pushed again for the next idle instance.
--
-- Not safe to retry: a retry would claim other jobs (what a lost answer gave the instance is
-- taken back by its next claim, see recover.lua). Returns {retry_at, token, then id, stored
-- record, run entry per claimed job}, in claim order; {retry_at} when nothing was claimed.
-- retry_at (ms, 0 for none) is when a rate or hold that held ready jobs back frees next.

-- The most ids of fresh lists one claim passes over.
local SKIPS_PER_CLAIM = 1000
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local w = tonumber(ARGV[3])
if w < 1 then return { 0 } end
local claimable = {}
for k = 4 + w, #ARGV do claimable[ARGV[k]] = true end

if promote_due(now, 250) then wake() end
commit()
if changes.ready > 0 then wake() end

local paused = {}
if redis.call('EXISTS', PAUSED) == 1 then
  for _, queue in ipairs(redis.call('SMEMBERS', PAUSED)) do paused[queue] = true end
end

-- Sources --------------------------------------------------------------------------------------

-- The claimable sources that hold jobs, each with its first w: ready sets (one per queue and
-- kind), fresh lists (one per queue, kind and priority), fresh lanes and lanes. With one source, those are
-- the claim, in its order; with several, they are merged (see the header): a list's priority
-- is in its name, a ready set's is read from its scores, which are read only then (Redis
-- formats each score as text, which costs more than reading the member). Each source gives a
-- prefix of itself: sets and lanes are ordered, lists are in arrival order.
local sources = {}
for _, set in ipairs(redis.call('SMEMBERS', READY_SETS)) do
  local colon = string.find(set, ':', 1, true)
  local queue, kind = string.sub(set, 1, colon - 1), string.sub(set, colon + 1)
  if claimable[kind] and not paused[queue] then
    local key = ready_key(queue, kind)
    local top = redis.call('ZRANGE', key, 0, w - 1)
    if #top > 0 then
      sources[#sources + 1] = { key = key, queue = queue, group = '', top = top }
    else
      -- Emptied: forgotten until a job enters it again (every way in names it anew), so that
      -- the registries every claim reads do not grow with every queue and kind ever used.
      redis.call('SREM', READY_SETS, set)
    end
  end
end
local skip_budget = SKIPS_PER_CLAIM

-- Reads the head of a list source (a fresh list or a fresh lane: `key`, its cancelled ids in
-- `skips`, its priority) into `source` and adds it to the sources; when the list is empty,
-- forgets it in `registry` (as `name`) with its skips. Room is made for the ids to pass over
-- too (a bounded number per claim: a claim left short by them wakes the next one, see below).
local function add_list(source, key, skips, priority, registry, name)
  local cancelled = redis.call('SCARD', skips)
  local extra = math.min(cancelled, skip_budget)
  skip_budget = skip_budget - extra
  local window = w + extra
  local top = redis.call('LRANGE', key, 0, window - 1)
  if #top > 0 then
    -- Which of them were cancelled while they waited: passed over (and forgotten) when
    -- reached.
    source.skip = cancelled > 0 and redis.call('SMISMEMBER', skips, unpack(top)) or nil
    source.key, source.top, source.list, source.skips = key, top, true, skips
    source.band, source.more = 1000 - tonumber(priority), #top == window
    sources[#sources + 1] = source
  else
    -- Emptied, as above; none of its ids waits any more, so its skips are moot.
    redis.call('SREM', registry, name)
    if cancelled > 0 then redis.call('DEL', skips) end
  end
end

for _, list in ipairs(redis.call('SMEMBERS', READY_LISTS)) do
  local queue, kind, priority = string.match(list, '^([^:]*):(.*):(-?%d+)$')
  if claimable[kind] and not paused[queue] then
    local key, skips = fresh_key(queue, kind, priority), skips_key(queue, kind, priority)
    add_list({ queue = queue, group = '' }, key, skips, priority, READY_LISTS, list)
  end
end

-- A lane's source (its queue, group, limits and cost) when a claim may take from it now: of a
-- kind the instance runs, in a queue not paused, let through by its limits (a lane they hold
-- back is passed over unread; an empty one is dropped by the next claim they let through).
local function lane_source(lane)
  local queue, group, limits, cost, kind = string.match(lane, '^([^|]*)|([^|]*)|([^|]*)|(%d+)|(.*)$')
  if not queue or not claimable[kind] or paused[queue] then return nil end
  local source = { queue = queue, group = group, cost = tonumber(cost) }
  if limits ~= '' then
    source.limits = {}
    for name in string.gmatch(limits, '[^,]+') do source.limits[#source.limits + 1] = name end
    if not allowed(source.limits, source.cost, now) then return nil end
  end
  return source
end

for _, entry in ipairs(redis.call('SMEMBERS', FRESH_LANES)) do
  local priority, lane = string.match(entry, '^(-?%d+)|(.*)$')
  local source = lane and lane_source(lane)
  if source then
    local key, skips = fresh_lane_key(priority, lane), fresh_lane_skips(priority, lane)
    add_list(source, key, skips, priority, FRESH_LANES, entry)
  end
end
for _, member in ipairs(redis.call('SMEMBERS', LANES)) do
  local source = lane_source(member)
  if source then
    source.key = lane_key(member)
    local top = redis.call('ZRANGE', source.key, 0, w - 1, 'WITHSCORES')
    if #top > 0 then
      local ids, bands = {}, {}
      for k = 1, #top, 2 do
        ids[#ids + 1] = top[k]
        bands[#bands + 1] = math.floor(tonumber(top[k + 1]) / PRIO_SPAN)
      end
      source.top, source.bands = ids, bands
      sources[#sources + 1] = source
    else
      redis.call('SREM', LANES, member)
    end
  end
end
if #sources == 0 then return { limits_free_at or 0 } end
if #sources > 1 then
  for _, source in ipairs(sources) do
    if not source.list and not source.bands then
      local top = redis.call('ZRANGE', source.key, 0, w - 1, 'WITHSCORES')
      local bands = {}
      for k = 2, #top, 2 do bands[k / 2] = math.floor(tonumber(top[k]) / PRIO_SPAN) end
      source.bands = bands
    end
  end
end

-- Turns of groups -----------------------------------------------------------------------------

-- Groups take turns only in queues where several have jobs here: each group's pass, and the
-- queue's current pass (field `~`), read once per claim and written back at its end.
local turns, weights = {}, {}
do
  local first_group, mixed = {}, {}
  for _, source in ipairs(sources) do
    local seen = first_group[source.queue]
    if seen == nil then
      first_group[source.queue] = source.group
    elseif seen ~= source.group then
      mixed[source.queue] = true
    end
  end
  for queue in pairs(mixed) do
    local pass = {}
    local fields = redis.call('HGETALL', turns_key(queue))
    for k = 1, #fields, 2 do pass[fields[k]] = tonumber(fields[k + 1]) end
    turns[queue] = pass
  end
  for _, source in ipairs(sources) do source.turns = turns[source.queue] ~= nil end
end

local function pass_of(queue, group)
  local pass = turns[queue]
  return math.max(pass[group] or 0, pass['~'] or 0)
end

local function weight_of(group)
  if group == '' then return 1 end
  local weight = weights[group]
  if not weight then
    weight = tonumber(redis.call('HGET', WEIGHTS, group)) or 1
    weights[group] = weight
  end
  return weight
end

local function served(queue, group)
  local pass = turns[queue]
  local at = pass_of(queue, group)
  pass['~'] = at
  pass[group] = at + 1 / weight_of(group)
end

-- Merge ---------------------------------------------------------------------------------------

-- Each step takes, at the best priority among the heads their limits let through, the best head
-- of each queue (the group whose turn it is, then the oldest), then the oldest of those; with
-- no turns to take, simply the oldest at the best priority. `used` counts each source's prefix
-- (claimed or passed over), `taken` its claimed jobs. A step allocates nothing: it runs once
-- per claimed job.
local ids, from = {}, {}
for _, source in ipairs(sources) do source.used, source.taken = 0, 0 end
local with_turns = next(turns) ~= nil
-- With turns: each queue's best head in this step (source, pass, id), and the queues that have
-- one (the first `nq` of `named`).
local best_source, best_pass, best_id, named, nq = {}, {}, {}, {}, 0

-- The head the next step takes (source and id), or nil when no source may give one.
local function next_head()
  local top_band, pick, pick_id = nil, nil, nil
  for k = 1, nq do best_source[named[k]] = nil end
  nq = 0
  for _, source in ipairs(sources) do
    local at = source.used + 1
    local id = not source.blocked and source.top[at]
    if id then
      local band = source.band or (source.bands and source.bands[at]) or 0
      if not top_band or band <= top_band then
        if source.limits and not allowed(source.limits, source.cost, now) then
          source.blocked = true
        else
          if top_band and band < top_band then
            pick = nil
            for k = 1, nq do best_source[named[k]] = nil end
            nq = 0
          end
          top_band = band
          if not with_turns then
            if not pick or id < pick_id then pick, pick_id = source, id end
          else
            local queue = source.queue
            local pass = source.turns and pass_of(queue, source.group) or 0
            local current = best_source[queue]
            if not current then
              nq = nq + 1
              named[nq] = queue
            end
            if not current or pass < best_pass[queue] or (pass == best_pass[queue] and id < best_id[queue]) then
              best_source[queue], best_pass[queue], best_id[queue] = source, pass, id
            end
          end
        end
      end
    end
  end
  if with_turns then
    for k = 1, nq do
      local queue = named[k]
      if not pick or best_id[queue] < pick_id then pick, pick_id = best_source[queue], best_id[queue] end
    end
  end
  return pick, pick_id
end

local function take_head(source, id)
  source.used = source.used + 1
  if source.skip and source.skip[source.used] == 1 then
    redis.call('SREM', source.skips, id)
  else
    source.taken = source.taken + 1
    ids[#ids + 1] = id
    from[#ids] = source
    if source.limits then take(source.limits, source.cost, 1, now) end
    if source.turns then served(source.queue, source.group) end
  end
end

if #sources == 1 then
  -- One source (the common case): its first jobs, in its own order, as many as there are slots
  -- and as its limits allow, with no merge (a merge step per job was a tenth of a claim's time).
  local source = sources[1]
  local top, skip, used, n = source.top, source.skip, 0, 0
  local room = w
  if source.limits then
    room = allowance(source.limits, source.cost, w, now)
    source.blocked = room == 0
  end
  for at = 1, #top do
    if n == room then break end
    used = at
    if skip and skip[at] == 1 then
      redis.call('SREM', source.skips, top[at])
    else
      n = n + 1
      ids[n] = top[at]
      from[n] = source
    end
  end
  source.used, source.taken = used, n
  if source.limits and n > 0 then
    take(source.limits, source.cost, n, now)
    -- Jobs left behind its limits: note when they free (and wake no other instance for them).
    if used < #top and not allowed(source.limits, source.cost, now) then source.blocked = true end
  end
else
  while #ids < w do
    local source, id = next_head()
    if not source then break end
    take_head(source, id)
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
-- window: the wake marker goes out again for the next idle instance (unless only lanes its
-- limits hold back are left: another instance could take nothing from them either).
local function wake_if_left(claimed)
  local full = claimed == w
  for _, source in ipairs(sources) do
    if source.more and source.used == #source.top then full = true end
  end
  if not full then return end
  for _, source in ipairs(sources) do
    if not source.blocked and redis.call(source.list and 'LLEN' or 'ZCARD', source.key) > 0 then
      wake()
      return
    end
  end
end

-- What the claim leaves written whatever it took: the turns of groups, and what it took under
-- each limit.
local function write_back()
  for queue, pass in pairs(turns) do
    local current, set, gone = pass['~'] or 0, {}, {}
    for group, at in pairs(pass) do
      if group == '~' then
        set[#set + 1] = group
        set[#set + 1] = tostring(at)
      elseif at > current then
        set[#set + 1] = group
        set[#set + 1] = tostring(at)
      else
        -- Caught up with: it would re-enter at the current pass anyway.
        gone[#gone + 1] = group
      end
    end
    if #set > 0 then redis.call('HSET', turns_key(queue), unpack(set)) end
    if #gone > 0 then redis.call('HDEL', turns_key(queue), unpack(gone)) end
  end
  record_taken()
end

if #ids == 0 then
  flush_indexes()
  write_back()
  wake_if_left(0)
  return { limits_free_at or 0 }
end

local keys = {}
for k, id in ipairs(ids) do keys[k] = job_key(id) end
local values = redis.call('MGET', unpack(keys))
local token = redis.call('INCR', TOKENS)
local prefix = token .. '|' .. ARGV[1] .. '|'
local out, run, members = { limits_free_at or 0, token }, {}, {}
for k, id in ipairs(ids) do
  local v = values[k]
  -- A source holds only queued jobs; a record missing or not queued (never expected) is
  -- dropped from it unclaimed, and gives back what it took of its limits.
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
    if source.limits then take(source.limits, source.cost, -1, now) end
  end
end
for _, source in ipairs(sources) do
  if source.taken > 0 then
    count(source.queue, QUEUED, -source.taken)
    count(source.queue, RUNNING, source.taken)
  end
end
write_back()
if #members == 0 then
  flush_indexes()
  wake_if_left(#ids)
  return { limits_free_at or 0 }
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
