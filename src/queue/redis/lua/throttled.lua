-- throttled: counts the queued jobs limits hold back now, per queue: the jobs of every lane and
-- fresh lane whose limits say no (see `allowed` in limits.lua). Reads lanes, not jobs.
--
-- ARGV[1]   now (ms)
--
-- Writes nothing but the slid windows of the limits it reads. Safe to retry.
-- Returns {queue, count, ...} for the queues with held jobs.

local now = tonumber(ARGV[1])
local held = {}

-- The queue of lane `member` when its limits hold it back now.
local function held_queue(member)
  local queue, _, limits, cost = string.match(member, '^([^|]*)|([^|]*)|([^|]*)|(%d+)|')
  if not queue or limits == '' then return nil end
  local names = {}
  for name in string.gmatch(limits, '[^,]+') do names[#names + 1] = name end
  if allowed(names, tonumber(cost), now) then return nil end
  return queue
end

for _, member in ipairs(redis.call('SMEMBERS', LANES)) do
  local queue = held_queue(member)
  if queue then held[queue] = (held[queue] or 0) + redis.call('ZCARD', lane_key(member)) end
end
-- Fresh lanes: their length less the ids cancelled there.
for _, entry in ipairs(redis.call('SMEMBERS', FRESH_LANES)) do
  local priority, member = string.match(entry, '^(-?%d+)|(.*)$')
  local queue = member and held_queue(member)
  if queue then
    local n = redis.call('LLEN', fresh_lane_key(priority, member))
      - redis.call('SCARD', fresh_lane_skips(priority, member))
    held[queue] = (held[queue] or 0) + n
  end
end
local out = {}
for queue, n in pairs(held) do
  if n > 0 then
    out[#out + 1] = queue
    out[#out + 1] = n
  end
end
return out
