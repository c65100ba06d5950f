-- Lock storage, one script for every Lock operation (ARGV[1] names the operation).
--
-- KEYS: 1 the lock, 2 its waiter queue, 3 its waiter leases, 4 the fence counter (shared by
-- every lock of the same hash-tag bucket). All four carry the same {tag}: one Cluster slot.
--
-- The lock is a hash: token (the holder's secret), owner (a label), fence (this acquisition's
-- fencing token), expires (end of the lease, ms since the epoch by Redis' clock) and delay
-- (the lock delay, ms). The key itself lives `delay` ms past the lease, so a lease that runs
-- out while held keeps the lock closed for the delay; a release deletes it at once.
--
-- Waiters queue in arrival order: a list of waiter ids (2) and a hash waiter id -> lease end
-- (3). A waiter renews its lease each time it retries; one whose lease ran out (its gateway
-- died) is dropped when it reaches the head. A release, or the head leaving while the lock is
-- free, publishes the new head's id on the wake channel, so only that waiter is woken.

local lock, queue, leases, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- 'held' with the lease left, 'delay' with the delay left, or 'free'.
local function state(now)
  local expires = redis.call('HGET', lock, 'expires')
  if not expires then
    return 'free', 0
  end
  local left = tonumber(expires) - now
  if left > 0 then
    return 'held', left
  end
  local delay_left = redis.call('PTTL', lock)
  if delay_left > 0 then
    return 'delay', delay_left
  end
  return 'free', 0
end

-- Drops waiters at the head whose lease ran out; true if any was dropped.
local function drop_dead_heads(now)
  local dropped = false
  while true do
    local head = redis.call('LINDEX', queue, 0)
    if not head then
      return dropped
    end
    local lease = tonumber(redis.call('HGET', leases, head) or '0')
    if lease > now then
      return dropped
    end
    redis.call('LPOP', queue)
    redis.call('HDEL', leases, head)
    dropped = true
  end
end

-- Wakes the waiter at the head, if any.
local function wake_head(channel)
  local head = redis.call('LINDEX', queue, 0)
  if head then
    redis.call('PUBLISH', channel, head)
  end
end

-- Puts `waiter` in the queue (at the tail, if not already in it) and renews its lease; the
-- queue keys live a little past the longest lease, so a queue of dead waiters goes away.
local function enqueue(waiter, lease_ms, now)
  if redis.call('HEXISTS', leases, waiter) == 0 then
    redis.call('RPUSH', queue, waiter)
  end
  redis.call('HSET', leases, waiter, now + lease_ms)
  redis.call('PEXPIRE', queue, lease_ms * 2)
  redis.call('PEXPIRE', leases, lease_ms * 2)
end

-- The queue position of `waiter` (0 at the head), or -1.
local function position(waiter)
  local found = redis.call('LPOS', queue, waiter)
  if found then
    return found
  end
  return -1
end

local op = ARGV[1]

if op == 'acquire' then
  -- ARGV: token, owner, ttl ms, delay ms, waiter id ('' to not queue), lease ms, channel.
  -- Returns {1, fence, expires} or {0, ms until the lock could free itself (0: unknown)}.
  local token, owner, ttl, delay = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local waiter, lease_ms, channel = ARGV[6], tonumber(ARGV[7]), ARGV[8]
  local now = now_ms()
  local dropped = drop_dead_heads(now)
  local current, left = state(now)
  if current == 'free' then
    local head = redis.call('LINDEX', queue, 0)
    if not head or head == waiter then
      if head then
        redis.call('LPOP', queue)
        redis.call('HDEL', leases, waiter)
      end
      local fencing_token = redis.call('INCR', fence)
      local expires = now + ttl
      redis.call('DEL', lock)
      redis.call('HSET', lock, 'token', token, 'owner', owner, 'fence', fencing_token,
        'expires', expires, 'delay', delay)
      redis.call('PEXPIRE', lock, ttl + delay)
      return {1, fencing_token, expires}
    end
    -- Free, but another waiter is first. If it only just became first (dead waiters before
    -- it were dropped), nobody has woken it yet.
    if dropped then
      redis.call('PUBLISH', channel, head)
    end
  end
  if waiter ~= '' then
    enqueue(waiter, lease_ms, now)
  end
  return {0, left}
elseif op == 'leave' then
  -- ARGV: waiter id, channel. Returns 1 if the waiter was queued.
  local waiter, channel = ARGV[2], ARGV[3]
  local was_head = redis.call('LINDEX', queue, 0) == waiter
  local removed = redis.call('LREM', queue, 1, waiter)
  redis.call('HDEL', leases, waiter)
  if was_head and state(now_ms()) == 'free' then
    wake_head(channel)
  end
  return removed
elseif op == 'release' then
  -- ARGV: token, channel. Returns 1 if the token held the lock (now free), else 0.
  local token, channel = ARGV[2], ARGV[3]
  local held = redis.call('HMGET', lock, 'token', 'expires')
  if held[1] ~= token or tonumber(held[2]) <= now_ms() then
    return 0
  end
  redis.call('DEL', lock)
  wake_head(channel)
  return 1
elseif op == 'extend' then
  -- ARGV: token, ttl ms. Returns {1, new expiry} or {0}.
  local token, ttl = ARGV[2], tonumber(ARGV[3])
  local held = redis.call('HMGET', lock, 'token', 'expires', 'delay')
  local now = now_ms()
  if held[1] ~= token or tonumber(held[2]) <= now then
    return {0}
  end
  local expires = now + ttl
  redis.call('HSET', lock, 'expires', expires)
  redis.call('PEXPIRE', lock, ttl + tonumber(held[3]))
  return {1, expires}
elseif op == 'inspect' then
  -- Returns {held (0/1), owner, fencing token, lease left ms, live waiters, delay left ms}.
  local now = now_ms()
  local current, left = state(now)
  local waiters = 0
  for _, lease in ipairs(redis.call('HVALS', leases)) do
    if tonumber(lease) > now then
      waiters = waiters + 1
    end
  end
  if current == 'held' then
    local held = redis.call('HMGET', lock, 'owner', 'fence')
    return {1, held[1], held[2], left, waiters, 0}
  end
  local counter = redis.call('GET', fence) or '0'
  local delay_left = 0
  if current == 'delay' then
    delay_left = left
  end
  return {0, '', counter, 0, waiters, delay_left}
end
return redis.error_reply('GWARG op unknown lock operation ' .. tostring(op))
