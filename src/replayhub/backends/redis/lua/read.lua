-- ARGV: session id, cursor generation or '', cursor seq, most events to
-- return, and from how many events on a page is handed off (0: never).
-- Returns the session, the log entries (one packed write batch each) that
-- hold the events after the cursor, 1 if the log is gone, 1 if this read
-- found the lease expired and stored the abandonment, in one atomic
-- snapshot, and 1 if the entries were handed off instead: the client reads
-- a page that long itself, with XRANGE (stored events never change), since
-- Lua takes in every entry a script reads (about 3.6 us an entry).
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
local entries = {}
-- Whether the log still exists where the session says it holds events: a
-- log evicted under maxmemory-policy allkeys-* must not read as empty.
local log_lost = tonumber(s.n) > 0 and redis.call('EXISTS', log_key) == 0
local hand_off_at = tonumber(ARGV[5])
if from ~= nil and hand_off_at > 0 and not log_lost
    and math.min(limit, tonumber(s.n) - from + 1) >= hand_off_at then
  return {'ok', now, flat, entries, 0, abandoned_now and 1 or 0, 1}
end
if from ~= nil and limit > 0 and from <= tonumber(s.n) then
  -- An entry's id is <generation>-<the seq of its last event>, so the page's
  -- entries are one id range, plus the entry holding the page's last event
  -- when a batch runs past it: nothing more (a batch can hold 1,000 events).
  local last = from + limit - 1
  entries = redis.call('XRANGE', log_key, s.g .. '-' .. from, s.g .. '-' .. last)
  local ends_at = #entries > 0 and tonumber(string.match(entries[#entries][1], '-(%d+)$')) or 0
  if ends_at < last and last < tonumber(s.n) then
    local straddling = redis.call('XRANGE', log_key, s.g .. '-' .. (last + 1), '+', 'COUNT', 1)
    if #straddling > 0 then
      entries[#entries + 1] = straddling[1]
    end
  end
end
return {'ok', now, flat, entries, log_lost and 1 or 0, abandoned_now and 1 or 0, 0}
