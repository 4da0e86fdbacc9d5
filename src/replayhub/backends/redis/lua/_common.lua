-- Shared by every script (prepended when loaded, after a line that sets
-- CLUSTER). KEYS[1] session hash, KEYS[2] event log stream, KEYS[3] the
-- namespace index (not on a Redis Cluster: it lives in another slot, and the
-- client keeps it). ARGV[1] is the session id (the index member). A script
-- acting on several sessions (append_many, renew_many) has each session's
-- hash and log in turn, then the index, its own ARGV, and selects each
-- session with select_session.
-- Hash fields: g generation, st state, n events stored, m metadata JSON,
-- e error, et error type, c created ms, u updated ms, l lease deadline ms, t lease ttl ms,
-- r retention ms, x cancel flag, i when an append last touched the index
-- (ms), pg/ps/pe/pm/pt/pn the previous generation's number, state, error,
-- metadata, error type and event count.
local session_key, log_key, index_key, session_id, change_channel, claim_channel

-- Make the `i`th session of the call the one the functions below act on.
local function select_session(i, id)
  session_key, log_key = KEYS[2 * i - 1], KEYS[2 * i]
  index_key = (not CLUSTER) and KEYS[#KEYS] or nil
  session_id = id
  local base = string.sub(session_key, 1, -3)
  change_channel, claim_channel = base .. ':n', base .. ':c'
end
select_session(1, ARGV[1])

-- On a cluster, sharded Pub/Sub keeps a session's messages on its shard.
local function publish(channel, message)
  redis.call(CLUSTER and 'SPUBLISH' or 'PUBLISH', channel, message)
end

-- Read once per call: a script runs as one step, and append_many and
-- renew_many would otherwise ask for it per session.
local script_now

local function now_ms()
  if script_now == nil then
    local t = redis.call('TIME')
    script_now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return script_now
end

local function expire_in(ms)
  redis.call('PEXPIRE', session_key, ms)
  redis.call('PEXPIRE', log_key, ms)
end

-- The index lives as long as the longest-lived session it lists, so it
-- goes away with them; members of expired sessions are dropped when listed.
local function touch_index(now, keep_ms)
  if CLUSTER then
    return
  end
  redis.call('ZADD', index_key, now, session_id)
  if redis.call('PTTL', index_key) < keep_ms then
    redis.call('PEXPIRE', index_key, keep_ms)
  end
end

-- The session as it stands at `now`, or nil: every field (and the hash as
-- HGETALL gives it), or only `fields`, whose first must be 'g' (an append
-- reads a few, per model token, and not the metadata, which may be large).
-- A live session whose lease has expired is stored as abandoned here, so
-- every reader sees the same state.
local abandoned_now = false  -- whether load() just stored an abandonment

local function load(now, fields)
  local s, flat = {}, nil
  if fields then
    local values = redis.call('HMGET', session_key, unpack(fields))
    if not values[1] then  -- every session has a generation
      return nil, nil
    end
    for i = 1, #fields do
      if values[i] then  -- (false for a field the hash lacks: left nil, as below)
        s[fields[i]] = values[i]
      end
    end
  else
    flat = redis.call('HGETALL', session_key)
    if #flat == 0 then
      return nil, flat
    end
    for i = 1, #flat, 2 do
      s[flat[i]] = flat[i + 1]
    end
  end
  if s.st == 'live' and tonumber(s.l) <= now then
    s.st, s.u = 'abandoned', tostring(now)
    abandoned_now = true
    -- The expiry first, as in finish.lua: a full Redis still takes the write.
    expire_in(tonumber(s.r))
    redis.call('HSET', session_key, 'st', s.st, 'u', s.u)
    touch_index(now, tonumber(s.r))
    publish(change_channel, 'end')
    if flat then
      flat = redis.call('HGETALL', session_key)
    end
  end
  return s, flat
end

-- Why the producer of `generation` may not write, or nil if it may.
local function fence(s, generation)
  if s == nil then
    return 'removed'
  end
  if s.g ~= generation then
    return 'claimed again by generation ' .. s.g
  end
  if s.st ~= 'live' then
    return 'already ' .. s.st
  end
  return nil
end

-- The current time, the session (every field, or `fields`: see load), and
-- why the producer of `generation` may not write to it (nil if it may).
local function owned(generation, fields)
  local now = now_ms()
  local s = load(now, fields)
  return now, s, fence(s, generation)
end
