-- retry: puts a failed or cancelled job back to run with a fresh set of attempts (see
-- QueueBackend::retry): attempts back to 0; error, result, finish time, cancel request, worker
-- and progress cleared; run_at now; the history kept. It becomes `queued`, or `waiting` when
-- some dependency has not succeeded: it is then entered among that dependency's dependents
-- (`deps:<dep>`, `parents`), as a submit would. The retention index still lists it under the
-- batch it first ended in: purge.lua passes over jobs that are not terminal, or that ended
-- after that batch.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the job id
-- ARGV[3..] its dependencies (the record keeps them in the data only Rust reads)
--
-- Not retried (a second call would answer invalid_state for the job the first one retried).
-- Returns {record, {ready count, earliest due, finished ids...}}. Errors: 'not_found',
-- 'invalid_state <status>', 'dependency_gone <id>'.

local now, id = tonumber(ARGV[1]), ARGV[2]
local j = load(id)
if not j then return redis.error_reply('not_found') end
if j.st ~= FAILED and j.st ~= CANCELLED then
  -- A running job's record says queued; its run entry says it runs.
  local st = j.st
  if st == QUEUED and redis.call('HEXISTS', RUN, id) == 1 then st = RUNNING end
  return redis.error_reply('invalid_state ' .. STATUS[st])
end

local unmet = {}
for k = 3, #ARGV do
  local dep = ARGV[k]
  local v = redis.call('GET', job_key(dep))
  if not v then return redis.error_reply('dependency_gone ' .. dep) end
  -- The status is the header's second byte.
  if string.byte(v, 2) ~= SUCCEEDED then unmet[#unmet + 1] = dep end
end
for _, dep in ipairs(unmet) do
  redis.call('SADD', deps_key(dep), id)
  redis.call('SADD', PARENTS, dep)
end

-- Terminal jobs stay in their listing index until purged (see `leave` in lib.lua).
zrem(listing_key(queue_of(j), j.st), id)
j.a, j.fl, j.f, j.ra, j.pend = 0, 0, 0, now, #unmet
j.e, j.r, j.w, j.p = '', '', '', ''
if #unmet == 0 then move(j, QUEUED, now) else move(j, WAITING, now) end
local out = finish(now)
return { j.v, out }
