-- KeyValue.CompareAndSwap.
-- KEYS[1]: the key. ARGV[1]: 'absent' or 'equals'. ARGV[2]: expected bytes.
-- ARGV[3]: new value. ARGV[4]: TTL in ms or ''. ARGV[5]: '1' to keep the current TTL.
-- Returns {1} when swapped, {0, current or nil} when not.
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == 'absent' then
  matches = (current == false)
else
  matches = (current == ARGV[2])
end
if not matches then
  return {0, current}
end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
elseif ARGV[5] == '1' then
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return {1}
