-- ARGV: session id, generation, lease ttl ms.
return renew(ARGV[2], ARGV[3])
