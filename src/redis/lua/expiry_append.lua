-- Appends key events to the expiry stream, capped at about MAXLEN entries.
--
-- KEYS[1]: the stream. ARGV: maxlen, then per event: kind ('expired', 'evicted', 'deleted' or
-- 'gap'), key (for a gap: its reason), observed ms since the epoch.
-- Returns the id of the last entry added.

local stream, maxlen = KEYS[1], ARGV[1]
local last = false
for i = 2, #ARGV, 3 do
  last = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'k', ARGV[i], 'key', ARGV[i + 1], 't', ARGV[i + 2])
end
return last
