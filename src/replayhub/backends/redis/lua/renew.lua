-- ARGV: session id, generation, lease ttl ms. Returns the cancel flag and
-- the retention ms.
local now, s, lost = owned(ARGV[2])
if lost then
  return {'lost', lost}
end
local lease = tonumber(ARGV[3])
redis.call('HSET', session_key, 'l', now + lease, 't', lease)
expire_in(lease + tonumber(s.r))
touch_index(now, lease + tonumber(s.r))
return {'ok', s.x, s.r}
