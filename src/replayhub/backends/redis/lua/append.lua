-- ARGV: session id, generation, first seq, metadata JSON or '', then one
-- field/value pair per event (field = kind digit .. name, value = payload).
-- Idempotent: events already stored (a retried batch) are skipped.
local now, s, lost = owned(ARGV[2])
if lost then
  return {'lost', lost}
end
local last, first = tonumber(s.n), tonumber(ARGV[3])
local count = (#ARGV - 4) / 2
if count > 0 and first > last + 1 then
  return {'gap', last}
end
local skip = last + 1 - first
if skip < count then
  local pairs_ = {}
  for i = 5 + skip * 2, #ARGV do
    pairs_[#pairs_ + 1] = ARGV[i]
  end
  last = first + count - 1
  redis.call('XADD', log_key, s.g .. '-' .. last, unpack(pairs_))
  redis.call('PEXPIRE', log_key, tonumber(s.t) + tonumber(s.r))
end
redis.call('HSET', session_key, 'n', last, 'u', now)
if ARGV[4] ~= '' then
  redis.call('HSET', session_key, 'm', ARGV[4])
end
touch_index(now, tonumber(s.t) + tonumber(s.r))
publish(change_channel, s.g .. '-' .. last)
return {'ok'}
