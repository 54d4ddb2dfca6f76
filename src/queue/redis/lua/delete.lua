-- delete: removes a terminal job at once, as purge.lua does past retention: its record, its
-- idempotency key (when it still names this job), its place in the counts, in the index of
-- every job and in its listing index. The retention index keeps its id until its batch is
-- purged (purge passes over ids whose record is gone). Jobs that a retry made wait for it
-- (it is still among the `parents`) are cancelled: they join the `settle` list, worked here.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the job id
--
-- Not retried (a second call would answer not_found for the job the first one removed).
-- Returns {record as it was, {ready count, earliest due, finished ids...}}. Errors:
-- 'not_found', 'invalid_state <status>'.

local now, id = tonumber(ARGV[1]), ARGV[2]
local j = load(id)
if not j then return redis.error_reply('not_found') end
if j.st < SUCCEEDED then
  -- A running job's record says queued; its run entry says it runs.
  local st = j.st
  if st == QUEUED and redis.call('HEXISTS', RUN, id) == 1 then st = RUNNING end
  return redis.error_reply('invalid_state ' .. STATUS[st])
end

local queue = queue_of(j)
local key = idem_of(j)
if key ~= '' and redis.call('GET', idem_key(key)) == id then redis.call('DEL', idem_key(key)) end
redis.call('DEL', job_key(id))
count(queue, j.st, -1)
unlist_job(queue, id)
if j.st ~= SUCCEEDED then zrem(listing_key(queue, j.st), id) end
if redis.call('SREM', PARENTS, id) == 1 then
  redis.call('RPUSH', SETTLE, id .. ' ' .. j.st)
  settle_backlog = true
end
return { j.v, finish(now) }
