-- renew: extends the leases of running attempts.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   lease (ms)
-- then, per attempt: id, token
--
-- Safe to retry. Returns one letter per attempt: 'A' still ours (renewed), 'C' still ours
-- (renewed) and a cancel was requested, 'L' lost (the job no longer runs under this token).

local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = {}
for k = 3, #ARGV, 2 do ids[#ids + 1] = ARGV[k] end
load_many(ids)

local states = {}
for k = 3, #ARGV, 2 do
  local j = load(ARGV[k])
  if j and j.st == RUNNING and j.tok == tonumber(ARGV[k + 1]) then
    zadd(LEASES, now + lease, j.id)
    states[#states + 1] = (j.fl % 2 == FLAG_CANCEL) and 'C' or 'A'
  else
    states[#states + 1] = 'L'
  end
end
flush_indexes()
return table.concat(states)
