-- ARGV: session id, generation, first seq, event count, metadata JSON or '',
-- the packed batch (_keys.encode_batch). Idempotent: a retried batch whose
-- events are already stored is skipped (a batch is stored whole or not at
-- all, so a retry never lands part-way).
local now, s, lost = owned(ARGV[2])
if lost then
  return {'lost', lost}
end
local last, first, count = tonumber(s.n), tonumber(ARGV[3]), tonumber(ARGV[4])
-- A gap, or a part-way overlap: the client says which.
if count > 0 and (first > last + 1 or (first <= last and first + count - 1 > last)) then
  return {'refused', last}
end
local stored = count > 0 and first == last + 1
if stored then
  last = first + count - 1
  redis.call('XADD', log_key, s.g .. '-' .. last, 'b', ARGV[6])
  redis.call('PEXPIRE', log_key, tonumber(s.t) + tonumber(s.r))
end
redis.call('HSET', session_key, 'n', last, 'u', now)
if ARGV[5] ~= '' then
  redis.call('HSET', session_key, 'm', ARGV[5])
end
touch_index(now, tonumber(s.t) + tonumber(s.r))
-- Readers elsewhere take a new batch from the notification itself (the
-- entry's id, a space, its value) and need not read it back.
if stored and ARGV[5] == '' then
  publish(change_channel, s.g .. '-' .. last .. ' ' .. ARGV[6])
else
  publish(change_channel, s.g .. '-' .. last)
end
return {'ok'}
