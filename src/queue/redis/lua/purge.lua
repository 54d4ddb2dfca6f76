-- purge: removes terminal jobs past retention (rule 7), oldest finished first, with their
-- idempotency keys and listing entries: those finished before the cutoff, and in each queue
-- those beyond the most terminal jobs it may keep. Terminal jobs are filed in batches (one per
-- call that ended them), each a list under the queue's retention index.
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

-- Removes the jobs `ids` of `queue` filed in a batch of jobs that ended at `ended` (those still
-- stored) and what points to them; answers how many it removed. A job retried since (see
-- retry.lua) is passed over: it has not ended again, or it ended later and a later batch holds
-- it. Jobs that a retry made wait for a removed job are cancelled by the next settling.
local function remove(queue, ids, ended)
  load_many(ids)
  local unlink, n = {}, 0
  for _, id in ipairs(ids) do
    local j = load(id)
    if j and j.st >= SUCCEEDED and j.f <= ended then
      local key = idem_of(j)
      if key ~= '' and redis.call('GET', idem_key(key)) == id then
        unlink[#unlink + 1] = idem_key(key)
      end
      unlink[#unlink + 1] = job_key(id)
      count(queue, j.st, -1)
      unlist_job(queue, id)
      if j.st ~= SUCCEEDED then zrem(listing_key(queue, j.st), id) end
      if redis.call('SREM', PARENTS, id) == 1 then redis.call('RPUSH', SETTLE, id .. ' ' .. j.st) end
      n = n + 1
    end
  end
  if #unlink > 0 then apply('UNLINK', nil, unlink) end
  return n
end

for _, queue in ipairs(redis.call('SMEMBERS', QUEUES)) do
  local dk = done_key(queue)
  local terminal = 0
  if keep > 0 then
    local c = redis.call('HMGET', COUNTS, queue .. ':succeeded', queue .. ':failed', queue .. ':cancelled')
    for _, v in ipairs(c) do terminal = terminal + (tonumber(v) or 0) end
  end
  while true do
    if budget <= 0 then
      more = true
      break
    end
    local oldest = redis.call('ZRANGE', dk, 0, 0, 'WITHSCORES')
    if #oldest == 0 then break end
    local batch, finished_at = oldest[1], tonumber(oldest[2])
    local over = keep > 0 and terminal > keep
    if finished_at > cutoff and not over then break end
    local n = budget
    if finished_at > cutoff then n = math.min(n, terminal - keep) end
    local ids = redis.call('LPOP', batch_key(batch), n)
    if not ids or #ids == 0 then
      redis.call('ZREM', dk, batch)
    else
      local gone = remove(queue, ids, finished_at)
      removed = removed + gone
      budget = budget - #ids
      terminal = terminal - gone
      if redis.call('EXISTS', batch_key(batch)) == 0 then redis.call('ZREM', dk, batch) end
    end
  end
  if more then break end
end
flush_indexes()
return { more and 1 or 0, removed }
