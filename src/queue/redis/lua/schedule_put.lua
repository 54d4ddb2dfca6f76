-- schedule_put: creates or replaces a schedule, keeping the creation time and the record of
-- its last run when it existed.
--
-- ARGV[1]   name
-- ARGV[2]   the schedule's definition (JSON)
-- ARGV[3]   created at (ms), used only when the schedule is new
-- ARGV[4]   next run (ms, '' none)
--
-- Safe to retry. Returns 1 when created, 0 when replaced.

local key = B .. 'sched:' .. ARGV[1]
local existed = redis.call('EXISTS', key)
redis.call('HSET', key, 'spec', ARGV[2], 'next', ARGV[4])
if existed == 0 then redis.call('HSET', key, 'created', ARGV[3]) end
redis.call('SADD', B .. 'schedules', ARGV[1])
return 1 - existed
