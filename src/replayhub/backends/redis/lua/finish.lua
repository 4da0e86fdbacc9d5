-- ARGV: session id, generation, state, error or '', retention ms, error type or ''
local now, s, lost = owned(ARGV[2])
if lost then
  if s ~= nil and s.g == ARGV[2] and s.st == ARGV[3] then
    -- This very finish, asked again: it landed, but was not confirmed
    -- (behind Sentinel, before a replica acknowledged it).
    return {'ok'}
  end
  return {'lost', lost}
end
-- The expiry first: Redis refuses a script's writes when it is over
-- maxmemory only until the script's first write has run (a script is never
-- stopped half-way), so a full Redis still takes this small terminal write,
-- and readers learn how the session ended rather than waiting for its lease.
expire_in(tonumber(ARGV[5]))
redis.call('HSET', session_key, 'st', ARGV[3], 'u', now, 'r', ARGV[5])
if ARGV[4] ~= '' then
  redis.call('HSET', session_key, 'e', ARGV[4])
end
if ARGV[6] ~= '' then
  redis.call('HSET', session_key, 'et', ARGV[6])
end
touch_index(now, tonumber(ARGV[5]))
publish(change_channel, 'end')
return {'ok'}
