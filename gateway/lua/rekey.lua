-- Replace a device's encrypted secret with the same secret encrypted under
-- the new active key, only if nobody changed it in between (compare and set).
-- Verification never stops: the old key stays in the keyring until no secret
-- uses it.
-- KEYS[1] device hash  ARGV[1] old encrypted secret  ARGV[2] new key id
-- ARGV[3] new encrypted secret
if redis.call('HGET', KEYS[1], 'secret') ~= ARGV[1] then return {'changed'} end
redis.call('HSET', KEYS[1], 'key_id', ARGV[2], 'secret', ARGV[3])
return {'ok'}
