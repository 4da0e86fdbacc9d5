-- ARGV: session id. Deletes the session; its producer loses its claim.
local removed = redis.call('DEL', session_key, log_key)
if not CLUSTER then
  redis.call('ZREM', index_key, session_id)
end
if removed > 0 then
  publish(change_channel, 'removed')
  publish(claim_channel, 'removed')
end
return {'ok', removed}
