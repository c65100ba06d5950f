-- KeyValue.Increment with a TTL for counters that have none (fixed-window rate limits).
-- KEYS[1]: the counter. ARGV[1]: delta. ARGV[2]: TTL in ms.
-- Returns the new value as a string (Lua numbers are doubles: exact only up to 2^53).
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2], 'NX')
return redis.call('GET', KEYS[1])
