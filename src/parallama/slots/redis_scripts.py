"""The Lua scripts of the Redis slot store, each run atomically by Redis with its own clock (`TIME`).

Keys of one server: `held` (leases: a sorted set scored by expiry, ms), `queue` (waiting tickets scored by arrival),
`alive` (waiting tickets scored by expiry), `seq` (the arrival counter), `gates` (a hash: each process's requests
waiting at its own gate, with an expiry), and the `freed` channel.
"""

LEASE_MS = 10_000
"The default lease; no lease or ticket lives further ahead than the longer of it and the caller's own lease."

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_PURGE = """
-- Leases and tickets live at most one lease from now: an expiry further ahead (`+inf`, a tampered score, a clock
-- that jumped back) is purged with the expired ones, so no member blocks a server for ever.
local horizon = now + math.max(tonumber(ARGV[3]), LEASE_MS_VALUE)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. horizon, '+inf')
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, ticket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. horizon, '+inf')) do dead[#dead + 1] = ticket end
for _, ticket in ipairs(dead) do redis.call('ZREM', KEYS[2], ticket); redis.call('ZREM', KEYS[3], ticket) end
local others = 0
local gates = redis.call('HGETALL', KEYS[5])
for i = 1, #gates, 2 do
  local n, until_ = string.match(gates[i + 1], '^(%d+):(%d+)$')
  if not n or tonumber(until_) < now or tonumber(until_) > horizon then redis.call('HDEL', KEYS[5], gates[i])
  elseif gates[i] ~= ARGV[4] then others = others + tonumber(n) end
end
-- Leases vanished under their holders (FLUSHALL, a key deleted): no slot is handed out until the holders have
-- had time to renew (and so re-create) theirs.
local recovering = redis.call('EXISTS', KEYS[1] .. ':recovering') == 1
"""

_PURGE = _PURGE.replace("LEASE_MS_VALUE", str(LEASE_MS))

ACQUIRE = _NOW + _PURGE + """
-- KEYS: held, queue, alive, seq, gates; ARGV: ticket, slots, lease ms, process id, 1 if the ticket was queued
-- before, ms to hold grants back when leases vanished
local expiry = now + tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then  -- a release handed it this slot already
  redis.call('ZADD', KEYS[1], expiry, ARGV[1])
  return {1, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), others}
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  if ARGV[5] == '1' and not recovering then  -- queued before, and gone: Redis lost its state
    redis.call('SET', KEYS[1] .. ':recovering', '1', 'PX', ARGV[6])
    recovering = true
  end
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
end
local held = redis.call('ZCARD', KEYS[1])
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not recovering and held + rank < tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[1], expiry, ARGV[1])
  return {1, held + 1, redis.call('ZCARD', KEYS[2]), others}
end
redis.call('ZADD', KEYS[3], expiry, ARGV[1])
return {0, held, redis.call('ZCARD', KEYS[2]), others}
"""

RELEASE = _NOW + _PURGE + """
-- KEYS: held, queue, alive, seq, gates, channel; ARGV: lease or ticket, slots, lease ms, process id
-- The freed slots go straight to the first tickets in the queue; the channel names them.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local granted = {}
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 and not recovering then
  local expiry = now + tonumber(ARGV[3])
  for _, ticket in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('ZREM', KEYS[3], ticket)
    redis.call('ZADD', KEYS[1], expiry, ticket)
    granted[#granted + 1] = ticket
  end
end
redis.call('PUBLISH', KEYS[6], table.concat(granted, ' '))
return granted
"""

RENEW = _NOW + _PURGE + """
-- KEYS: held, queue, alive, seq, gates; ARGV: -, ms to hold grants back when leases vanished, lease ms,
-- process id, gate waiting, leases..., '|', tickets...
-- A lease that vanished while its request runs is put back (the request holds the server all the same), and
-- grants wait until every holder has had its turn to do so.
local expiry = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[5], ARGV[4], ARGV[5] .. ':' .. expiry)
local leases = true
for i = 6, #ARGV do
  if ARGV[i] == '|' then leases = false
  elseif leases then
    if redis.call('ZADD', KEYS[1], expiry, ARGV[i]) == 1 and not recovering then
      redis.call('SET', KEYS[1] .. ':recovering', '1', 'PX', ARGV[2])
      recovering = true
    end
  else redis.call('ZADD', KEYS[3], 'XX', expiry, ARGV[i]) end
end
return {0, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), others}
"""

TAKE_IF_FREE = _NOW + _PURGE + """
-- KEYS: held, queue, alive, seq, gates; ARGV: lease, slots, lease ms, process id
-- A slot now only if one is free and no ticket waits (anywhere): no ticket is left behind either way.
local held = redis.call('ZCARD', KEYS[1])
local queued = redis.call('ZCARD', KEYS[2])
if held < tonumber(ARGV[2]) and queued == 0 and not recovering then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  return {1, held + 1, 0, others}
end
return {0, held, queued, others}
"""
