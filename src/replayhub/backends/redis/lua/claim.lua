-- ARGV: session id, metadata JSON, lease ttl ms, retention ms, claim token
local now = now_ms()
local s = load(now)
if s ~= nil and s.st == 'live' then
  if s.k == ARGV[5] then
    -- This very claim, asked again: it landed, but was not confirmed (behind
    -- Sentinel, before a replica acknowledged it).
    return {'ok', now, redis.call('HGETALL', session_key)}
  end
  return {'busy'}
end
local lease, retention = tonumber(ARGV[3]), tonumber(ARGV[4])
-- Generations come from the server clock (and always grow per session), so a
-- session removed or expired and claimed again never reuses a generation: a
-- stale producer or cursor of the old one can never match the new one.
local generation = now
if s ~= nil and tonumber(s.g) >= generation then
  generation = tonumber(s.g) + 1
end
redis.call('DEL', session_key, log_key)
redis.call('HSET', session_key, 'g', generation, 'st', 'live', 'n', 0, 'm', ARGV[2],
  'c', now, 'u', now, 'l', now + lease, 't', lease, 'r', retention, 'x', 0, 'k', ARGV[5])
if s ~= nil then
  redis.call('HSET', session_key, 'pg', s.g, 'ps', s.st, 'pe', s.e or '', 'pm', s.m,
    'pt', s.et or '', 'pn', s.n)
end
-- A producer that crashes leaves keys that still expire, read or not.
redis.call('PEXPIRE', session_key, lease + retention)
touch_index(now, lease + retention)
publish(change_channel, 'claim')
return {'ok', now, redis.call('HGETALL', session_key)}
