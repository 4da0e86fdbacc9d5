-- The appends of several sessions in one call (not on a Redis Cluster,
-- where sessions live in different slots). KEYS: each session's hash and
-- log, then the index. ARGV[1]: the appends in the same order, each a line
-- of six numbers (the session id's byte length, generation, first seq,
-- event count, the metadata's and the packed batch's byte lengths), then
-- the id, the metadata ('' for none) and the batch, back to back: one
-- argument for the call rather than six per session, which the client would
-- encode one by one. Returns each session's reply, in order, or 'ok' when
-- every one is {'ok'} (nearly always: one word for the client to parse
-- rather than an array per session).
local replies, appends, at, all_ok = {}, ARGV[1], 1, true
for i = 1, (#KEYS - 1) / 2 do
  local _, stop, id_length, generation, first_seq, count, metadata_length, batch_length =
    string.find(appends, '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+)\n', at)
  local id_end = stop + tonumber(id_length)
  local metadata_end = id_end + tonumber(metadata_length)
  local batch_end = metadata_end + tonumber(batch_length)
  select_session(i, string.sub(appends, stop + 1, id_end))
  replies[i] = append(
    generation,
    first_seq,
    count,
    string.sub(appends, id_end + 1, metadata_end),
    string.sub(appends, metadata_end + 1, batch_end)
  )
  all_ok = all_ok and replies[i][1] == 'ok'
  at = batch_end + 1
end
if all_ok then
  return 'ok'
end
return replies
