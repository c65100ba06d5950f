-- Near cache fill: what the gateway needs to serve KeyValue.Get and GetMany from memory.
-- Runs on the near cache's tracking connection, so Redis remembers every key read here (even
-- a missing one) and sends an invalidation when it next changes, expires or is evicted.
-- KEYS: the keys. Returns the server's time in microseconds (when the keys were read: the
-- gateway never lets an earlier read replace a later one), then, per key, three items: its
-- type ('none' when missing), its value (a string key) or nil, and its PTTL (-2 missing, -1
-- no TTL, else milliseconds).
local now = redis.call('TIME')
local out = {tonumber(now[1]) * 1000000 + tonumber(now[2])}
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
