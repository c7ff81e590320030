-- A terminal's sale with a partner network's code, phase two: the partner's
-- answer (or our reversal at the partner) decides the pending payment.
-- Guarantees: a pending payment is decided once; an approval credits the
-- merchant's payable against the partner's clearing account in one journal
-- entry; the stored response is what every retry of the terminal gets.
-- KEYS[1] idempotency key  KEYS[2] order reference  KEYS[3] terminal batch
-- KEYS[4] terminal batch log  KEYS[5] payment  KEYS[6] journal  KEYS[7] entry index
-- ARGV[1] 'approved' or 'declined'  ARGV[2] decline code  ARGV[3] approval code
-- ARGV[4] partner's payment id  ARGV[5] partner's points debited  ARGV[6] partner's FX rate
-- ARGV[7] now ms  ARGV[8] idempotency ttl s  ARGV[9] partner's FX quote id
-- ARGV[10] the partner's coupon discount (for the receipt; the partner funds it)  ARGV[11] its coupons JSON
-- Returns {'done', payment JSON} (also when an earlier call decided it).
local payment = redis.call('HMGET', KEYS[5], 'state', 'payment_id', 'amount', 'unit', 'account', 'merchant_id')
if payment[1] ~= 'pending' then
  return {'done', redis.call('HGET', KEYS[1], 'response') or hash_json(KEYS[5])}
end
if ARGV[1] == 'approved' then
  local amount = parse_amount(payment[3])
  if not amount then return redis.error_reply('bad amount on payment ' .. payment[2]) end
  journal_append(KEYS[6], KEYS[7], 'out:' .. payment[2], 'partner_payment', {
    posting(payment[5], payment[4], '-', payment[3]),
    posting('merchant:' .. payment[6], payment[4], '', payment[3]),
  }, payment_meta(KEYS[5], payment[3], {partner_payment_id = ARGV[4], partner_points = ARGV[5]}), ARGV[7])
  redis.call('HSET', KEYS[5], 'state', 'approved', 'points', payment[3], 'approval_code', ARGV[3],
    'partner_payment_id', ARGV[4], 'partner_points', ARGV[5], 'fx_rate', ARGV[6], 'quote_id', ARGV[9],
    'discount', ARGV[10], 'partner_coupons', ARGV[11])
  redis.call('HSET', KEYS[2], 'state', 'taken')
  batch_record(KEYS[3], KEYS[4], 'sale', payment[2], payment[3])
else
  redis.call('HSET', KEYS[5], 'state', 'declined', 'decline_code', ARGV[2])
  redis.call('HSET', KEYS[2], 'state', 'declined')
end
local response = hash_json(KEYS[5])
local request_hash = redis.call('HGET', KEYS[1], 'request_hash')
if request_hash then finish_request(KEYS[1], request_hash, response, ARGV[8], ARGV[7]) end
return {'done', response}
