-- Add a store to a registered merchant.
-- Guarantees: a store id is added once (an existing store keeps its name); a
-- merchant never has more than ARGV[3] stores; the store hash and the
-- merchant's store set are written together.
-- KEYS[1] merchant hash  KEYS[2] store hash  KEYS[3] merchant's store id set
-- ARGV[1] store id  ARGV[2] store name  ARGV[3] stores max  ARGV[4] now (ms)
-- Returns {'ok'}, {'duplicate'}, {'unknown_merchant'} or {'too_many_stores'}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_merchant'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'duplicate'} end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return {'too_many_stores'} end
redis.call('HSET', KEYS[2], 'name', ARGV[2], 'created_ms', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
return {'ok'}
