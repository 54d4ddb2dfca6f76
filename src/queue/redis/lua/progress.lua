-- progress: stores the latest progress report of a running attempt.
--
-- ARGV[1]   id
-- ARGV[2]   lease token
-- ARGV[3]   the report (JSON text)
--
-- Safe to retry. Returns 1 when stored, 0 when the attempt no longer holds the job.

if not holds(redis.call('HGET', RUN, ARGV[1]), ARGV[2]) then return 0 end
redis.call('HSET', PROGRESS, ARGV[1], ARGV[3])
return 1
