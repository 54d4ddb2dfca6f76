-- leave: removes an instance from the registry at the end of a clean shutdown, if the run
-- still holds its name (a run taken for dead and replaced leaves its successor's entry alone).
--
-- ARGV[1]   the instance's name
-- ARGV[2]   its run id
--
-- Safe to retry. Returns 1 when the entry was removed, else 0.

local name, run = ARGV[1], ARGV[2]
local held = redis.call('HGET', INSTANCES, name)
if held and string.sub(held, 1, #run + 1) == run .. '|' then
  redis.call('HDEL', INSTANCES, name)
  redis.call('ZREM', ALIVE, name)
  return 1
end
return 0
