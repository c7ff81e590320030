-- Store a new operator console token (as its SHA-256) and list it under its
-- operator.
-- Guarantees: the token, its expiry and its place in the operator's set are
-- written together, so revoking the operator's tokens always finds it, and
-- the token's key expires with the token.
-- KEYS[1] token hash key  KEYS[2] operator's set of token hashes
-- ARGV[1] operator id  ARGV[2] expires (epoch ms)  ARGV[3] the token's SHA-256
-- Returns {'ok'}.
redis.call('HSET', KEYS[1], 'operator_id', ARGV[1], 'expires_ms', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return {'ok'}
