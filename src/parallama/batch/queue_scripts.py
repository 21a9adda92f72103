"""The Lua scripts of a batch job in Redis (`queue.py`): each one step that must not be seen half done."""

# A worker's try is over: acknowledge it, and only when that counted (nobody else finished it first) put its line on
# the results, delete its entry, count it for the worker and keep the worker's use of its servers.
FINISH = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
local fields = {'id', ARGV[3], 'line', ARGV[4], 'failed', ARGV[5], 'worker', ARGV[6]}
if ARGV[8] ~= '' then
  table.insert(fields, 'dead'); table.insert(fields, ARGV[8])
  redis.call('HSET', KEYS[5], ARGV[3], ARGV[8])
else
  redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
end
redis.call('XADD', KEYS[2], '*', unpack(fields))
if ARGV[7] ~= '' then redis.call('HSET', KEYS[4], ARGV[6], ARGV[7]) end
redis.call('HDEL', KEYS[6], ARGV[3])
return 1
"""

# Renew the claim on the entries still this worker's (idle back to 0, no delivery counted); return the others.
RENEW = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[2] then
    table.insert(lost, ARGV[i])
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost
"""

# A try without an answer: keep its error and make the entry claimable at once (by any worker), if still ours.
RETRY = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[6], 'JUSTID')
return 1
"""

# The writer's lease: renewed only by the process holding it.
RENEW_WRITER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
