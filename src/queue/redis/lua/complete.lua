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
-- then how many jobs become queued, the earliest run_at of those scheduled again (0: none), and
-- '1' when some attempt ran under limits (an idle instance is woken: a place may have freed)
-- then prepared commands (see `prepared` in lib.lua), the first being the MSET of the records
--
-- Nothing is written when an attempt is stale (its job no longer runs under it: the lease
-- expired and the job moved on), or when a job whose cancel was requested would end otherwise
-- than succeeded or cancelled, or without the request on its record: the answer then names
-- them, and the caller sends the others again (those ending `cancelled` unless they succeeded,
-- with the request recorded). The latest progress report is kept in each
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

-- Where the sections after the statuses start: the terminal jobs per queue, then the counts,
-- then the prepared commands (their first, the MSET, holds each job's record at MSET_AT + 2k).
local groups_at = 3 + 3 * n
local at = groups_at + 1
for _ = 1, tonumber(ARGV[groups_at]) do at = at + 2 + tonumber(ARGV[at + 1]) end
local counts_at, records = at, at + 3
local function record_of(k) return ARGV[records + 3 + 2 * k] end

local stale, cancelled = {}, {}
for i = 1, n, CHUNK do
  local last = math.min(i + CHUNK - 1, n)
  for k, run in ipairs(redis.call('HMGET', RUN, unpack(ids, i, last))) do
    if run ~= ARGV[2 + n + i + k - 1] then stale[#stale + 1] = i + k - 1 end
  end
end
-- A job whose cancel was requested must end cancelled (or succeeded) with the request on its
-- record (flags byte, the record's third); the caller rebuilds those that do not.
local has_cancels = redis.call('EXISTS', CANCELS) == 1
if has_cancels then
  for i = 1, n, CHUNK do
    local last = math.min(i + CHUNK - 1, n)
    for k, flag in ipairs(redis.call('SMISMEMBER', CANCELS, unpack(ids, i, last))) do
      local pos = i + k - 1
      local st = statuses[pos]
      if flag == 1 and ((st ~= SUCCEEDED and st ~= CANCELLED) or string.byte(record_of(pos), 3) ~= 1) then
        cancelled[#cancelled + 1] = pos
      end
    end
  end
end
if #stale > 0 or #cancelled > 0 then return { 'redo', stale, cancelled } end

-- The terminal jobs per queue, filed in the retention index.
local finished = changes.finished
at = groups_at + 1
for _ = 1, tonumber(ARGV[groups_at]) do
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
changes.ready, changes.due = tonumber(ARGV[counts_at]), tonumber(ARGV[counts_at + 1])
changes.freed = ARGV[counts_at + 2] == '1'

prepared(records)

-- The latest progress reports go into the records (rewritten here: reports are rare).
if redis.call('EXISTS', PROGRESS) == 1 then
  for i = 1, n, CHUNK do
    local last = math.min(i + CHUNK - 1, n)
    for k, progress in ipairs(redis.call('HMGET', PROGRESS, unpack(ids, i, last))) do
      if progress then
        local pos = i + k - 1
        local j = decode(ids[pos], record_of(pos))
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
