-- Cancel or refund a payment made by a partner network's member, after the
-- partner has given its member the points back: our side moves the amount
-- off the merchant's payable and back onto the partner's clearing account.
-- Guarantees: once per idempotency key; never more than was paid; only the
-- payment's own merchant; a cancel only on the payment's business day.
-- KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key  KEYS[4] terminal batch
-- KEYS[5] terminal batch log  KEYS[6] payment  KEYS[7] journal  KEYS[8] entry index
-- KEYS[9] payment's refund list
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] payment id  ARGV[7] 'cancel' or 'refund'  ARGV[8] amount (refund)
-- ARGV[9] allowed states  ARGV[10] business day now  ARGV[11] refund id  ARGV[12] reason
-- ARGV[13] partner's points returned to its member
-- Returns {'done', JSON}, {'replay', JSON} or {error code, detail}.
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end
local payment = redis.call('HMGET', KEYS[6], 'merchant_id', 'state', 'amount', 'refunded_amount', 'unit',
  'account', 'business_day')
if payment[1] ~= ARGV[5] then return {'payment_not_found'} end
if not state_in(payment[2], ARGV[9]) then return {'invalid_state', payment[2]} end
local paid, refunded = tonumber(payment[3]), tonumber(payment[4])
local amount_text = payment[3]
if ARGV[7] == 'cancel' then
  if payment[7] ~= ARGV[10] then return {'cancel_window_closed', payment[7]} end
else
  local amount = parse_amount(ARGV[8])
  if not amount then return {'invalid_amount'} end
  if refunded + amount > paid then return {'refund_exceeds_payment', string.format('%d', paid - refunded)} end
  amount_text = ARGV[8]
end
local entry = ARGV[7] .. ':' .. ARGV[6]
if ARGV[7] == 'refund' then entry = 'refund:' .. ARGV[11] end
journal_append(KEYS[7], KEYS[8], entry, ARGV[7], {
  posting('merchant:' .. ARGV[5], payment[5], '-', amount_text),
  posting(payment[6], payment[5], '', amount_text),
}, payment_meta(KEYS[6], amount_text, {partner_points = ARGV[13]}), ARGV[4])
local response
if ARGV[7] == 'cancel' then
  redis.call('HSET', KEYS[6], 'state', 'cancelled', 'cancelled_ms', ARGV[4])
  batch_record(KEYS[4], KEYS[5], 'void', ARGV[6], amount_text)
  response = hash_json(KEYS[6])
else
  local total = refunded + tonumber(amount_text)
  local state = 'partially_refunded'
  if total == paid then state = 'refunded' end
  redis.call('HSET', KEYS[6], 'state', state, 'refunded_amount', string.format('%d', total),
    'refunded_points', string.format('%d', total))
  local refund = cjson.encode({refund_id = ARGV[11], payment_id = ARGV[6], amount = amount_text,
    points = amount_text, reason = ARGV[12], created_ms = ARGV[4], balance_after = ''})
  redis.call('RPUSH', KEYS[9], refund)
  batch_record(KEYS[4], KEYS[5], 'refund', ARGV[6], amount_text)
  response = cjson.encode({refund = refund, payment = hash_json(KEYS[6])})
end
finish_request(KEYS[3], ARGV[2], response, ARGV[3], ARGV[4])
return {'done', response}
