-- A sale: claim the request, verify and burn the member's code, check limits
-- and balance, debit, record the payment and its journal entry, and store the
-- response under the idempotency key. One script, one round trip: the hot path.
-- Guarantees: the points move at most once per idempotency key and per code;
-- a declined sale moves nothing; a reversal recorded for the order reference
-- before the sale arrives makes it decline ('reversal wins'); the member's
-- available balance never goes negative.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] order reference  KEYS[5] terminal batch  KEYS[6] terminal batch log
-- Member scope: KEYS[7] device  KEYS[8] used codes  KEYS[9] member
--   KEYS[10] journal  KEYS[11] entry index  KEYS[12] payment
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] OTP outcome  ARGV[6] code counter  ARGV[7] failures max  ARGV[8] oldest counter
-- ARGV[9] payment id  ARGV[10] member id ('' if unknown)  ARGV[11] amount
-- ARGV[12] currency  ARGV[13] points  ARGV[14] points unit  ARGV[15] merchant id
-- ARGV[16] store id  ARGV[17] terminal id  ARGV[18] order ref  ARGV[19] approval code
-- ARGV[20] business day  ARGV[21] member daily points max  ARGV[22] calendar day
-- ARGV[23] decline decided before storage ('' if none)  ARGV[24] slot
-- ARGV[25] account the points go to (merchant:<id>, or partner:<id> for a partner's merchant)
-- ARGV[26] FX quote id ('' for a home-currency sale)  ARGV[27] FX rate applied ('' likewise)
-- Returns {'done', response JSON} or {'replay', response JSON} or {error code}.
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end

local order = redis.call('HMGET', KEYS[4], 'payment_id', 'state', 'reversed')
if order[1] and order[2] ~= 'declined' and order[3] ~= '1' then
  return {'order_ref_in_use'}
end

local decline = ARGV[23]
local member_id = ARGV[10]
if decline == '' and order[3] == '1' then decline = 'reversed' end
if decline == '' then
  local outcome, owner = verify_code(KEYS[7], KEYS[8], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  if outcome ~= 'ok' then
    decline = outcome
  elseif owner ~= member_id then
    -- The caller's cached slot owner disagrees with storage: a bug, not a decline.
    return redis.error_reply('slot owner mismatch for payment ' .. ARGV[9])
  end
end

local points = parse_amount(ARGV[13])
if not points then return {'invalid_amount'} end
local balance_after = ''
if decline == '' then
  local member = redis.call('HMGET', KEYS[9], 'available', 'unit', 'day', 'day_spent')
  if not member[2] then return redis.error_reply('no wallet for member ' .. member_id) end
  local available = tonumber(member[1])
  local day_spent = 0
  if member[3] == ARGV[22] then day_spent = tonumber(member[4] or '0') end
  if day_spent + points > tonumber(ARGV[21]) then
    decline = 'limit_exceeded'
  elseif member[2] ~= ARGV[14] then
    decline = 'unsupported_issuer'
  elseif available < points then
    decline = 'insufficient_points'
  else
    redis.call('HINCRBY', KEYS[9], 'available', '-' .. ARGV[13])
    redis.call('HSET', KEYS[9], 'day', ARGV[22], 'day_spent', day_spent + points)
    balance_after = tostring(available - points)
    journal_append(KEYS[10], KEYS[11], 'pay:' .. ARGV[9], 'payment', {
      posting('member:' .. member_id, ARGV[14], '-', ARGV[13]),
      posting(ARGV[25], ARGV[14], '', ARGV[13]),
    }, cjson.encode({payment_id = ARGV[9], merchant_id = ARGV[15], store_id = ARGV[16],
      terminal_id = ARGV[17], order_ref = ARGV[18], amount = ARGV[11], currency = ARGV[12]}), ARGV[4])
  end
end

local status = 'approved'
local approval_code = ARGV[19]
if decline ~= '' then
  status = 'declined'
  approval_code = ''
  points = 0
end
redis.call('HSET', KEYS[12], 'payment_id', ARGV[9], 'state', status, 'decline_code', decline,
  'merchant_id', ARGV[15], 'store_id', ARGV[16], 'terminal_id', ARGV[17], 'order_ref', ARGV[18],
  'amount', ARGV[11], 'currency', ARGV[12], 'points', points, 'unit', ARGV[14],
  'member_id', member_id, 'slot', ARGV[24], 'approval_code', approval_code,
  'business_day', ARGV[20], 'created_ms', ARGV[4], 'refunded_amount', 0, 'refunded_points', 0,
  'balance_after', balance_after, 'account', ARGV[25], 'quote_id', ARGV[26], 'fx_rate', ARGV[27])

if status == 'approved' then batch_record(KEYS[5], KEYS[6], 'sale', ARGV[9], ARGV[11]) end
if not order[1] or order[2] == 'declined' then
  redis.call('HSET', KEYS[4], 'payment_id', ARGV[9], 'state', status == 'declined' and 'declined' or 'taken')
end

local response = hash_json(KEYS[12])
finish_request(KEYS[3], ARGV[2], response, ARGV[3], ARGV[4])
return {'done', response}
