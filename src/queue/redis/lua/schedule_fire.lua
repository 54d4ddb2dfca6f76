-- schedule_fire: records what a scheduler pass did with a due schedule: its next run and, when
-- it fired, the tick and the job it enqueued. A schedule deleted meanwhile is left deleted.
--
-- ARGV[1]   name
-- ARGV[2]   next run (ms, '' none)
-- ARGV[3]   the tick fired (ms, '' when the pass skipped missed ticks)
-- ARGV[4]   the job it enqueued ('' when none)
--
-- Safe to retry. Returns 1, or the error 'not_found'.

local key = B .. 'sched:' .. ARGV[1]
if redis.call('EXISTS', key) == 0 then return redis.error_reply('not_found') end
redis.call('HSET', key, 'next', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', key, 'last', ARGV[3], 'last_job', ARGV[4]) end
return 1
