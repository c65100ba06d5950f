-- Session storage, one script for every Session RPC (ARGV[1] names the operation).
--
-- A session is a hash: metadata under 'm:' (user, created, accessed, expires, absolute, idle,
-- version; times in ms since the epoch, by Redis' clock) and application data under 'd:', so
-- data named like metadata cannot overwrite it. The key expires at 'm:expires' (PEXPIREAT).
-- Each bucket (the sessions of every user whose id hashes to one slot tag) keeps a sorted set:
-- member '<user id>\n<session id>', score = that session's expiry. Every key a call touches
-- carries the same {tag}, so the script stays in one Cluster slot; `list`, `delete_user` and
-- the sweep also reach session keys named inside the script (their names are only known from
-- the bucket), all in that slot. A missing (or expired) session is reported as false.
--
-- Endings (Session.WatchEnded). Each bucket also keeps an "ended" sorted set in the same slot:
-- member '<reason>\n<user id>\n<session id>', score = when it ended (ms). Delete ('deleted'),
-- Rotate ('rotated', the old id) and DeleteByUser ('revoked') add to it in the same step as
-- the change, so an explicit ending is never lost. An expiry needs no event from Redis: an
-- index member whose score (the deadline) has passed, and whose hash is gone, is a session
-- that expired; `move_expired` turns such members into 'expired' endings (scored by the
-- deadline), bounded per call, in create, list, delete_user and the sweep. The gateway's one
-- elected sweeper (src/redis/session_endings.rs) runs `collect` on each bucket that a due index
-- says needs it, appends what it returns to the endings stream, and only then runs `settle`
-- to remove exactly those entries (append before remove: at least once; a crash between the
-- two repeats the entries once more).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Moves up to `limit` index members whose deadline has passed into the ended set as
-- 'expired' endings; a member whose hash still exists (never expected) gets its real deadline.
local function move_expired(bucket, ended, prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', bucket, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #due, 2 do
    local member, deadline = due[i], due[i + 1]
    local id = string.match(member, '\n([^\n]*)$')
    local expires = id and redis.call('HGET', prefix .. id, 'm:expires')
    if expires then
      redis.call('ZADD', bucket, expires, member)
    else
      redis.call('ZADD', ended, deadline, 'expired\n' .. member)
      redis.call('ZREM', bucket, member)
    end
  end
end

-- Records an explicit ending of session `id` of `user`.
local function record_end(ended, reason, user, id, now)
  redis.call('ZADD', ended, now, reason .. '\n' .. user .. '\n' .. id)
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
  -- KEYS: session, bucket, ended. ARGV: op, id, user, idle ms, absolute ms (0: none), data
  -- pairs.
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
  -- The key prefix of the bucket's sessions: this session's key without its id.
  move_expired(KEYS[2], KEYS[3], string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[2]), now, 64)
  redis.call('ZADD', KEYS[2], expires, ARGV[3] .. '\n' .. ARGV[2])
  return redis.call('HGETALL', KEYS[1])

elseif op == 'get' then
  -- KEYS: session, bucket, ended. ARGV: op, id. Reads with a touch.
  if not touch(KEYS[1], KEYS[2], ARGV[2], now) then
    return false
  end
  return redis.call('HGETALL', KEYS[1])

elseif op == 'touch' then
  -- KEYS: session, bucket, ended. ARGV: op, id. Returns the new expiry.
  local expires = touch(KEYS[1], KEYS[2], ARGV[2], now)
  if not expires then
    return false
  end
  return expires

elseif op == 'update' then
  -- KEYS: session, bucket, ended. ARGV: op, id, expected version or '', number of removals,
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
  -- KEYS: old session, new session, bucket, ended. ARGV: op, old id, new id.
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
  record_end(KEYS[4], 'rotated', user, ARGV[2], now)
  touch(KEYS[2], KEYS[3], ARGV[3], now)
  redis.call('HINCRBY', KEYS[2], 'm:version', 1)
  return redis.call('HGETALL', KEYS[2])

elseif op == 'delete' then
  -- KEYS: session, bucket, ended. ARGV: op, id. Returns 1 when a session was deleted.
  local user = redis.call('HGET', KEYS[1], 'm:user')
  if not user then
    return 0
  end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], user .. '\n' .. ARGV[2])
  record_end(KEYS[3], 'deleted', user, ARGV[2], now)
  return 1

elseif op == 'list' or op == 'delete_user' then
  -- KEYS: bucket, ended. ARGV: op, user, the session key prefix of this bucket.
  -- list: {id, fields, id, fields, ...}; delete_user: the number deleted.
  move_expired(KEYS[1], KEYS[2], ARGV[3], now, 64)
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
        if redis.call('DEL', key) == 1 then
          deleted = deleted + 1
          record_end(KEYS[2], 'revoked', ARGV[2], id, now)
        end
        redis.call('ZREM', KEYS[1], member)
      end
    end
  end
  if op == 'list' then
    return out
  end
  return deleted

elseif op == 'collect' then
  -- KEYS: bucket, ended. ARGV: op, the session key prefix of this bucket, limit.
  -- Moves expired members into the ended set, then returns up to `limit` pending endings,
  -- oldest first: {member, ended ms, ...}. Removes nothing from the ended set.
  local limit = tonumber(ARGV[3])
  move_expired(KEYS[1], KEYS[2], ARGV[2], now, limit)
  return redis.call('ZRANGE', KEYS[2], 0, limit - 1, 'WITHSCORES')

elseif op == 'settle' then
  -- KEYS: bucket, ended. ARGV: op, the endings now in the stream (members of the ended set).
  -- Removes them; returns when the bucket next needs a sweep (ms): now when endings remain,
  -- else its earliest deadline; false when the bucket is empty.
  for i = 2, #ARGV, 256 do
    redis.call('ZREM', KEYS[2], unpack(ARGV, i, math.min(i + 255, #ARGV)))
  end
  if redis.call('ZCARD', KEYS[2]) > 0 then
    return now
  end
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #first == 0 then
    return false
  end
  return tonumber(first[2])
end
return redis.error_reply('GWARG op unknown session operation')
