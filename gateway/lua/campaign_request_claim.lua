-- Claim a signed campaign request (an operator's or a partner network's) in
-- the caller's scope before its work is done in another scope.
-- Guarantees: the signing key is still active; the nonce is used once; one
-- idempotency key is bound to one request: a finished one replays its stored
-- response, a running one answers in progress until its lease ends, and after
-- that a retry resumes it (the work that follows is safe to run again).
-- KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] lease ms: how long the claiming request may take before a retry resumes it
-- Returns {'claimed'}, {'resumed'}, {'replay', response} or {error code}.
if redis.call('HGET', KEYS[2], 'status') ~= 'active' then return {'unknown_key'} end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {'nonce_replayed'} end
local stored = redis.call('HMGET', KEYS[3], 'request_hash', 'state', 'response', 'lease_ms')
if stored[1] then
  if stored[1] ~= ARGV[2] then return {'idempotency_mismatch'} end
  if stored[2] == 'done' then return {'replay', stored[3]} end
  if tonumber(stored[4] or '0') > tonumber(ARGV[4]) then return {'idempotency_in_progress'} end
  redis.call('HSET', KEYS[3], 'lease_ms', tonumber(ARGV[4]) + tonumber(ARGV[5]))
  return {'resumed'}
end
redis.call('HSET', KEYS[3], 'request_hash', ARGV[2], 'state', 'pending', 'created_ms', ARGV[4],
  'lease_ms', tonumber(ARGV[4]) + tonumber(ARGV[5]))
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {'claimed'}
