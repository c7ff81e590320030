-- Expire a member's lots whose expiry has passed (the scheduled job's step;
-- every movement that spends or gives back does the same first or last).
-- Guarantees: each lot's remaining points expire once, each as its own
-- journal entry and member event; points without expiry are never touched.
-- KEYS[1..7] the member's wallet (keyspace.wallet_keys)
-- ARGV[1] member id  ARGV[2] now (ms)
-- Returns {'ok', points expired}.
local w = wallet_keys(1)
if redis.call('EXISTS', w.member) == 0 then
  -- A due entry of a wallet that is gone: drop the index entries.
  redis.call('ZREMRANGEBYLEX', w.due, '[' .. ARGV[1] .. ' ', '[' .. ARGV[1] .. ' \255')
  return {'ok', 0}
end
return {'ok', lots_expire(w, ARGV[1], ARGV[2])}
