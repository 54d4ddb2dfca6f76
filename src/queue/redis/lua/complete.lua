-- complete: records finished attempts, in bulk: Rust built each job's final record (the attempt
-- counted, its worker, start and end, its result or error, the status its outcome asks for) and
-- every index change; the script checks that the attempts still hold their jobs, then applies
-- them without handling each job.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   n, the number of attempts
-- then n job ids, then the n run entries the attempts were claimed with, then their n new
-- statuses (status codes)
-- then the terminal jobs per queue: q, then q times: queue, m, m ids (filed together in the
-- queue's retention index)
-- then how many jobs become queued and the earliest run_at of those scheduled again (0: none)
-- then prepared commands (see `prepared` in lib.lua), the first being the MSET of the records
--
-- Nothing is written when an attempt is stale (its job no longer runs under it: the lease
-- expired and the job moved on), or when a job whose cancel was requested would end otherwise
-- than succeeded or cancelled: the answer then names them, and the caller sends the others
-- again (the cancelled ones ending `cancelled`). The latest progress report is kept in each
-- record. Dependents are settled; waiters on the finished jobs are told.
--
-- Safe to retry (fenced by the run entries: a second call finds every attempt stale).
-- Returns {'done', {ready count, earliest due (0: none), finished ids...}}, or
-- {'redo', stale positions, cancel positions} (1-based, among the n attempts).

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local ids, statuses = {}, {}
for k = 1, n do
  ids[k] = ARGV[2 + k]
  statuses[k] = tonumber(ARGV[2 + 2 * n + k])
end

local stale, cancelled = {}, {}
for i = 1, n, CHUNK do
  local last = math.min(i + CHUNK - 1, n)
  for k, run in ipairs(redis.call('HMGET', RUN, unpack(ids, i, last))) do
    if run ~= ARGV[2 + n + i + k - 1] then stale[#stale + 1] = i + k - 1 end
  end
end
local has_cancels = redis.call('EXISTS', CANCELS) == 1
if has_cancels then
  for i = 1, n, CHUNK do
    local last = math.min(i + CHUNK - 1, n)
    for k, flag in ipairs(redis.call('SMISMEMBER', CANCELS, unpack(ids, i, last))) do
      local st = statuses[i + k - 1]
      if flag == 1 and st ~= SUCCEEDED and st ~= CANCELLED then cancelled[#cancelled + 1] = i + k - 1 end
    end
  end
end
if #stale > 0 or #cancelled > 0 then return { 'redo', stale, cancelled } end

-- The terminal jobs per queue, filed in the retention index.
local groups = tonumber(ARGV[3 + 3 * n])
local at = 4 + 3 * n
local finished = changes.finished
for _ = 1, groups do
  local queue, m = ARGV[at], tonumber(ARGV[at + 1])
  local list = {}
  for k = at + 2, at + 1 + m do
    list[#list + 1] = ARGV[k]
    finished[#finished + 1] = ARGV[k]
  end
  file_done(queue, list)
  at = at + 2 + m
end
for k = 1, n do final_status[ids[k]] = statuses[k] end
changes.ready, changes.due = tonumber(ARGV[at]), tonumber(ARGV[at + 1])

local records = at + 2
prepared(records)

-- The latest progress reports go into the records (rewritten here: reports are rare).
if redis.call('EXISTS', PROGRESS) == 1 then
  for i = 1, n, CHUNK do
    local last = math.min(i + CHUNK - 1, n)
    for k, progress in ipairs(redis.call('HMGET', PROGRESS, unpack(ids, i, last))) do
      if progress then
        local pos = i + k - 1
        local j = decode(ids[pos], ARGV[records + 3 + 2 * pos])
        j.p = progress
        redis.call('SET', job_key(ids[pos]), encode(j))
      end
    end
  end
  apply('HDEL', PROGRESS, ids)
end
apply('HDEL', RUN, ids)
if has_cancels then apply('SREM', CANCELS, ids) end
return { 'done', finish(now) }
