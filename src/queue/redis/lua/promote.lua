-- promote: moves `scheduled` jobs whose time has come to `queued` (claims do it too, so due
-- jobs are found even when no scheduler pass runs in between), and settles dependents that
-- earlier calls left unsettled.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   the most jobs moved by this call
--
-- Safe to retry. Returns {more (1/0), {ready count, earliest run_at still scheduled (0: none),
-- finished ids...}}: `more` asks the caller to call again at once.

local now = tonumber(ARGV[1])
local more = promote_due(now, tonumber(ARGV[2]))
settle_backlog = true -- dependents earlier calls left unsettled
local out = finish(now)
more = more or changes.unsettled
local first = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
out[2] = first[2] and tonumber(first[2]) or 0
return { more and 1 or 0, out }
