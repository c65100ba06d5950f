-- Near cache fill: what the gateway needs to serve KeyValue.Get and GetMany from memory.
-- Runs on the near cache's tracking connection, so Redis remembers every key read here (even
-- a missing one) and sends an invalidation when it next changes, expires or is evicted.
-- KEYS: the keys. Returns, per key, three items: its type ('none' when missing), its value
-- (a string key) or nil, and its PTTL (-2 missing, -1 no TTL, else milliseconds).
local out = {}
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  local value = false
  if kind == 'string' then
    value = redis.call('GET', key)
  end
  out[#out + 1] = kind
  out[#out + 1] = value
  out[#out + 1] = redis.call('PTTL', key)
end
return out
