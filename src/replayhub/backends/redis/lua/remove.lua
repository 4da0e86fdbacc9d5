-- ARGV: session id. Deletes the session; its producer loses its claim.
local removed = redis.call('DEL', session_key, log_key)
redis.call('ZREM', index_key, ARGV[1])
if removed > 0 then
  redis.call('PUBLISH', change_channel, 'removed')
  redis.call('PUBLISH', claim_channel, 'removed')
end
return {'ok', removed}
