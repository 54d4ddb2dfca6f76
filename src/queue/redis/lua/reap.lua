-- reap: ends the attempts whose lease expired (their worker stopped renewing: it died or was
-- cut off). The job goes back to `queued` with the attempt counted; with no attempts left it
-- ends `failed` ('lease expired'); a job whose cancel was requested ends `cancelled`. Either
-- way the attempt enters the job's history, and the job's error is set only when it ends. Any
-- instance may run it, several at once: each expired lease is handled by exactly one call.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the most attempts handled by this call
--
-- Every attempt taken is counted (`lease_expired` in the takeovers hash) and returned with its
-- job's kind and its worker, for the caller to log.
--
-- Safe to retry (a second run finds the attempts gone). Returns {more (1/0), {ready count,
-- earliest due (0: none), finished ids...}, {id, kind, worker, ...}}.

local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, limit)
local handled, more = 0, false
for _, token in ipairs(tokens) do
  if handled >= limit then
    more = true
    break
  end
  local key = lease_key(token)
  local ids = redis.call('SRANDMEMBER', key, limit - handled)
  if #ids > 0 then
    handled = handled + #ids
    local run, cancel, progress = running_of(ids)
    load_many(ids)
    local ended = {}
    for n, id in ipairs(ids) do
      local j = load(id)
      if j and holds(run[n], token) then
        lose_attempt(j, run[n], cancel[n], progress[n], now, 'lease expired')
        ended[#ended + 1] = id
      end
    end
    forget_running({ [token] = ended })
    apply('SREM', key, ids)
  end
  if redis.call('EXISTS', key) == 0 then redis.call('ZREM', LEASES, token) end
end
if #tokens == limit then more = true end
local lost = count_taken('lease_expired')
return { more and 1 or 0, finish(now), lost }
