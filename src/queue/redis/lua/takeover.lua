-- takeover: an instance restarted under its name takes back the attempts a dead run of it left
-- running: every attempt whose worker is `<name>/...`. It runs at start, once the instance
-- holds its name in the registry and before it claims anything, so none of these attempts is
-- its own. Each ends as after an expired lease (lose_attempt): counted, the job back to
-- `queued` with attempts left, else `failed` ('instance <name> restarted'), or `cancelled`
-- when its cancel was requested; its running state goes as reap's does (forget_running, and
-- the lease token once it holds no job). Rather than wait for the leases to run out.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the instance's name
-- ARGV[3]   the most attempts handled by this call
--
-- Every attempt taken is counted (`instance_restarted` in the takeovers hash) and returned with
-- its job's kind and its worker, for the caller to log.
--
-- Safe to retry (a second run finds the attempts gone). Returns {more (1/0), {ready count,
-- earliest due (0: none), finished ids...}, {id, kind, worker, ...}}.

local now, name, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local prefix = name .. '/'
local ids, runs, more = {}, {}, false
local entries = redis.call('HGETALL', RUN)
for k = 1, #entries, 2 do
  local id, run = entries[k], entries[k + 1]
  local worker = string.match(run, '^[^|]*|[^|]*|(.*)$')
  if id ~= RUN_SENTINEL and worker and string.sub(worker, 1, #prefix) == prefix then
    if #ids == limit then
      more = true
      break
    end
    ids[#ids + 1] = id
    runs[#runs + 1] = run
  end
end
if #ids == 0 then return { 0, { 0, 0 }, {} } end

local _, cancel, progress = running_of(ids)
load_many(ids)
local ended = {}
local reason = 'instance ' .. name .. ' restarted'
for n, id in ipairs(ids) do
  local j = load(id)
  if j then lose_attempt(j, runs[n], cancel[n], progress[n], now, reason) end
  push_at(ended, string.match(runs[n], '^([^|]*)|'), id)
end
forget_running(ended)
for token in pairs(ended) do
  if redis.call('EXISTS', lease_key(token)) == 0 then redis.call('ZREM', LEASES, token) end
end
local lost = count_taken('instance_restarted')
return { more and 1 or 0, finish(now), lost }
