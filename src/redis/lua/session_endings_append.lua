-- Appends session endings to the endings stream (Session.WatchEnded), capped at about MAXLEN
-- entries, in one step.
--
-- KEYS[1]: the stream. ARGV: maxlen, then per ending: reason ('expired', 'deleted', 'rotated'
-- or 'revoked'), user id, session id, namespace prefix, ended ms since the epoch.
-- Returns the id of the last entry added.

local stream, maxlen = KEYS[1], ARGV[1]
local last = false
for i = 2, #ARGV, 5 do
  last = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'reason', ARGV[i], 'user', ARGV[i + 1], 'sid', ARGV[i + 2], 'ns', ARGV[i + 3],
    't', ARGV[i + 4])
end
return last
