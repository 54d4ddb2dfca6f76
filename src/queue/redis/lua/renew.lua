-- renew: extends the leases of running attempts (one lease per claim token).
--
-- ARGV[1]   now (ms)
-- ARGV[2]   lease (ms)
-- then, per attempt: id, lease token
--
-- Safe to retry. Returns one letter per attempt: 'A' still ours (renewed), 'C' still ours
-- (renewed) and a cancel was requested, 'L' lost (the job no longer runs under this token).

local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = {}
for k = 3, #ARGV, 2 do ids[#ids + 1] = ARGV[k] end
local run, cancel = running_of(ids)

local states, renewed = {}, {}
for n = 1, #ids do
  local token = ARGV[2 + 2 * n]
  if holds(run[n], token) then
    renewed[token] = true
    states[n] = cancel[n] and 'C' or 'A'
  else
    states[n] = 'L'
  end
end
for token in pairs(renewed) do redis.call('ZADD', LEASES, now + lease, token) end
return table.concat(states)
