-- Rewrite an ended generation's log in the large entries its producer packed
-- from a copy of what it stored (_packing), if the log is still the one the
-- copy was made of.
-- ARGV: session id, generation, events stored, entries stored, the id of the
-- first entry stored, then each packed entry's id and value.
-- Returns {'ok'}, or {'changed', why} and leaves the log as it is.
local s = load(now_ms())
if s == nil or s.g ~= ARGV[2] then
  return {'changed', 'claimed again or gone'}
end
if s.st == 'live' or tonumber(s.n) ~= tonumber(ARGV[3]) then
  return {'changed', 'not ended with these events'}
end
-- A generation's log is written only by its producer, one entry per stored
-- batch, and never again once it has ended; so as many entries, beginning
-- and ending where the copy's do, are the copy's.
if redis.call('XLEN', log_key) ~= tonumber(ARGV[4]) then
  return {'changed', 'not as many entries'}
end
local head = redis.call('XRANGE', log_key, '-', '+', 'COUNT', 1)
local tail = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', 1)
if #head == 0 or head[1][1] ~= ARGV[5] or tail[1][1] ~= s.g .. '-' .. s.n then
  return {'changed', 'other first or last entry'}
end
-- Every new id checked before anything is written: once the old log is
-- deleted, the XADDs below cannot be refused (ids of this generation, each
-- after the one before, the last the log's own).
local previous = 0
for i = 6, #ARGV, 2 do
  local generation, seq = string.match(ARGV[i], '^(%d+)-(%d+)$')
  if generation ~= s.g or tonumber(seq) <= previous then
    return redis.error_reply('pack: bad entry id ' .. ARGV[i])
  end
  previous = tonumber(seq)
end
if previous ~= tonumber(s.n) then
  return redis.error_reply('pack: the entries end at ' .. previous .. ', not ' .. s.n)
end
local ttl = redis.call('PTTL', log_key)
redis.call('DEL', log_key)
for i = 6, #ARGV, 2 do
  redis.call('XADD', log_key, ARGV[i], 'b', ARGV[i + 1])
end
if ttl > 0 then
  redis.call('PEXPIRE', log_key, ttl)
end
return {'ok'}
