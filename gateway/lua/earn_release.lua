-- An affiliate's earning refused by its member step (no such member): give
-- back what earn_claim.lua took, so the affiliate may send it again, under the
-- same key or reference, once the reason is gone.
-- Guarantees: only the claim of this request and earning id is released, and
-- only while unfinished, so a reservation is given back at most once.
-- KEYS[1] idempotency key  KEYS[2] budget  KEYS[3] affiliate reference
-- ARGV[1] request hash  ARGV[2] earning id  ARGV[3] points
-- Returns {'released'} or {'kept'}.
local stored = redis.call('HMGET', KEYS[1], 'request_hash', 'state', 'earning_id')
if stored[1] ~= ARGV[1] or stored[2] ~= 'claimed' or stored[3] ~= ARGV[2] then return {'kept'} end
redis.call('HINCRBY', KEYS[2], 'issued_points', '-' .. ARGV[3])
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
redis.call('DEL', KEYS[1])
return {'released'}
