-- A terminal's sale with a partner network's code, phase one: claim the
-- request and place the payment pending before the partner is asked.
-- Guarantees: one pending payment per idempotency key (a retry finds it and
-- resumes it); an order reference with a live sale, or one already reversed,
-- cannot start another; nothing moves here.
-- KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key  KEYS[4] order reference
-- KEYS[5] payment
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] payment id  ARGV[6] merchant id  ARGV[7] store id  ARGV[8] terminal id  ARGV[9] order ref
-- ARGV[10] amount  ARGV[11] currency  ARGV[12] business day  ARGV[13] partner account  ARGV[14] unit
-- ARGV[15] slot  ARGV[16] lease ms: how long the claiming request may take before a retry resumes it
-- Returns {'claimed', payment id}, {'claimed_reversed', payment id} (decline it: the order was
-- reversed), {'pending', payment id} (a retry: resume it),
-- {'replay', response JSON}, or {error code}.
if redis.call('HGET', KEYS[2], 'status') ~= 'active' then return {'unknown_key'} end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {'nonce_replayed'} end
local stored = redis.call('HMGET', KEYS[3], 'request_hash', 'state', 'payment_id', 'response')
if stored[1] then
  if stored[1] ~= ARGV[2] then return {'idempotency_mismatch'} end
  if stored[2] == 'done' then return {'replay', stored[4]} end
  -- The first request is still asking the partner: a duplicate waits (retryable).
  -- Past its lease it is presumed dead, and this retry resumes the payment.
  if tonumber(redis.call('HGET', KEYS[3], 'lease_ms') or '0') > tonumber(ARGV[4]) then
    return {'idempotency_in_progress'}
  end
  redis.call('HSET', KEYS[3], 'lease_ms', tonumber(ARGV[4]) + tonumber(ARGV[16]))
  return {'pending', stored[3]}
end
local order = redis.call('HMGET', KEYS[4], 'payment_id', 'state', 'reversed')
if order[1] and order[2] ~= 'declined' and order[3] ~= '1' then return {'order_ref_in_use'} end

redis.call('HSET', KEYS[5], 'payment_id', ARGV[5], 'state', 'pending', 'decline_code', '',
  'merchant_id', ARGV[6], 'store_id', ARGV[7], 'terminal_id', ARGV[8], 'order_ref', ARGV[9],
  'amount', ARGV[10], 'currency', ARGV[11], 'points', 0, 'unit', ARGV[14], 'member_id', '',
  'slot', ARGV[15], 'approval_code', '', 'business_day', ARGV[12], 'created_ms', ARGV[4],
  'refunded_amount', 0, 'refunded_points', 0, 'balance_after', '', 'account', ARGV[13],
  'quote_id', '', 'fx_rate', '')
redis.call('HSET', KEYS[4], 'payment_id', ARGV[5], 'state', 'pending')
redis.call('HSET', KEYS[3], 'request_hash', ARGV[2], 'state', 'pending', 'payment_id', ARGV[5], 'created_ms', ARGV[4],
  'lease_ms', tonumber(ARGV[4]) + tonumber(ARGV[16]))
redis.call('EXPIRE', KEYS[3], ARGV[3])
-- A reversal recorded before this sale wins: the caller declines it at once.
if order[3] == '1' then return {'claimed_reversed', ARGV[5]} end
return {'claimed', ARGV[5]}
