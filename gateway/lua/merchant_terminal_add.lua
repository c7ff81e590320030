-- Add a terminal to one of a merchant's stores.
-- Guarantees: only a store the merchant has gets terminals; a terminal id is
-- added once; a store never has more than ARGV[3] terminals.
-- KEYS[1] merchant hash  KEYS[2] merchant's store id set  KEYS[3] the store's terminal id set
-- ARGV[1] store id  ARGV[2] terminal id  ARGV[3] terminals max
-- Returns {'ok'}, {'duplicate'}, {'unknown_merchant'}, {'unknown_store'} or {'too_many_terminals'}.
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_merchant'} end
  return {'unknown_store'}
end
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return {'duplicate'} end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return {'too_many_terminals'} end
redis.call('SADD', KEYS[3], ARGV[2])
return {'ok'}
