-- throttled: counts the queued jobs limits hold back now, per queue: the jobs of every lane
-- whose limits say no (see `allowed` in lib.lua). Reads lanes, not jobs.
--
-- ARGV[1]   now (ms)
--
-- Writes nothing but the slid windows of the limits it reads. Safe to retry.
-- Returns {queue, count, ...} for the queues with held jobs.

local now = tonumber(ARGV[1])
local held = {}
for _, member in ipairs(redis.call('SMEMBERS', LANES)) do
  local queue, _, limits, cost = string.match(member, '^([^|]*)|([^|]*)|([^|]*)|(%d+)|')
  if queue and limits ~= '' then
    local names = {}
    for name in string.gmatch(limits, '[^,]+') do names[#names + 1] = name end
    if not allowed(names, tonumber(cost), now) then
      held[queue] = (held[queue] or 0) + redis.call('ZCARD', lane_key(member))
    end
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
