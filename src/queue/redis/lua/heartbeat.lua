-- heartbeat: records that an instance is alive, under its name in the registry, unless another
-- run of that name was seen lately (two live instances never share a name: the second one
-- finds the name held). An entry gone for long is pruned here, a few per call.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the instance's name
-- ARGV[3]   its run id
-- ARGV[4]   its entry (JSON)
-- ARGV[5]   how long an instance may go unseen and still hold its name (ms)
-- ARGV[6]   how long the entry of an instance gone is kept (ms)
-- ARGV[7]   a run id this call may replace although it was seen lately ('': none)
--
-- Safe to retry: a second run finds the name held by this run, and writes the same.
-- Returns {'held', '<run id>|<entry>'} when another live run holds the name (nothing written),
-- else {'ok', the entry it replaced as '<run id>|<entry>', or ''}.

local now, name, run = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local previous = redis.call('HGET', INSTANCES, name)
if previous then
  local holder = string.match(previous, '^([^|]*)|')
  if holder ~= run and holder ~= ARGV[7] then
    local seen = redis.call('ZSCORE', ALIVE, name)
    if seen and tonumber(seen) >= now - tonumber(ARGV[5]) then return { 'held', previous } end
  end
end
redis.call('HSET', INSTANCES, name, run .. '|' .. ARGV[4])
redis.call('ZADD', ALIVE, ARGV[1], name)
local cutoff = string.format('(%d', now - tonumber(ARGV[6]))
local stale = redis.call('ZRANGEBYSCORE', ALIVE, '-inf', cutoff, 'LIMIT', 0, 100)
if #stale > 0 then
  redis.call('HDEL', INSTANCES, unpack(stale))
  redis.call('ZREM', ALIVE, unpack(stale))
end
return { 'ok', previous or '' }
