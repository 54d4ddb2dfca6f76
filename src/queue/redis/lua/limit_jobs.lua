-- limit_jobs: names the queued jobs limit ARGV[2] holds back now: the first jobs of every lane
-- and fresh lane that names it, when it says no to their cost (see `allowed` in limits.lua),
-- highest priority first, then oldest (the ready sets' order). Reads lanes, then at most
-- ARGV[3] jobs of each.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the limit's name
-- ARGV[3]   most jobs answered
--
-- Writes nothing but the slid window of the limit. Safe to retry.
-- Returns {0} when there is no such limit, else {1, id...}.

local now, name, most = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
if not budget(name, now) then return { 0 } end

-- Whether the lane `member` names the limit, and the limit holds its jobs back now.
local function held(member)
  local _, _, limits, cost = string.match(member, '^([^|]*)|([^|]*)|([^|]*)|(%d+)|')
  if not limits then return false end
  for limit in string.gmatch(limits, '[^,]+') do
    if limit == name then return not allowed({ name }, tonumber(cost), now) end
  end
  return false
end

local found = {}
for _, member in ipairs(redis.call('SMEMBERS', LANES)) do
  if held(member) then
    local ids = redis.call('ZRANGE', lane_key(member), 0, most - 1, 'WITHSCORES')
    for k = 1, #ids, 2 do found[#found + 1] = { tonumber(ids[k + 1]), ids[k] } end
  end
end
-- Fresh lanes: in arrival order, scored as a ready set would score them; ids cancelled there
-- are passed over.
for _, entry in ipairs(redis.call('SMEMBERS', FRESH_LANES)) do
  local priority, member = string.match(entry, '^(-?%d+)|(.*)$')
  if member and held(member) then
    local skips = fresh_lane_skips(priority, member)
    local skipped = redis.call('SCARD', skips)
    local ids = redis.call('LRANGE', fresh_lane_key(priority, member), 0, most + math.min(skipped, most) - 1)
    local band = (1000 - tonumber(priority)) * PRIO_SPAN
    for _, id in ipairs(ids) do
      if skipped == 0 or redis.call('SISMEMBER', skips, id) == 0 then
        found[#found + 1] = { band + tonumber(string.sub(id, 1, 8) .. string.sub(id, 10, 13), 16), id }
      end
    end
  end
end
table.sort(found, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local out = { 1 }
for k = 1, math.min(most, #found) do out[#out + 1] = found[k][2] end
return out
