-- Elects (or keeps) the one gateway process that records key events into the expiry stream.
--
-- KEYS[1]: the writer lease, KEYS[2]: the live flag (set by the writer once subscribed).
-- ARGV[1]: this process's id, ARGV[2]: lease ms.
-- Returns 1 when this process was the writer and keeps the lease, 2 when it just became the
-- writer and no other writer was live, 3 when it took over from a writer that was live (events
-- between may be lost), 0 when another process is the writer.

local lease, live, id, ms = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local current = redis.call('GET', lease)
if current == id then
  redis.call('PEXPIRE', lease, ms)
  return 1
end
if current then
  return 0
end
redis.call('SET', lease, id, 'PX', ms)
if redis.call('EXISTS', live) == 1 then
  return 3
end
return 2
