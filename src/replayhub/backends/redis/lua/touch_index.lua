-- Cluster only (loaded on its own, without _common.lua): the namespace index
-- lives in a slot of its own there, so the client keeps it after each claim,
-- renewal and finish. KEYS[1] the index; ARGV: session id, keep ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
