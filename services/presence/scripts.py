"""Lua scripts of the presence store: several reads (and, for a join, the writes) in one
round trip. Presence is bound by its Redis round trips (each costs far more client CPU than
Redis work), and a reconnect storm after a gateway restart is thousands of connects and joins
a second; the scripts also make each step atomic.

Every script takes the key prefix as ``ARGV[1]`` and builds its keys from it (the layout is in
``store``). Keys are not declared in ``KEYS``: presence runs against one Redis (not a Redis
Cluster), as the multi-key commands of the store already require.
"""

# ARGV: prefix, session, connection, user, participants... (the projection learns them when
# it does not know the session). Records that the connection has the session open, and
# answers {1 if no other connection of the user had it open, online participants, typing
# as [user, until, user, until, ...]}.
OPEN_SESSION = """
local p, sid, conn, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local members_key = p .. 'm:' .. sid
if #ARGV > 4 and redis.call('EXISTS', members_key) == 0 then
  for i = 5, #ARGV do
    redis.call('SADD', members_key, ARGV[i])
    redis.call('SADD', p .. 'us:' .. ARGV[i], sid)
  end
end
local open_key = p .. 'open:' .. sid
local first = 1
local open = redis.call('HGETALL', open_key)
for i = 1, #open, 2 do
  if open[i] ~= conn and open[i + 1] == user then first = 0 end
end
redis.call('HSET', open_key, conn, user)
redis.call('SADD', p .. 'cs:' .. conn, sid)
local online = {}
for _, uid in ipairs(redis.call('SMEMBERS', members_key)) do
  local shown = redis.call('HGET', p .. 'u:' .. uid, 'shown')
  if shown and shown ~= 'offline' then online[#online + 1] = uid end
end
return {first, online, redis.call('ZRANGE', p .. 'ty:' .. sid, 0, -1, 'WITHSCORES')}
"""

# ARGV: prefix, user. Answers {the user's record as [field, value, ...], and for each of
# their connections [id, last_active or nil, away or nil, lease deadline or nil]}.
LOAD_USER = """
local p, user = ARGV[1], ARGV[2]
local conns = {}
for _, cid in ipairs(redis.call('SMEMBERS', p .. 'uc:' .. user)) do
  local fields = redis.call('HMGET', p .. 'c:' .. cid, 'last_active', 'away')
  conns[#conns + 1] = {cid, fields[1], fields[2], redis.call('ZSCORE', p .. 'leases', cid)}
end
return {redis.call('HGETALL', p .. 'u:' .. user), conns}
"""

# ARGV: prefix, user. Answers everyone who shares a session with the user (the user too).
CO_PARTICIPANTS = """
local p = ARGV[1]
local keys = {}
for _, sid in ipairs(redis.call('SMEMBERS', p .. 'us:' .. ARGV[2])) do
  keys[#keys + 1] = p .. 'm:' .. sid
end
if #keys == 0 then return {} end
return redis.call('SUNION', unpack(keys))
"""

# ARGV: prefix, then either 'user', <user> (the user's sessions) or 'sessions', <ids>...
# Answers, for each of those sessions some connection has open, [session, online users...].
ONLINE_IN_OPENED = """
local p = ARGV[1]
local sessions = {}
if ARGV[2] == 'user' then
  sessions = redis.call('SMEMBERS', p .. 'us:' .. ARGV[3])
else
  for i = 3, #ARGV do sessions[#sessions + 1] = ARGV[i] end
end
local answer = {}
for _, sid in ipairs(sessions) do
  if redis.call('EXISTS', p .. 'open:' .. sid) == 1 then
    local row = {sid}
    for _, uid in ipairs(redis.call('SMEMBERS', p .. 'm:' .. sid)) do
      local shown = redis.call('HGET', p .. 'u:' .. uid, 'shown')
      if shown and shown ~= 'offline' then row[#row + 1] = uid end
    end
    answer[#answer + 1] = row
  end
end
return answer
"""
