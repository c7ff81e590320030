-- Burn the nonce of a signed read (writes burn theirs in their own script).
-- Guarantees: the nonce is burned whatever the answer, so a request is seen
-- once; the signing key's status is read from storage in the same step, so a
-- revoked key reads nothing on any process, whatever the process caches.
-- KEYS[1] signing key hash  KEYS[2] nonce
-- ARGV[1] nonce ttl s
-- Returns {'ok'}, {'unknown_key'} (a key that is not active) or {'nonce_replayed'}.
local fresh = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1])
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return {'unknown_key'} end
if not fresh then return {'nonce_replayed'} end
return {'ok'}
