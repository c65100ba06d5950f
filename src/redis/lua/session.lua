-- Session storage, one script for every Session RPC (ARGV[1] names the operation).
--
-- A session is a hash: metadata under 'm:' (user, created, accessed, expires, absolute, idle,
-- version; times in ms since the epoch, by Redis' clock) and application data under 'd:', so
-- data named like metadata cannot overwrite it. The key expires at 'm:expires' (PEXPIREAT).
-- Each bucket (the sessions of every user whose id hashes to one slot tag) keeps a sorted set:
-- member '<user id>\n<session id>', score = that session's expiry. Ended members are dropped
-- lazily, a bounded number per call. Every key a call touches carries the same {tag}, so the
-- script stays in one Cluster slot; `list` and `delete_user` also reach session keys named
-- inside the script (their names are only known from the bucket), all in that slot.
-- A missing (or expired) session is reported as false.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function drop_ended(bucket, now)
  local ended = redis.call('ZRANGEBYSCORE', bucket, '-inf', now, 'LIMIT', 0, 64)
  if #ended > 0 then
    redis.call('ZREM', bucket, unpack(ended))
  end
end

-- Slides the idle expiry of session `key` (capped by its absolute deadline); returns the new
-- expiry and the user id, or nil when the session is gone.
local function touch(key, bucket, id, now)
  local meta = redis.call('HMGET', key, 'm:user', 'm:idle', 'm:absolute')
  if not meta[1] then
    return nil
  end
  local expires = now + tonumber(meta[2])
  local absolute = tonumber(meta[3])
  if absolute > 0 and absolute < expires then
    expires = absolute
  end
  redis.call('HSET', key, 'm:accessed', now, 'm:expires', expires)
  redis.call('PEXPIREAT', key, expires)
  redis.call('ZADD', bucket, expires, meta[1] .. '\n' .. id)
  return expires, meta[1]
end

local op = ARGV[1]
local now = now_ms()

if op == 'create' then
  -- KEYS: session, bucket. ARGV: op, id, user, idle ms, absolute ms (0: none), data pairs.
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.error_reply('GWSTATE session_id a fresh session id collided; retry')
  end
  local idle = tonumber(ARGV[4])
  local absolute = 0
  if tonumber(ARGV[5]) > 0 then
    absolute = now + tonumber(ARGV[5])
  end
  local expires = now + idle
  if absolute > 0 and absolute < expires then
    expires = absolute
  end
  local fields = {'m:user', ARGV[3], 'm:created', now, 'm:accessed', now, 'm:expires', expires,
    'm:absolute', absolute, 'm:idle', idle, 'm:version', 1}
  for i = 6, #ARGV, 2 do
    fields[#fields + 1] = 'd:' .. ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('PEXPIREAT', KEYS[1], expires)
  drop_ended(KEYS[2], now)
  redis.call('ZADD', KEYS[2], expires, ARGV[3] .. '\n' .. ARGV[2])
  return redis.call('HGETALL', KEYS[1])

elseif op == 'get' then
  -- KEYS: session, bucket. ARGV: op, id. Reads with a touch.
  if not touch(KEYS[1], KEYS[2], ARGV[2], now) then
    return false
  end
  return redis.call('HGETALL', KEYS[1])

elseif op == 'touch' then
  -- KEYS: session, bucket. ARGV: op, id. Returns the new expiry.
  local expires = touch(KEYS[1], KEYS[2], ARGV[2], now)
  if not expires then
    return false
  end
  return expires

elseif op == 'update' then
  -- KEYS: session, bucket. ARGV: op, id, expected version or '', number of removals,
  -- removals..., then set pairs.
  local version = redis.call('HGET', KEYS[1], 'm:version')
  if not version then
    return false
  end
  if ARGV[3] ~= '' and ARGV[3] ~= version then
    return {'conflict', version}
  end
  touch(KEYS[1], KEYS[2], ARGV[2], now)
  local removals = tonumber(ARGV[4])
  if removals > 0 then
    local fields = {}
    for i = 5, 4 + removals do
      fields[#fields + 1] = 'd:' .. ARGV[i]
    end
    redis.call('HDEL', KEYS[1], unpack(fields))
  end
  local sets = {}
  for i = 5 + removals, #ARGV, 2 do
    sets[#sets + 1] = 'd:' .. ARGV[i]
    sets[#sets + 1] = ARGV[i + 1]
  end
  if #sets > 0 then
    redis.call('HSET', KEYS[1], unpack(sets))
  end
  redis.call('HINCRBY', KEYS[1], 'm:version', 1)
  return {'ok', redis.call('HGETALL', KEYS[1])}

elseif op == 'rotate' then
  -- KEYS: old session, new session, bucket. ARGV: op, old id, new id.
  local user = redis.call('HGET', KEYS[1], 'm:user')
  if not user then
    return false
  end
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return redis.error_reply('GWSTATE session_id a fresh session id collided; retry')
  end
  -- RENAME keeps the data, the metadata and the TTL; the old id is gone in the same step.
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[3], user .. '\n' .. ARGV[2])
  touch(KEYS[2], KEYS[3], ARGV[3], now)
  redis.call('HINCRBY', KEYS[2], 'm:version', 1)
  return redis.call('HGETALL', KEYS[2])

elseif op == 'delete' then
  -- KEYS: session, bucket. ARGV: op, id. Returns 1 when a session was deleted.
  local user = redis.call('HGET', KEYS[1], 'm:user')
  if not user then
    return 0
  end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], user .. '\n' .. ARGV[2])
  return 1

elseif op == 'list' or op == 'delete_user' then
  -- KEYS: bucket. ARGV: op, user, the session key prefix of this bucket.
  -- list: {id, fields, id, fields, ...}; delete_user: the number deleted.
  drop_ended(KEYS[1], now)
  local prefix = ARGV[2] .. '\n'
  local out = {}
  local deleted = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
    if string.sub(member, 1, #prefix) == prefix then
      local id = string.sub(member, #prefix + 1)
      local key = ARGV[3] .. id
      if op == 'list' then
        local fields = redis.call('HGETALL', key)
        if #fields > 0 then
          out[#out + 1] = id
          out[#out + 1] = fields
        else
          redis.call('ZREM', KEYS[1], member)
        end
      else
        deleted = deleted + redis.call('DEL', key)
        redis.call('ZREM', KEYS[1], member)
      end
    end
  end
  if op == 'list' then
    return out
  end
  return deleted
end
return redis.error_reply('GWARG op unknown session operation')
