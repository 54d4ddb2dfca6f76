-- claim: promotes due jobs, then hands up to one queued job per worker slot to this instance,
-- highest priority first, oldest first within a priority, only of the kinds it can run.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   lease (ms)
-- ARGV[3]   number of worker slots w; ARGV[4 .. 3 + w] their names
-- ARGV[4 + w ..] the kinds this instance has handlers for
--
-- Each claimed job becomes `running` under a fresh token (the fencing token of its attempt),
-- with its attempts counted and its lease in the lease index. When the claim took as many jobs
-- as it could and work is left, the wake marker is pushed again for the next idle instance.
--
-- Not safe to retry: a retry would claim other jobs (those of a lost answer run again once
-- their lease expires). Returns {id, record, token} per claimed job, in claim order.

local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local w = tonumber(ARGV[3])
local kinds = {}
for k = 4 + w, #ARGV do kinds[#kinds + 1] = ARGV[k] end

promote_due(now, 1000)
commit()
if changes.ready > 0 then wake() end

-- The first w of each kind's ready set, merged by score (then id, as the sets order them).
local candidates = {}
for _, kind in ipairs(kinds) do
  local top = redis.call('ZRANGE', ready_key(kind), 0, w - 1, 'WITHSCORES')
  for k = 1, #top, 2 do
    candidates[#candidates + 1] = { tonumber(top[k + 1]), top[k], kind }
  end
end
if #candidates > w then
  table.sort(candidates, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end

local taken, per_kind, ids = math.min(w, #candidates), {}, {}
for k = 1, taken do
  local c = candidates[k]
  per_kind[c[3]] = (per_kind[c[3]] or 0) + 1
  ids[k] = c[2]
end
if taken == 0 then return {} end
-- Each kind's share is a prefix of its set: remove it by rank.
for kind, n in pairs(per_kind) do redis.call('ZREMRANGEBYRANK', ready_key(kind), 0, n - 1) end

load_many(ids)
local token = redis.call('INCRBY', TOKENS, taken) - taken
local claimed, lease_until = {}, now + lease
for k, id in ipairs(ids) do
  local j = load(id)
  if j and j.st == QUEUED then
    token = token + 1
    local queue = queue_of(j)
    count(queue, QUEUED, -1)
    count(queue, RUNNING, 1)
    j.st, j.a, j.tok, j.s, j.u, j.w = RUNNING, j.a + 1, token, now, now, ARGV[3 + k]
    zadd(LEASES, lease_until, id)
    save(j)
    claimed[#claimed + 1] = j
  end
end
commit()

if taken == w then
  for _, kind in ipairs(kinds) do
    if redis.call('ZCARD', ready_key(kind)) > 0 then wake() break end
  end
end

local out = {}
for _, j in ipairs(claimed) do out[#out + 1] = { j.id, j.v, j.tok } end
return out
