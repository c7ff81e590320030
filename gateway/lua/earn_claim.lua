-- An affiliate's earning, step 1 of 3, in the affiliate's scope: claim the
-- request and reserve the points against the affiliate's budget. Step 2
-- (earn_move.lua) credits the member in the member's scope, step 3
-- (idem_finish.lua) stores the answer; on one Redis and on a cluster alike.
-- Guarantees: the signing key is active and the nonce is used once; one
-- idempotency key is bound to one request and one earning id; an affiliate
-- reference is taken by one earning; the affiliate never reserves more than
-- its budget. A retry or a concurrent duplicate of a claimed, unfinished
-- request gets the claimed earning id and goes on with it (the credit is
-- idempotent by that id), so every attempt ends with the same answer.
-- KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key  KEYS[4] budget
-- KEYS[5] affiliate reference
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] points  ARGV[6] a new earning id (used unless the request claimed one)
-- Returns {'claimed', earning id}, {'replay', earning JSON} or {error code, detail}.
if redis.call('HGET', KEYS[2], 'status') ~= 'active' then return {'unknown_key'} end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {'nonce_replayed'} end
local stored = redis.call('HMGET', KEYS[3], 'request_hash', 'state', 'response', 'earning_id')
if stored[1] then
  if stored[1] ~= ARGV[2] then return {'idempotency_mismatch'} end
  if stored[2] == 'done' then return {'replay', stored[3]} end
  if stored[2] ~= 'claimed' or not stored[4] then return {'idempotency_in_progress'} end
  return {'claimed', stored[4]}
end
local points = parse_amount(ARGV[5])
if not points then return {'invalid_amount'} end
local existing = redis.call('GET', KEYS[5])
if existing then return {'affiliate_ref_in_use', existing} end
local budget = redis.call('HMGET', KEYS[4], 'budget_points', 'issued_points')
local issued = tonumber(budget[2] or '0')
if issued + points > tonumber(budget[1] or '0') then
  return {'over_budget', string.format('%d', tonumber(budget[1] or '0') - issued)}
end

redis.call('HINCRBY', KEYS[4], 'issued_points', ARGV[5])
redis.call('SET', KEYS[5], ARGV[6])
redis.call('HSET', KEYS[3], 'request_hash', ARGV[2], 'state', 'claimed', 'earning_id', ARGV[6], 'created_ms', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {'claimed', ARGV[6]}
