-- KeyValue.Get with TTL options.
-- KEYS[1]: the key. ARGV[1]: new TTL in ms, or '' to leave it. ARGV[2]: '1' to return the TTL.
-- Returns {value or nil, pttl} (pttl is -3 when not asked for).
local value = redis.call('GET', KEYS[1])
if value and ARGV[1] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = -3
if ARGV[2] == '1' then
  ttl = redis.call('PTTL', KEYS[1])
end
return {value, ttl}
