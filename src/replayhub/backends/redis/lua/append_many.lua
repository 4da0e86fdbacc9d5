-- The appends of several sessions in one call (not on a Redis Cluster,
-- where sessions live in different slots). KEYS: each session's hash and
-- log, then the index. ARGV: for each session in turn, the six arguments of
-- append.lua. Returns each session's reply, in order.
local replies = {}
for i = 1, (#KEYS - 1) / 2 do
  local at = (i - 1) * 6
  select_session(i, ARGV[at + 1])
  replies[i] = append(ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5], ARGV[at + 6])
end
return replies
