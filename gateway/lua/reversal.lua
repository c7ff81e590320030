-- Reverse by the terminal's own order reference, for a sale whose answer
-- never arrived. Marks the order reference reversed, so a sale arriving
-- later with it declines ('reversal wins'), and gives back whatever the
-- payment still holds (all of it, less any refunds) and restores its coupons.
-- Guarantees: the caller read the order's payment id before; if a sale
-- slipped in since, the script answers 'retry' and changes nothing. Points
-- go back at most once per payment.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] order reference  KEYS[5] terminal batch  KEYS[6] terminal batch log
-- Member scope (only when the order has a payment): KEYS[7..13] the member's wallet
--   (keyspace.wallet_keys)  KEYS[14] payment  KEYS[15..] the payment's coupons, in the order of its `coupons`
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] order ref  ARGV[7] payment id read before ('' if none)
-- ARGV[8] states a reversal gives points back from  ARGV[9] store id  ARGV[10] terminal id
-- Returns {'done', reversal JSON}, {'replay', reversal JSON}, {'retry'} or {error code}.
local stored = redis.call('HMGET', KEYS[3], 'request_hash', 'state')
if not stored[1] then
  -- Only a fresh request checks the order; a retry is answered by claim_request.
  if (redis.call('HGET', KEYS[4], 'payment_id') or '') ~= ARGV[7] then return {'retry'} end
end
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end

redis.call('HSET', KEYS[4], 'reversed', '1', 'reversed_ms', ARGV[4])
local outcome = 'recorded'
local payment_json = false
if ARGV[7] ~= '' then
  local w = wallet_keys(7)
  local payment = redis.call('HMGET', KEYS[14], 'state', 'member_id', 'amount', 'refunded_amount', 'store_id', 'currency')
  outcome = 'nothing_to_reverse'
  local account = redis.call('HGET', KEYS[14], 'account') or ''
  if state_in(payment[1], ARGV[8]) and (payment[2] or '') == '' and string.sub(account, 1, 8) == 'partner:' then
    -- A partner member's payment, already reversed at the partner by the caller:
    -- what the merchant still holds goes back to the partner's clearing account.
    local left = tonumber(payment[3]) - tonumber(payment[4])
    if left > 0 then
      journal_append(KEYS[8], KEYS[9], 'reversal:' .. ARGV[7], 'reversal', {
        posting('merchant:' .. ARGV[5], redis.call('HGET', KEYS[14], 'unit'), '-', int_text(left)),
        posting(account, redis.call('HGET', KEYS[14], 'unit'), '', int_text(left)),
      }, payment_meta(KEYS[14], int_text(left)), ARGV[4])
    end
    redis.call('HSET', KEYS[14], 'state', 'reversed', 'reversed_ms', ARGV[4])
    batch_record(KEYS[5], KEYS[6], 'void', ARGV[7], int_text(left))
    outcome = 'reversed'
  elseif state_in(payment[1], ARGV[8]) then
    local paid, refunded = tonumber(payment[3]), tonumber(payment[4])
    local postings, points = payment_give_back(w, KEYS[14], 15, paid - refunded, paid, true)
    if #postings > 0 then
      wallet_entry(w, payment[2], 'reversal:' .. ARGV[7], 'reversal', postings,
        payment_meta(KEYS[14], int_text(paid - refunded)), ARGV[4], points, 0,
        {payment_id = ARGV[7], merchant_id = ARGV[5], store_id = payment[5], order_ref = ARGV[6],
          amount = int_text(paid - refunded), currency = payment[6]})
    end
    lots_expire(w, payment[2], ARGV[4])
    redis.call('HSET', KEYS[14], 'state', 'reversed', 'reversed_ms', ARGV[4],
      'balance_after', redis.call('HGET', w.member, 'available'))
    batch_record(KEYS[5], KEYS[6], 'void', ARGV[7], int_text(paid - refunded))
    outcome = 'reversed'
  end
  payment_json = hash_json(KEYS[14])
end
local response = cjson.encode({order_ref = ARGV[6], outcome = outcome, payment = payment_json,
  store_id = ARGV[9], terminal_id = ARGV[10], created_ms = ARGV[4]})
finish_request(KEYS[3], ARGV[2], response, ARGV[3], ARGV[4])
return {'done', response}
