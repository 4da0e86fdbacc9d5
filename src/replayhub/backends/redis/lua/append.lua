-- ARGV: session id, generation, first seq, event count, metadata JSON or '',
-- the packed batch (_keys.encode_batch).
return append(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
