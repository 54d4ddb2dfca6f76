-- limits.lua: what claims and the limit scripts share about limits (how much each allows now,
-- taking from it, writing what was taken). Appended to lib.lua only for the scripts that read
-- limits (claim, limit, throttled): every function a script defines costs each of its calls.

local function window_key(name) return B .. 'lw:' .. name end
local function turns_key(queue) return B .. 'gp:' .. queue end

-- What each limit allows in this call (false: no such limit), read once (`budget`); `jobs` and
-- `taken` count what the call took under it. `running_taken` counts the jobs it started under
-- every name (a limit that does not exist too: its jobs' ends count down whatever the limit is
-- by then). `limits_free_at` is the earliest time a limit that said no frees (a rate's next
-- token, or the end of a hold).
local budgets, running_taken, limits_free_at = {}, {}, nil

-- What a window's entry is rounded to: a claim within this share of the window after the
-- newest entry joins it, moved to the later time (its tokens come back a little late, never
-- early), so a window holds at most about a hundred entries whatever the claims' rate.
local WINDOW_SLOTS = 100

-- Slides the window of limit `name` (rate: `per` ms) to `now`: the entries whose tokens came
-- back go (a page at a time from the head: a window read again after a long idle is trimmed as
-- it is read), and `used` (the tokens in it) goes down by theirs. Returns the tokens still used
-- and when the oldest of them comes back (nil: none out).
local function slide_window(name, per, used, now)
  local key = window_key(name)
  local freed, next_token = 0, nil
  while true do
    local entries = redis.call('LRANGE', key, 0, 31)
    local gone = 0
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
    if gone > 0 then redis.call('LTRIM', key, gone, -1) end
    if next_token or gone < 32 then break end
  end
  if freed > 0 then
    used = math.max(used - freed, 0)
    redis.call('HSET', limit_key(name), 'used', string.format('%d', used))
  end
  return used, next_token
end

-- Limit `name` as of `now`: `held` (until, when in the future), `slots` (places left under its
-- concurrency), `tokens` (left in its rate's window), `idle` (no token of its window is out),
-- `next` (when the next token comes back), `running`, and the fields as stored; false when
-- there is no such limit.
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
  b.running = math.max(tonumber(redis.call('HGET', LIMRUN, name)) or 0, 0)
  if l[4] then b.slots = tonumber(l[4]) - b.running end
  if l[2] then
    local used
    used, b.next = slide_window(name, tonumber(l[3]), tonumber(l[6]) or 0, now)
    b.tokens = tonumber(l[2]) - used
    b.idle_at_start = b.next == nil
    b.idle = b.idle_at_start
  end
  budgets[name] = b
  return b
end

-- Whether `limits` (names) let a job of `cost` start at `now`; when not, notes in
-- limits_free_at when they may (a lane waits for the last of its limits to free; a concurrency
-- limit frees when a job ends, which wakes the instances anyway). Limits that do not exist
-- (deleted) allow anything. A job costing more than a rate's tokens (the rate was lowered after
-- it was submitted) runs alone in a window: when no token is out.
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
      elseif b.tokens and b.tokens < cost and not b.idle then
        no, at = true, b.next
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
local function take(limits, cost, n, now)
  for _, name in ipairs(limits) do
    running_taken[name] = (running_taken[name] or 0) + n
    local b = budgets[name]
    if b then
      if b.tokens then
        b.tokens = b.tokens - n * cost
        b.idle = b.idle_at_start and b.taken + n * cost <= 0
        -- What this claim takes comes back one window from now.
        if not b.next and not b.idle then b.next = now + tonumber(b.per) end
      end
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
      -- An idle window lets one job through whatever its cost.
      if b.tokens then most = math.min(most, math.max(math.floor(b.tokens / cost), 1)) end
    end
  end
  return most
end

-- Writes what this call took: the running count of every name, and under each rate an entry of
-- its window (joined to the newest one when that is recent: see WINDOW_SLOTS).
local function record_taken()
  for name, n in pairs(running_taken) do
    if n ~= 0 then redis.call('HINCRBY', LIMRUN, name, n) end
  end
  for name, b in pairs(budgets) do
    if b and b.tokens and b.taken > 0 then
      local key = window_key(name)
      local newest = redis.call('LINDEX', key, -1)
      local at, tokens = nil, nil
      if newest then at, tokens = string.match(newest, '^(%d+):(%d+)$') end
      if at and tonumber(at) >= tonumber(NOW_TEXT) - tonumber(b.per) / WINDOW_SLOTS then
        redis.call('LSET', key, -1, NOW_TEXT .. ':' .. string.format('%d', tonumber(tokens) + b.taken))
      else
        redis.call('RPUSH', key, NOW_TEXT .. ':' .. string.format('%d', b.taken))
      end
      redis.call('HINCRBY', limit_key(name), 'used', b.taken)
    end
  end
end
