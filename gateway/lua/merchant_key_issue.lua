-- Issue a merchant signing key: store its encrypted secret as a new active key.
-- Guarantees: a merchant never has more than ARGV[4] active keys (two, so a
-- rotation can overlap the old key and the new); a key id is never reused and
-- a key is never overwritten; the key list the caller read (and counted
-- against) is still the merchant's whole list, else nothing is written and the
-- reply is 'stale' so the caller reads again.
-- KEYS[1] merchant hash  KEYS[2] merchant's key id set  KEYS[3] new key hash
-- KEYS[4..] hash of every existing key, in the order of ARGV[6..]
-- ARGV[1] new key id  ARGV[2] keyring key id  ARGV[3] encrypted secret
-- ARGV[4] active keys max  ARGV[5] now (ms)  ARGV[6..] every existing key id
-- Returns {'ok'}, {'stale'}, {'unknown_merchant'} or {'too_many_active_keys', active count}.
local existing = #KEYS - 3
if #ARGV ~= 5 + existing then return {'invalid_arguments'} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_merchant'} end
if redis.call('SCARD', KEYS[2]) ~= existing
    or redis.call('EXISTS', KEYS[3]) == 1
    or redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return {'stale'}
end
local active = 0
for i = 1, existing do
  -- Same count and every id a member: the caller's list is the whole set.
  if redis.call('SISMEMBER', KEYS[2], ARGV[5 + i]) == 0 then return {'stale'} end
  if redis.call('HGET', KEYS[3 + i], 'status') == 'active' then active = active + 1 end
end
if active >= tonumber(ARGV[4]) then return {'too_many_active_keys', active} end
redis.call('HSET', KEYS[3], 'status', 'active', 'keyring_key_id', ARGV[2], 'secret', ARGV[3],
  'created_ms', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
return {'ok'}
