-- run_now: makes a `scheduled` job (delayed, or waiting for its next retry) due now: its run_at
-- becomes now and it is `queued`, in its ready set or lane like any promoted job (its limits
-- and paused queue still apply).
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the job id
--
-- Not retried (a second call would answer invalid_state for the job the first one queued).
-- Returns {record, {ready count, earliest due, finished ids...}}. Errors: 'not_found',
-- 'invalid_state <status>'.

local now, id = tonumber(ARGV[1]), ARGV[2]
local j = load(id)
if not j then return redis.error_reply('not_found') end
if j.st ~= SCHEDULED then
  -- A running job's record says queued; its run entry says it runs.
  local st = j.st
  if st == QUEUED and redis.call('HEXISTS', RUN, id) == 1 then st = RUNNING end
  return redis.error_reply('invalid_state ' .. STATUS[st])
end

j.ra = now
move(j, QUEUED, now)
local out = finish(now)
return { j.v, out }
