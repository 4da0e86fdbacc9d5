-- Store a write batch of the selected session: the body of append and
-- append_many. Idempotent: a retried batch whose events are already stored
-- is skipped (a batch is stored whole or not at all, so a retry never lands
-- part-way). Returns {'ok'}, {'lost', why}, {'refused', events stored} or
-- {'gap', events stored} when the log no longer holds them.
local INDEX_EVERY_MS = 1000
-- What an append reads of the session hash (see load).
local APPEND_FIELDS = {'g', 'st', 'n', 'l', 't', 'r', 'i'}

local function append(generation, first_seq, count_text, metadata, batch)
  local now, s, lost = owned(generation, APPEND_FIELDS)
  if lost then
    return {'lost', lost}
  end
  local last, first, count = tonumber(s.n), tonumber(first_seq), tonumber(count_text)
  -- A gap, or a part-way overlap: the client says which.
  if count > 0 and (first > last + 1 or (first <= last and first + count - 1 > last)) then
    return {'refused', last}
  end
  local stored = count > 0 and first == last + 1
  if stored then
    local new_log = last == 0
    local id = s.g .. '-' .. (first + count - 1)
    -- The log must still end where the session says it does. A log key
    -- that was evicted (maxmemory-policy allkeys-*) would be recreated by
    -- a plain XADD, holding a tail that reads as a whole log: past the
    -- first batch, NOMKSTREAM writes nothing where there is no log (a nil
    -- reply). Its being there is enough: only these scripts write it, in
    -- step with the hash, and eviction takes whole keys. (One command, not
    -- EXISTS then XADD: this runs per model token.)
    if new_log then
      redis.call('XADD', log_key, id, 'b', batch)
    elseif not redis.call('XADD', log_key, 'NOMKSTREAM', id, 'b', batch) then
      return {'gap', last}
    end
    last = first + count - 1
    -- A new log lives as long as its session's hash; from then on each
    -- renewal extends both (expire_in), not each write.
    if new_log then
      redis.call('PEXPIRE', log_key, tonumber(s.t) + tonumber(s.r))
    end
  end
  -- The index ranks sessions by their last change, so a session being
  -- written moves up; but at most once a second (field i): the index
  -- update was a quarter of this script's time, paid per model token.
  if now - tonumber(s.i or 0) >= INDEX_EVERY_MS then
    redis.call('HSET', session_key, 'n', last, 'u', now, 'i', now)
    touch_index(now, tonumber(s.t) + tonumber(s.r))
  else
    redis.call('HSET', session_key, 'n', last, 'u', now)
  end
  if metadata ~= '' then
    redis.call('HSET', session_key, 'm', metadata)
  end
  -- Readers elsewhere take a new batch from the notification itself (the
  -- entry's id, a space, its value) and need not read it back.
  if stored and metadata == '' then
    publish(change_channel, s.g .. '-' .. last .. ' ' .. batch)
  else
    publish(change_channel, s.g .. '-' .. last)
  end
  return {'ok'}
end
