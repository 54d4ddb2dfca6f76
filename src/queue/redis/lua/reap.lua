-- reap: ends the attempts whose lease expired (their worker stopped renewing: it died or was
-- cut off). The job goes back to `queued` with the attempt counted; with no attempts left it
-- ends `failed` ('lease expired'); a job whose cancel was requested ends `cancelled`. Any
-- instance may run it, several at once: each expired lease is handled by exactly one call.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the most leases handled by this call
--
-- Safe to retry. Returns {more (1/0), {ready count, earliest due (0: none), finished ids...}}.

local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, limit)
load_many(expired)
for _, id in ipairs(expired) do
  local j = load(id)
  if j and j.st == RUNNING then
    if j.fl % 2 == FLAG_CANCEL then
      j.e = 'cancelled (lease expired)'
      move(j, CANCELLED, now)
    elseif j.a < j.m then
      j.e = 'lease expired'
      move(j, QUEUED, now)
    else
      j.e = 'lease expired'
      move(j, FAILED, now)
    end
  else
    zrem(LEASES, id)
  end
end
return { #expired == limit and 1 or 0, finish(now) }
