-- recover: takes back the jobs an instance was given by a claim whose answer it never got (Redis
-- ran the claim, then the link failed or the call timed out). Such a job would otherwise sit
-- `running` under a lease nobody renews until it expires, an attempt counted for a run that
-- never happened. The instance calls this after a failed claim, naming itself and the lease
-- tokens it does hold: every other attempt naming one of its worker slots is one it lost.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the instance's worker-name prefix (`<host>-<pid>/`)
-- ARGV[3..] the lease tokens the instance holds
--
-- The jobs go back to `queued` with no attempt counted (their records never changed); one
-- whose cancel was requested meanwhile ends `cancelled`, its attempt (not counted either) in
-- its history under the number it was claimed as. Safe to retry.
-- Returns {recovered count, {ready count, earliest due (0: none), finished ids...}}.

local now, prefix = tonumber(ARGV[1]), ARGV[2]
local held = {}
for k = 3, #ARGV do held[ARGV[k]] = true end

local lost, runs, tokens = {}, {}, {}
local entries = redis.call('HGETALL', RUN)
for k = 1, #entries, 2 do
  local id, run = entries[k], entries[k + 1]
  local token, _, worker = string.match(run, '^([^|]*)|([^|]*)|(.*)$')
  if id ~= RUN_SENTINEL and token and not held[token] and string.sub(worker, 1, #prefix) == prefix then
    lost[#lost + 1] = id
    runs[id], tokens[id] = run, token
  end
end
if #lost == 0 then return { 0, { 0, 0 } } end

load_many(lost)
local cancels = {}
if redis.call('EXISTS', CANCELS) == 1 then
  for k, flag in ipairs(redis.call('SMISMEMBER', CANCELS, unpack(lost))) do cancels[lost[k]] = flag == 1 end
end
local ended = {}
for _, id in ipairs(lost) do
  local j = load(id)
  if j and j.st == QUEUED then
    if cancels[id] then
      -- Never run either: ended like a cancelled queued job, with no attempt in its history.
      j.e, j.fl = 'cancelled', FLAG_CANCEL
      stop_running(j, runs[id], CANCELLED, now, false, nil)
    else
      -- Never run: the record stays as it was; only its running state goes.
      release_limits(j)
      count(queue_of(j), RUNNING, -1)
      count(queue_of(j), QUEUED, 1)
      enter(j, now)
    end
  end
  push_at(ended, tokens[id], id)
end
forget_running(ended)
return { #lost, finish(now) }
