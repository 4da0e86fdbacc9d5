-- ARGV: session id, cursor generation or '', cursor seq, most events to return.
-- Returns the session, the log entries (one packed write batch each) that
-- hold the events after the cursor, 1 if the log is gone, and 1 if this read
-- found the lease expired and stored the abandonment, in one atomic snapshot.
local now = now_ms()
local s, flat = load(now)
if s == nil then
  return {'none'}
end
local limit, from = tonumber(ARGV[4]), nil
if ARGV[2] == s.g then
  from = tonumber(ARGV[3]) + 1
elseif ARGV[2] == '' or tonumber(ARGV[2]) < tonumber(s.g) then
  from = 1
end
local entries, found = {}, 0
if from ~= nil and limit > 0 and from <= tonumber(s.n) then
  local start = s.g .. '-' .. from
  while found < limit do
    local chunk = redis.call('XRANGE', log_key, start, '+', 'COUNT', 16)
    for _, entry in ipairs(chunk) do
      entries[#entries + 1] = entry
      -- An entry's id is <generation>-<its last seq>.
      found = tonumber(string.match(entry[1], '-(%d+)$')) - from + 1
    end
    if #chunk < 16 then
      break
    end
    start = '(' .. chunk[#chunk][1]
  end
end
-- Whether the log still exists where the session says it holds events: a
-- log evicted under maxmemory-policy allkeys-* must not read as empty.
local log_lost = tonumber(s.n) > 0 and redis.call('EXISTS', log_key) == 0
return {'ok', now, flat, entries, log_lost and 1 or 0, abandoned_now and 1 or 0}
