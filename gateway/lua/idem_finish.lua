-- Store the response of a request whose work an earlier script did, under its
-- idempotency key, so every retry gets these exact bytes.
-- Guarantees: only the request that claimed the key can finish it, once.
-- KEYS[1] idempotency key   ARGV[1] request hash  ARGV[2] response  ARGV[3] ttl s  ARGV[4] now ms
if redis.call('HGET', KEYS[1], 'request_hash') ~= ARGV[1] then return {'idempotency_mismatch'} end
if redis.call('HGET', KEYS[1], 'state') == 'done' then return {'replay', redis.call('HGET', KEYS[1], 'response')} end
finish_request(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return {'done', ARGV[2]}
