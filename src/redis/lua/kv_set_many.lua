-- KeyValue.SetMany, all or nothing.
-- KEYS: the keys. ARGV[1]: TTL in ms or ''. ARGV[2]: '1' to write only if no key exists.
-- ARGV[3..]: the values, in KEYS order. Returns 1 when written, 0 when a key existed.
if ARGV[2] == '1' and redis.call('EXISTS', unpack(KEYS)) > 0 then
  return 0
end
for i, key in ipairs(KEYS) do
  if ARGV[1] ~= '' then
    redis.call('SET', key, ARGV[i + 2], 'PX', ARGV[1])
  else
    redis.call('SET', key, ARGV[i + 2])
  end
end
return 1
