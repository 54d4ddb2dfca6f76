-- cancel: cancels one job (rule 4). A waiting, scheduled or queued job ends `cancelled` at
-- once, and its dependents with it; a running job gets its cancel request recorded (`cx`), and
-- every instance hears of it on the events channel ('c <id>'), so the one running it fires its
-- token at once.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the job id
--
-- Not retried (a second call would answer already_finished for a job the first one cancelled).
-- Returns {'cancelled' or 'requested', record, running attempt ('' none), {ready count,
-- earliest due, finished ids...}}. Errors: 'not_found', 'already_finished <status>'.

local now, id = tonumber(ARGV[1]), ARGV[2]
local j = load(id)
if not j then return redis.error_reply('not_found') end
if j.st >= SUCCEEDED then return redis.error_reply('already_finished ' .. STATUS[j.st]) end

local run = redis.call('HGET', RUN, id)
if run then
  redis.call('SADD', CANCELS, id)
  redis.call('PUBLISH', EVENTS, 'c ' .. id)
  return { 'requested', j.v, run, { 0, 0 } }
end

j.e = 'cancelled'
move(j, CANCELLED, now)
local out = finish(now)
return { 'cancelled', j.v, '', out }
