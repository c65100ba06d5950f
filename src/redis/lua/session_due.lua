-- The due index of session buckets (Session.WatchEnded): which buckets the sweeper must
-- visit, and from when.
--
-- KEYS[1]: the due index, a sorted set of bucket index keys scored by a lower bound of when
-- the bucket next needs a sweep (ms; 0 = now). KEYS[2]: a hash of per-bucket generations,
-- raised by every mark, so the sweeper can tell whether a mark came in while it swept.
--
-- 'mark' (after a session script that created a deadline or recorded an ending):
--   ARGV: op, bucket, score. Lowers the bucket's score to `score` (ZADD LT: never later).
-- 'settle' (the sweeper, after sweeping a bucket): ARGV: op, bucket, the generation read
--   before the sweep, the bucket's next due time or '' when it is empty. When no mark came in
--   meanwhile, the score becomes exactly that (the bucket leaves the index when empty);
--   otherwise it may only be lowered, so a deadline marked during the sweep is never lost.
--   (Comparing scores would not do: a bucket being swept is due, so its score is in the past,
--   and a new session's later deadline cannot lower it.)

local due, generations, op, bucket = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if op == 'mark' then
  redis.call('ZADD', due, 'LT', ARGV[3], bucket)
  return redis.call('HINCRBY', generations, bucket, 1)
elseif op == 'settle' then
  local current = redis.call('HGET', generations, bucket) or '0'
  local next_due = ARGV[4]
  if current == ARGV[3] then
    if next_due == '' then
      return redis.call('ZREM', due, bucket)
    end
    return redis.call('ZADD', due, next_due, bucket)
  end
  if next_due ~= '' then
    return redis.call('ZADD', due, 'LT', next_due, bucket)
  end
  return 0
end
return redis.error_reply('GWARG op unknown due-index operation')
