-- limits.lua: what claims and the limit scripts share about limits (how much each allows now,
-- taking from it, writing what was taken). Appended to lib.lua only for the scripts that read
-- limits (claim, limit, throttled): every function a script defines costs each of its calls.

local function window_key(name) return B .. 'lw:' .. name end
local function turns_key(queue) return B .. 'gp:' .. queue end

-- What each limit allows in this call (false: no such limit), read once (`budget`); `jobs` and
-- `taken` count what the call took under it. `limits_free_at` is the earliest time a limit
-- that said no frees (a rate's next token, or the end of a hold).
local budgets, limits_free_at = {}, nil

-- Slides the window of limit `name` (rate: `per` ms) to `now`: the entries whose tokens came
-- back go, and `used` (the tokens in it) goes down by theirs. Returns the tokens still used and
-- when the oldest of them comes back (nil: none out).
local function slide_window(name, per, used, now)
  local key = window_key(name)
  local gone, freed, next_token = 0, 0, nil
  while true do
    local entries = redis.call('LRANGE', key, gone, gone + 31)
    for _, entry in ipairs(entries) do
      local at, tokens = string.match(entry, '^(%d+):(%d+)$')
      at = tonumber(at)
      if at + per > now then
        next_token = at + per
        break
      end
      gone = gone + 1
      freed = freed + tonumber(tokens)
    end
    if next_token or #entries < 32 then break end
  end
  if gone > 0 then
    redis.call('LTRIM', key, gone, -1)
    used = math.max(used - freed, 0)
    redis.call('HSET', limit_key(name), 'used', string.format('%d', used))
  end
  return used, next_token
end

-- Limit `name` as of `now`: `held` (until, when in the future), `slots` (places left under its
-- concurrency), `tokens` (left in its rate's window), `next` (when the next token comes back),
-- `running`, and the fields as stored; false when there is no such limit.
local function budget(name, now)
  local b = budgets[name]
  if b ~= nil then return b end
  local l = redis.call('HMGET', limit_key(name), 'created', 'tokens', 'per_ms', 'concurrency', 'held', 'used', 'updated')
  if not l[1] then
    budgets[name] = false
    return false
  end
  b = { jobs = 0, taken = 0, created = l[1], updated = l[7], rate = l[2], per = l[3], concurrency = l[4] }
  local held = tonumber(l[5])
  if held and held > now then b.held = held end
  b.running = tonumber(redis.call('HGET', LIMRUN, name)) or 0
  if l[4] then b.slots = tonumber(l[4]) - b.running end
  if l[2] then
    local used
    used, b.next = slide_window(name, tonumber(l[3]), tonumber(l[6]) or 0, now)
    b.tokens = tonumber(l[2]) - used
  end
  budgets[name] = b
  return b
end

-- Whether `limits` (names) let a job of `cost` start at `now`; when not, notes in
-- limits_free_at when they may (a lane waits for the last of its limits to free; a concurrency
-- limit frees when a job ends, which wakes the instances anyway). Limits that do not exist
-- (deleted) allow anything.
local function allowed(limits, cost, now)
  local blocked, free_at = false, nil
  for _, name in ipairs(limits) do
    local b = budget(name, now)
    if b then
      local no, at = false, nil
      if b.held then
        no, at = true, b.held
      elseif b.slots and b.slots <= 0 then
        no = true
      elseif b.tokens and b.tokens < cost then
        no, at = true, b.next or now + 1
      end
      if no then
        blocked = true
        if at and (not free_at or at > free_at) then free_at = at end
      end
    end
  end
  if blocked and free_at and (not limits_free_at or free_at < limits_free_at) then
    limits_free_at = free_at
  end
  return not blocked
end

-- Takes (n > 0) or gives back (n < 0) what n jobs of `cost` use of `limits`.
local function take(limits, cost, n)
  for _, name in ipairs(limits) do
    local b = budgets[name]
    if b then
      if b.tokens then b.tokens = b.tokens - n * cost end
      if b.slots then b.slots = b.slots - n end
      b.taken = b.taken + n * cost
      b.jobs = b.jobs + n
    end
  end
end

-- How many jobs of `cost` `limits` let start at `now`, at most `most` (checked with `allowed`,
-- so a lane they hold back notes when it frees).
local function allowance(limits, cost, most, now)
  if not allowed(limits, cost, now) then return 0 end
  for _, name in ipairs(limits) do
    local b = budgets[name]
    if b then
      if b.slots then most = math.min(most, b.slots) end
      if b.tokens then most = math.min(most, math.floor(b.tokens / cost)) end
    end
  end
  return most
end

-- Writes what this call took under each limit: its running count, and an entry of its rate's
-- window.
local function record_taken()
  for name, b in pairs(budgets) do
    if b and b.jobs > 0 then
      redis.call('HINCRBY', LIMRUN, name, b.jobs)
      if b.tokens then
        redis.call('RPUSH', window_key(name), NOW_TEXT .. ':' .. string.format('%d', b.taken))
        redis.call('HINCRBY', limit_key(name), 'used', b.taken)
      end
    end
  end
end
