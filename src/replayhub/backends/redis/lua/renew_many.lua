-- The lease renewals of several sessions in one call (not on a Redis
-- Cluster, where sessions live in different slots). KEYS: each session's
-- hash and log, then the index. ARGV[1]: the lease ttl ms, then each
-- session's id and generation in turn. Returns each session's reply, in order.
local replies = {}
for i = 1, (#KEYS - 1) / 2 do
  select_session(i, ARGV[2 * i])
  replies[i] = renew(ARGV[2 * i + 1], ARGV[1])
end
return replies
