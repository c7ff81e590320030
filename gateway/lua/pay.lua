-- A sale: claim the request, verify and burn the member's code, apply the
-- member's coupons, check the member's limits and balance, debit, record the
-- payment, its journal entry and the member's event, and store the response
-- under the idempotency key. One script, one round trip: the hot path.
-- Guarantees: the points move at most once per idempotency key and per code;
-- a declined sale moves nothing and redeems no coupon; a reversal recorded
-- for the order reference before the sale arrives makes it decline ('reversal
-- wins'); the member's available balance never goes negative; expired points
-- are never spent; a coupon is redeemed at most once, only by its member,
-- only inside its terms, in the same step as the debit.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] order reference  KEYS[5] terminal batch  KEYS[6] terminal batch log
-- Member scope: KEYS[7] device  KEYS[8] used codes  KEYS[9..15] the member's
--   wallet (keyspace.wallet_keys)  KEYS[16] payment  KEYS[17..] coupons offered
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] OTP outcome  ARGV[6] code counter  ARGV[7] failures max  ARGV[8] oldest counter
-- ARGV[9] payment id  ARGV[10] member id ('' if unknown)  ARGV[11] amount
-- ARGV[12] currency  ARGV[13] points for the whole amount  ARGV[14] points unit
-- ARGV[15] merchant id  ARGV[16] store id  ARGV[17] terminal id  ARGV[18] order ref
-- ARGV[19] approval code  ARGV[20] business day  ARGV[21] member daily points max
-- ARGV[22] calendar day  ARGV[23] decline decided before storage ('' if none)  ARGV[24] slot
-- ARGV[25] account the points go to (merchant:<id>, or partner:<id> for a partner's merchant)
-- ARGV[26] FX quote id ('' for a home-currency sale)  ARGV[27] FX rate applied ('' likewise)
-- ARGV[28] the coupon codes of KEYS[17..], space separated
-- ARGV[29] invalid codes a terminal may send per minute  ARGV[30] the same for the whole merchant
-- Merchant scope, after the coupons: KEYS[#KEYS-1] the terminal's invalid-code counter for the
--   window  KEYS[#KEYS] the merchant's
-- Returns {'done', response JSON} or {'replay', response JSON} or {error code}.
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end

local order = redis.call('HMGET', KEYS[4], 'payment_id', 'state', 'reversed')
if order[1] and order[2] ~= 'declined' and order[3] ~= '1' then
  return {'order_ref_in_use'}
end

local w = wallet_keys(9)
local now_ms = ARGV[4]
local decline = ARGV[23]
local member_id = ARGV[10]
local terminal_guesses, merchant_guesses = KEYS[#KEYS - 1], KEYS[#KEYS]
if decline == '' and order[3] == '1' then decline = 'reversed' end
-- A terminal (or merchant) sending too many invalid codes is refused before any code is
-- checked: guessing stops, and nobody's device is locked by someone else's guesses.
local throttled = hget_number(terminal_guesses, 'n') >= tonumber(ARGV[29])
  or hget_number(merchant_guesses, 'n') >= tonumber(ARGV[30])
if throttled and (decline == '' or decline == 'invalid_code') then
  decline = 'too_many_attempts'
end
if decline == '' then
  local outcome, owner = verify_code(KEYS[7], KEYS[8], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  if outcome ~= 'ok' then
    decline = outcome
  elseif owner ~= member_id then
    -- The caller's cached slot owner disagrees with storage: a bug, not a decline.
    return redis.error_reply('slot owner mismatch for payment ' .. ARGV[9])
  end
end
if decline == 'wrong_otp' or decline == 'invalid_code' or decline == 'unknown_slot' or decline == 'locked' then
  for _, key in ipairs({terminal_guesses, merchant_guesses}) do
    redis.call('HINCRBY', key, 'n', 1)
    redis.call('EXPIRE', key, 120)
  end
end

local amount = parse_amount(ARGV[11])
local gross = parse_amount(ARGV[13])
if not gross or not amount then return {'invalid_amount'} end

-- Coupons: each must be the member's, unused, valid now, for this merchant
-- and currency, with the sale at or above its minimum spend; more than one
-- only if all combine. The discount in the sale's currency is rounded down
-- (percentages) and capped; its points are the same share of the sale's
-- points, rounded down (in the home currency, the discount itself).
local coupons, discount, discount_points = {}, 0, 0
if decline == '' then
  local codes = {}
  for code in string.gmatch(ARGV[28], '%S+') do codes[#codes + 1] = code end
  local campaigns = {}
  for i, code in ipairs(codes) do
    if decline ~= '' then break end
    local c = redis.call('HMGET', KEYS[16 + i], 'member_id', 'state', 'valid_from_ms', 'valid_until_ms', 'merchants',
      'currency', 'min_spend', 'kind', 'value', 'cap', 'stackable', 'campaign_id', 'title', 'funding')
    if c[1] ~= member_id or campaigns[c[12]] then
      decline = 'invalid_coupon'
    elseif c[2] ~= 'issued' then
      decline = 'coupon_used'
    elseif tonumber(now_ms) < tonumber(c[3]) or tonumber(now_ms) > tonumber(c[4]) then
      decline = 'coupon_expired'
    elseif (c[5] ~= '*' and not state_in(ARGV[15], c[5])) or c[6] ~= ARGV[12] then
      decline = 'coupon_not_eligible'
    elseif amount < tonumber(c[7]) then
      decline = 'coupon_min_spend'
    elseif #codes > 1 and c[11] ~= '1' then
      decline = 'coupons_not_combinable'
    else
      campaigns[c[12]] = true
      local off = tonumber(c[9])
      if c[8] == 'percent' then off = math.floor(amount * off / 10000) end
      if tonumber(c[10]) > 0 then off = math.min(off, tonumber(c[10])) end
      off = math.min(off, amount - discount)
      local off_points = math.floor(gross * off / amount)
      if gross * off > AMOUNT_MAX then decline = 'invalid_coupon' end
      discount = discount + off
      discount_points = discount_points + off_points
      coupons[#coupons + 1] = {key = KEYS[16 + i], code = code, campaign_id = c[12], title = c[13],
        funding = c[14], discount = int_text(off), discount_points = int_text(off_points)}
    end
  end
end

local points = gross - discount_points
local balance_after, lots = '', ''
if decline == '' then
  lots_expire(w, member_id, now_ms)
  local member = redis.call('HMGET', w.member, 'available', 'unit', 'day', 'day_spent', 'daily_cap',
    'confirm_over', 'confirmed_points', 'confirmed_until_ms')
  if not member[2] then return redis.error_reply('no wallet for member ' .. member_id) end
  local available = tonumber(member[1])
  local day_spent = 0
  if member[3] == ARGV[22] then day_spent = tonumber(member[4] or '0') end
  local daily_max = math.min(tonumber(ARGV[21]), tonumber(member[5] or ARGV[21]))
  local confirmed = member[8] and tonumber(member[8]) >= tonumber(now_ms) and tonumber(member[7]) >= points
  if member[2] ~= ARGV[14] then
    decline = 'unsupported_issuer'
  elseif day_spent + points > daily_max then
    decline = 'limit_exceeded'
  elseif member[6] and points > tonumber(member[6]) and not confirmed then
    decline = 'confirmation_required'
  elseif available < points then
    decline = 'insufficient_points'
  else
    if confirmed and points > tonumber(member[6] or points) then
      redis.call('HDEL', w.member, 'confirmed_points', 'confirmed_until_ms')
    end
    local points_text = int_text(points)
    redis.call('HINCRBY', w.member, 'available', int_text(-points))
    redis.call('HSET', w.member, 'day', ARGV[22], 'day_spent', day_spent + points)
    lots = lots_take(w, member_id, points)
    balance_after = tostring(available - points)
    -- The member's posting is there even when coupons paid it all: every
    -- entry with a member event names the member's account.
    local postings = {posting('member:' .. member_id, ARGV[14], '-', points_text)}
    local redeemed = {}
    for _, coupon in ipairs(coupons) do
      if coupon.discount_points ~= '0' then
        postings[#postings + 1] = posting(coupon.funding, ARGV[14], '-', coupon.discount_points)
      end
      redis.call('HSET', coupon.key, 'state', 'redeemed', 'payment_id', ARGV[9], 'discount', coupon.discount,
        'redeemed_ms', now_ms)
      coupon.key = nil
      redeemed[#redeemed + 1] = coupon
    end
    coupons = redeemed
    postings[#postings + 1] = posting(ARGV[25], ARGV[14], '', ARGV[13])
    local details = {payment_id = ARGV[9], merchant_id = ARGV[15], store_id = ARGV[16],
      terminal_id = ARGV[17], order_ref = ARGV[18], amount = ARGV[11], currency = ARGV[12],
      discount = int_text(discount), account = ARGV[25], fx_rate = ARGV[27]}
    local event = {payment_id = ARGV[9], merchant_id = ARGV[15], store_id = ARGV[16], amount = ARGV[11],
      currency = ARGV[12], discount = int_text(discount), account = ARGV[25], fx_rate = ARGV[27]}
    if #coupons > 0 then event.coupons = coupons end
    wallet_entry(w, member_id, 'pay:' .. ARGV[9], 'payment', postings, cjson.encode(details), now_ms, -points, 0, event)
  end
end

local status = 'approved'
local approval_code = ARGV[19]
local coupons_json = '[]'
if decline ~= '' then
  status = 'declined'
  approval_code = ''
  points, discount, discount_points = 0, 0, 0
elseif #coupons > 0 then
  coupons_json = cjson.encode(coupons)
end
redis.call('HSET', KEYS[16], 'payment_id', ARGV[9], 'state', status, 'decline_code', decline,
  'merchant_id', ARGV[15], 'store_id', ARGV[16], 'terminal_id', ARGV[17], 'order_ref', ARGV[18],
  'amount', ARGV[11], 'currency', ARGV[12], 'points', points, 'unit', ARGV[14],
  'member_id', member_id, 'slot', ARGV[24], 'approval_code', approval_code,
  'business_day', ARGV[20], 'created_ms', now_ms, 'refunded_amount', 0, 'refunded_points', 0,
  'balance_after', balance_after, 'account', ARGV[25], 'quote_id', ARGV[26], 'fx_rate', ARGV[27],
  'discount', discount, 'discount_points', discount_points, 'refunded_discount_points', 0,
  'coupons', coupons_json, 'lots', lots)

if status == 'approved' then batch_record(KEYS[5], KEYS[6], 'sale', ARGV[9], ARGV[11]) end
if not order[1] or order[2] == 'declined' then
  redis.call('HSET', KEYS[4], 'payment_id', ARGV[9], 'state', status == 'declined' and 'declined' or 'taken')
end

local response = hash_json(KEYS[16])
finish_request(KEYS[3], ARGV[2], response, ARGV[3], ARGV[4])
return {'done', response}
