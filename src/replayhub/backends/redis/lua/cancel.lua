-- ARGV: session id. Stores the request and signals the producer.
local now = now_ms()
local s, flat = load(now)
if s == nil then
  return {'none'}
end
if s.st == 'live' and s.x ~= '1' then
  redis.call('HSET', session_key, 'x', 1)
  publish(claim_channel, 'cancel')
  flat = redis.call('HGETALL', session_key)
end
return {'ok', now, flat}
