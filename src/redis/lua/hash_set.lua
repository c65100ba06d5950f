-- Hash.Set with a TTL: the fields and the expiry in one atomic step, so a hash written with a
-- TTL never exists without it (the old helper's HSET-then-EXPIRE left that window).
-- KEYS[1]: the hash. ARGV[1]: TTL in ms. ARGV[2..]: field, value, field, value, ...
-- Returns the number of fields that were new.
local added = redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return added
