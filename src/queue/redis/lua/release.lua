-- release: hands running jobs back (graceful shutdown) without counting their attempt; a job
-- whose cancel was requested ends `cancelled` instead, since running it again would be wasted.
--
-- ARGV[1]   now (ms)
-- then, per attempt: id, token
--
-- Safe to retry (fenced by the tokens).
-- Returns {stale count, {ready count, earliest due (0: none), finished ids...}}.

local now = tonumber(ARGV[1])
local ids = {}
for k = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[k] end
load_many(ids)

local stale = 0
for k = 2, #ARGV, 2 do
  local j = load(ARGV[k])
  if not j or j.st ~= RUNNING or j.tok ~= tonumber(ARGV[k + 1]) then
    stale = stale + 1
  elseif j.fl % 2 == FLAG_CANCEL then
    j.e = 'cancelled'
    move(j, CANCELLED, now)
  else
    j.a = math.max(0, j.a - 1)
    move(j, QUEUED, now)
  end
end

return { stale, finish(now) }
