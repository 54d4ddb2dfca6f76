-- limit: manages limits (see src/queue/flow.rs for what they mean, lib.lua for how claims apply
-- them). One call, one operation:
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the operation, then its arguments:
--   'put' name tokens per_ms concurrency: creates or replaces limit `name` (tokens and
--        per_ms '' without a rate, concurrency '' without one). A replaced limit keeps its state
--        (window, running count, hold); without a rate its window goes. Returns 1 when created,
--        0 when replaced.
--   'delete' name: removes the limit with its window and hold (its running count stays while
--        its jobs run). Jobs that name it run as if it did not exist. Returns 1 or 0 (none).
--   'hold' name until: holds every job under the limit until `until` (ms), never shortening a
--        hold. Returns 1, or 0 when there is no such limit.
--   'read' name...: each limit as of now: {name, created, updated, tokens, per_ms, concurrency,
--        held (0: not held), tokens left (-1: no rate), next token (0: none), running}, or {}
--        for a name with no limit.
-- 'put' and 'delete' wake an idle instance: what a limit lets through may have grown.
--
-- Safe to retry: each operation sets a state, and 'read' only slides windows.

local now, op = tonumber(ARGV[1]), ARGV[2]

if op == 'put' then
  local name, tokens, per, concurrency = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local key = limit_key(name)
  local created = redis.call('HSETNX', key, 'created', NOW_TEXT)
  redis.call('HSET', key, 'updated', NOW_TEXT)
  if tokens ~= '' then
    redis.call('HSET', key, 'tokens', tokens, 'per_ms', per)
  else
    redis.call('HDEL', key, 'tokens', 'per_ms', 'used')
    redis.call('DEL', window_key(name))
  end
  if concurrency ~= '' then
    redis.call('HSET', key, 'concurrency', concurrency)
  else
    redis.call('HDEL', key, 'concurrency')
  end
  redis.call('SADD', LIMITS, name)
  wake()
  return created
end

if op == 'delete' then
  local name = ARGV[3]
  redis.call('SREM', LIMITS, name)
  redis.call('DEL', window_key(name))
  local existed = redis.call('DEL', limit_key(name))
  if existed == 1 then wake() end
  return existed
end

if op == 'hold' then
  local name, held_until = ARGV[3], tonumber(ARGV[4])
  local key = limit_key(name)
  if redis.call('EXISTS', key) == 0 then return 0 end
  local held = tonumber(redis.call('HGET', key, 'held'))
  if not held or held_until > held then redis.call('HSET', key, 'held', ARGV[4]) end
  return 1
end

if op == 'read' then
  local out = {}
  for k = 3, #ARGV do
    local name = ARGV[k]
    local b = budget(name, now)
    if b then
      out[#out + 1] = { name, b.created, b.updated or b.created, b.rate or '', b.per or '',
        b.concurrency or '', b.held or 0, b.tokens or -1, b.next or 0, b.running }
    else
      out[#out + 1] = {}
    end
  end
  return out
end

return redis.error_reply('unknown operation ' .. tostring(op))
