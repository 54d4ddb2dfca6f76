-- progress: stores the latest progress report of a running attempt.
--
-- ARGV[1]   now (ms)
-- ARGV[2]   id
-- ARGV[3]   token
-- ARGV[4]   the report (JSON text)
--
-- Safe to retry. Returns 1 when stored, 0 when the attempt no longer holds the job.

local j = load(ARGV[2])
if not j or j.st ~= RUNNING or j.tok ~= tonumber(ARGV[3]) then return 0 end
j.p = ARGV[4]
j.u = tonumber(ARGV[1])
save(j)
commit()
return 1
