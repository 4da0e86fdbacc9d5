-- Renew the selected session's lease: the body of renew and renew_many.
-- Returns {'ok', cancel flag, retention ms} or {'lost', why}.

-- What a renewal reads of the session hash (see load).
local RENEW_FIELDS = {'g', 'st', 'l', 'r', 'x'}

local function renew(generation, lease_ms)
  local now, s, lost = owned(generation, RENEW_FIELDS)
  if lost then
    return {'lost', lost}
  end
  local lease = tonumber(lease_ms)
  redis.call('HSET', session_key, 'l', now + lease, 't', lease)
  expire_in(lease + tonumber(s.r))
  touch_index(now, lease + tonumber(s.r))
  return {'ok', s.x, s.r}
end
