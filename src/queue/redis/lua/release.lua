-- release: hands running jobs back (graceful shutdown) without counting their attempt (nor
-- entering it in the history); a job whose cancel was requested ends `cancelled` instead, since
-- running it again would be wasted, its attempt counted and in its history.
--
-- ARGV[1]   now (ms)
-- then, per attempt: id, lease token
--
-- Safe to retry (fenced by the tokens).
-- Returns {stale count, {ready count, earliest due (0: none), finished ids...}}.

local now = tonumber(ARGV[1])
local ids = {}
for k = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[k] end
local run, cancel, progress = running_of(ids)
load_many(ids)

local stale, ended = 0, {}
for n, id in ipairs(ids) do
  local token = ARGV[1 + 2 * n]
  local j = load(id)
  if not j or not holds(run[n], token) then
    stale = stale + 1
  else
    if cancel[n] then
      j.e, j.fl = 'cancelled', FLAG_CANCEL
      stop_running(j, run[n], CANCELLED, now, true, progress[n])
      add_failure(j, j.a, 'cancelled')
    else
      stop_running(j, run[n], QUEUED, now, false, progress[n])
    end
    push_at(ended, token, id)
  end
end
forget_running(ended)
return { stale, finish(now) }
