-- complete: records finished attempts.
--
-- ARGV[1]   now (ms)
-- then, per attempt: id, token, outcome, and
--   outcome 's' (succeeded): the result (JSON text)
--   outcome 'f' (failed):    the error, and when to retry (ms, 0: do not retry)
--   outcome 'c' (cancelled): the reason
--
-- An attempt whose job no longer runs under its token (its lease expired and the job moved on)
-- is stale: counted and ignored. A failure or cancellation of a job whose cancel was requested
-- ends it `cancelled`; a failure with attempts left and a retry time schedules it again; any
-- other failure ends it `failed`. Dependents are settled; waiters on the finished jobs are told.
--
-- Safe to retry (fenced by the tokens: a second call finds every attempt stale).
-- Returns {stale count, {ready count, earliest due (0: none), finished ids...}}.

local now = tonumber(ARGV[1])
local done, ids = {}, {}
local i = 2
while i <= #ARGV do
  local c = { id = ARGV[i], tok = tonumber(ARGV[i + 1]), code = ARGV[i + 2], text = ARGV[i + 3] }
  if c.code == 'f' then
    c.retry = tonumber(ARGV[i + 4])
    i = i + 5
  else
    i = i + 4
  end
  done[#done + 1] = c
  ids[#ids + 1] = c.id
end
load_many(ids)

local stale = 0
for _, c in ipairs(done) do
  local j = load(c.id)
  if not j or j.st ~= RUNNING or j.tok ~= c.tok then
    stale = stale + 1
  elseif c.code == 's' then
    j.r = c.text
    move(j, SUCCEEDED, now)
  elseif j.fl % 2 == FLAG_CANCEL then
    j.e = 'cancelled'
    move(j, CANCELLED, now)
  elseif c.code == 'f' and c.retry > 0 and j.a < j.m then
    j.e, j.ra = c.text, c.retry
    move(j, c.retry > now and SCHEDULED or QUEUED, now)
  elseif c.code == 'f' then
    j.e = c.text
    move(j, FAILED, now)
  else
    j.e = c.text
    move(j, CANCELLED, now)
  end
end

return { stale, finish(now) }
