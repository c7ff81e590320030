-- Cancel (void) an approved payment on its business day: its points go back
-- to the member (into the lots they came from), its coupons are restored with
-- their discounts back to their funders, and all of it comes off the
-- merchant's payable.
-- Guarantees: a payment is cancelled at most once, only by its own merchant,
-- only from the states the payment table allows, only on the same business
-- day; balance, coupons, payment state, batch, journal and the member's event
-- change together.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] terminal batch  KEYS[5] terminal batch log
-- Member scope: KEYS[6..12] the member's wallet (keyspace.wallet_keys)  KEYS[13] payment
--   KEYS[14..] the payment's coupons, in the order of its `coupons`
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] payment id  ARGV[7] business day now
-- ARGV[8] states a cancel is allowed from (space separated)
-- Returns {'done', payment JSON}, {'replay', payment JSON} or {error code, detail}.
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end
local w = wallet_keys(6)
local payment = redis.call('HMGET', KEYS[13], 'merchant_id', 'state', 'business_day', 'member_id', 'amount',
  'store_id', 'currency')
if payment[1] ~= ARGV[5] then return {'payment_not_found'} end
if not state_in(payment[2], ARGV[8]) then return {'invalid_state', payment[2]} end
if payment[3] ~= ARGV[7] then return {'cancel_window_closed', payment[3]} end

local member_id, amount = payment[4], tonumber(payment[5])
local postings, points = payment_give_back(w, KEYS[13], 14, amount, amount, true)
if #postings > 0 then
  wallet_entry(w, member_id, 'cancel:' .. ARGV[6], 'cancel', postings,
    payment_meta(KEYS[13], payment[5]), ARGV[4], points, 0,
    {payment_id = ARGV[6], merchant_id = ARGV[5], store_id = payment[6], amount = payment[5], currency = payment[7]})
end
lots_expire(w, member_id, ARGV[4])
redis.call('HSET', KEYS[13], 'state', 'cancelled', 'cancelled_ms', ARGV[4],
  'balance_after', redis.call('HGET', w.member, 'available'))
batch_record(KEYS[4], KEYS[5], 'void', ARGV[6], payment[5])
local response = hash_json(KEYS[13])
finish_request(KEYS[3], ARGV[2], response, ARGV[3], ARGV[4])
return {'done', response}
