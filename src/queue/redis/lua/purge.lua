-- purge: removes terminal jobs past retention (rule 7), oldest finished first, with their
-- idempotency keys and listing entries: those finished before the cutoff, and in each queue
-- those beyond the most terminal jobs it may keep.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   cutoff (ms): jobs finished at or before it are removed
-- ARGV[3]   most terminal jobs kept per queue (0: no bound by count)
-- ARGV[4]   the most jobs removed by this call
--
-- Safe to retry. Returns {more (1/0), removed count}.

local now, cutoff = tonumber(ARGV[1]), tonumber(ARGV[2])
local keep, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local more, removed = false, 0
redis.call('ZREMRANGEBYSCORE', WATCH, '-inf', now)

for _, queue in ipairs(redis.call('SMEMBERS', QUEUES)) do
  local dk = done_key(queue)
  local n = redis.call('ZCOUNT', dk, '-inf', cutoff)
  if keep > 0 then n = math.max(n, redis.call('ZCARD', dk) - keep) end
  if n > budget then
    n = budget
    more = true
  end
  if n > 0 then
    local old = redis.call('ZRANGE', dk, 0, n - 1)
    load_many(old)
    local unlink = {}
    for _, id in ipairs(old) do
      local j = load(id)
      if j then
        local key = idem_of(j)
        if key ~= '' and redis.call('GET', idem_key(key)) == id then
          unlink[#unlink + 1] = idem_key(key)
        end
        unlink[#unlink + 1] = job_key(id)
        count(queue, j.st, -1)
        zrem(all_key(queue), id)
        if j.st ~= SUCCEEDED then zrem(listing_key(queue, j.st), id) end
      end
      zrem(dk, id)
    end
    for k = 1, #unlink, CHUNK do
      redis.call('UNLINK', unpack(unlink, k, math.min(k + CHUNK - 1, #unlink)))
    end
    removed = removed + #old
    budget = budget - #old
  end
  if budget <= 0 then break end
end
flush_indexes()
return { more and 1 or 0, removed }
