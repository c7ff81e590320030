-- pointgate payment steps: prepended after lib.lua to every script.
--
-- Every payment verb touches two scopes with different hash tags: the
-- merchant's and the member's (DESIGN.md 6a). Redis Cluster runs a script
-- over one slot only, so each is written here as steps over one scope each
-- (docs/payment-steps.md draws the states between them and who completes
-- each):
--
--   sale:      pay_claim (merchant)       pay_move (member)       pay_finish (merchant)
--   reversal:  reversal_claim (merchant)  reversal_move (member)  reversal_finish (merchant)
--   cancel:    adjustment.claim (merchant)  adjustment.cancel_move (member)  adjustment.finish (merchant)
--   refund:    adjustment.claim (merchant)  adjustment.refund_move (member)  adjustment.finish (merchant)
--   a partner member's cancel or refund:
--              adjustment.claim (merchant)  adjustment.outbound_move (member)  adjustment.finish (merchant)
--   a partner member's sale, before the partner is asked:
--              outbound.claim (merchant)  outbound.place (member)
--   ... and once the partner answered:
--              outbound.decide (member)  outbound.finish (merchant)
--
-- where adjustment = adjustment_steps() and outbound = outbound_sale_steps(),
-- built only by the scripts that run them (see adjustment_steps()).
--
-- On one Redis, pay.lua, reversal.lua, cancel.lua, refund.lua,
-- outbound_adjust.lua, outbound_claim.lua and outbound_finish.lua each run
-- their steps in one script (one round trip); on a cluster the store runs
-- the step scripts (pay_claim.lua, pay_move.lua, pay_finish.lua, ...) as
-- separate calls, each handing its reply (less the status) to the next as
-- extra ARGV. The functions are the same in both compositions.
--
-- Every state between the steps is recoverable. The claim stores, under the
-- idempotency key, state 'claimed', the payment id chosen before anything
-- moved, and the decline decided in the merchant scope. A retry (same key,
-- same body) that finds a claim continues it: with the claim's payment id (the sale answers 'resume' when
-- the retry brought another id, and the caller sends it again with the
-- claim's), then the move, which finds the payment record if it ran and
-- runs otherwise, then the finish, which stores the response once. A
-- reversal that finds an order whose sale has a claim but no payment record
-- writes a marker for that payment id in the member scope, where the move
-- looks for it: the sale can then only decline ('reversed').
--
-- A cancel or a refund (an adjustment) claims its request the same way; its
-- move records what it did under the request's name in the payment's own
-- scope (the payment's adjustments hash), so a retry or a duplicate that
-- reaches the move again gets that answer back instead of moving twice, and
-- the finish counts it in the terminal's batch and stores the response once.

-- The ARGV of each payment verb as its caller sends it (the header of its
-- one-Redis script: pay.lua, reversal.lua, ...); a cluster step finds the
-- previous step's reply after them.
local PAY_ARGS = 30
local REVERSAL_ARGS = 12
local CANCEL_ARGS = 9
local REFUND_ARGS = 11
local OUTBOUND_ADJUST_ARGS = 14
local OUTBOUND_CLAIM_ARGS = 16
local OUTBOUND_FINISH_ARGS = 11

-- The merchant scope of a sale: the first eight KEYS (pay.lua's header).
local function pay_merchant_keys()
  return {nonce = KEYS[1], signing_key = KEYS[2], idem = KEYS[3], order = KEYS[4],
    batch = KEYS[5], batch_log = KEYS[6], terminal_guesses = KEYS[7], merchant_guesses = KEYS[8]}
end

-- The member scope of a sale: the KEYS from `first` to the end.
local function pay_member_keys(first)
  return {device = KEYS[first], used = KEYS[first + 1], wallet = wallet_keys(first + 2),
    payment = KEYS[first + 9], reversal = KEYS[first + 10], first_coupon = first + 11}
end

-- The merchant-scope checks of a request that runs in steps, as
-- claim_request's: the signing key is active, the nonce is fresh (burned
-- here), the idempotency key is new or holds the same request. A request
-- whose claim is still open (its steps did not all run) is handed back to
-- be continued. A sale's attempt that brought another payment id than the
-- claim's gets {'resume', the claim's id} before its nonce is burned: it is
-- sent again with that id and burns its nonce then. The burned nonce holds
-- the idempotency key's name, so the attempt that burned it may come back to
-- the request's open claim (a reversal's 'retry') without meeting its own
-- nonce; any other reuse, and any reuse once the request is done, is still
-- a replay. `payment_id` is nil for a reversal.
-- Returns a reply to answer at once, or nil and the open claim's fields
-- {payment id, decline} (false for a new request).
local function claim_steps(nonce_key, signing_key_key, idem_key, nonce_ttl_s, request_hash, payment_id)
  if redis.call('HGET', signing_key_key, 'status') ~= 'active' then return {'unknown_key'} end
  local stored = redis.call('HMGET', idem_key, 'request_hash', 'state', 'response', 'payment_id', 'decline')
  local open = stored[1] == request_hash and stored[2] == 'claimed'
  local own = open and redis.call('GET', nonce_key) == idem_key
  if open and not own and payment_id and stored[4] ~= payment_id then
    if redis.call('EXISTS', nonce_key) == 1 then return {'nonce_replayed'} end
    return {'resume', stored[4]}
  end
  if not own and not redis.call('SET', nonce_key, idem_key, 'NX', 'EX', nonce_ttl_s) then return {'nonce_replayed'} end
  if not stored[1] then return nil, false end
  if stored[1] ~= request_hash then return {'idempotency_mismatch'} end
  if stored[2] == 'done' then return {'replay', stored[3]} end
  if stored[2] ~= 'claimed' then return {'idempotency_in_progress'} end
  return nil, {stored[4] or '', stored[5] or ''}
end

-- The decline codes that count as a guess against the terminal's and the merchant's limits.
local function is_guess(decline)
  return decline == 'wrong_otp' or decline == 'invalid_code' or decline == 'unknown_slot' or decline == 'locked'
end

-- Sale, step one (merchant scope): claim the request, the payment id and the
-- order reference; decide the declines the merchant scope knows (a reversal
-- recorded for the order first, a terminal or merchant over its guess
-- limits). Writes nothing but the nonce when it answers at once.
-- Returns a reply ({'replay', ...}, {'resume', payment id}, {error code}),
-- or nil and the decline ('' to go on and verify the code).
local function pay_claim(k)
  local early, claim = claim_steps(k.nonce, k.signing_key, k.idem, ARGV[1], ARGV[2], ARGV[9])
  if early then return early end
  if claim then
    -- Only an attempt that already has the claim's payment id gets here; the check keeps a
    -- bug from moving a second payment for one request.
    if claim[1] ~= ARGV[9] then return {'resume', claim[1]} end
    return nil, claim[2]
  end
  local order = redis.call('HMGET', k.order, 'payment_id', 'state', 'reversed')
  if order[1] and order[2] ~= 'declined' and order[3] ~= '1' then
    return {'order_ref_in_use'}
  end
  if not parse_amount(ARGV[11]) or not parse_amount(ARGV[13]) then return {'invalid_amount'} end
  local decline = ARGV[23]
  if decline == '' and order[3] == '1' then decline = 'reversed' end
  -- A terminal (or merchant) sending too many invalid codes is refused before any code is
  -- checked: guessing stops, and nobody's device is locked by someone else's guesses.
  local throttled = hget_number(k.terminal_guesses, 'n') >= tonumber(ARGV[29])
    or hget_number(k.merchant_guesses, 'n') >= tonumber(ARGV[30])
  if throttled and (decline == '' or decline == 'invalid_code') then
    decline = 'too_many_attempts'
  end
  redis.call('HSET', k.idem, 'request_hash', ARGV[2], 'state', 'claimed', 'payment_id', ARGV[9],
    'decline', decline, 'created_ms', ARGV[4])
  redis.call('EXPIRE', k.idem, ARGV[3])
  if not order[1] or order[2] == 'declined' then
    redis.call('HSET', k.order, 'payment_id', ARGV[9], 'state', 'claimed')
  end
  return nil, decline
end

-- Sale, step two (member scope): verify and burn the code, apply the
-- coupons, check the limits and the balance, debit, and write the payment
-- record, its journal entry and the member's event; or, when the payment
-- record exists (an earlier attempt moved it), change nothing.
-- `decline` is the claim's. Returns {'moved', payment JSON, 'approved' or
-- 'declined' (its outcome when it moved), its decline code} or an error.
local function pay_move(m, decline)
  local moved = redis.call('HMGET', m.payment, 'state', 'decline_code')
  if moved[1] then
    return {'moved', hash_json(m.payment), moved[2] == '' and 'approved' or 'declined', moved[2]}
  end
  local amount = parse_amount(ARGV[11])
  local gross = parse_amount(ARGV[13])
  if not gross or not amount then return {'invalid_amount'} end
  -- A reversal that found only the claim marked this payment id: it never moves.
  if decline == '' and redis.call('EXISTS', m.reversal) == 1 then decline = 'reversed' end

  local w = m.wallet
  local now_ms = ARGV[4]
  local member_id = ARGV[10]
  if decline == '' then
    local outcome, owner = verify_code(m.device, m.used, ARGV[5], ARGV[6], ARGV[7], ARGV[8])
    if outcome ~= 'ok' then
      decline = outcome
    elseif owner ~= member_id then
      -- The caller's cached slot owner disagrees with storage: a bug, not a decline.
      return redis.error_reply('slot owner mismatch for payment ' .. ARGV[9])
    end
  end

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
      local key = KEYS[m.first_coupon + i - 1]
      local c = redis.call('HMGET', key, 'member_id', 'state', 'valid_from_ms', 'valid_until_ms', 'merchants',
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
        coupons[#coupons + 1] = {key = key, code = code, campaign_id = c[12], title = c[13],
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
  redis.call('HSET', m.payment, 'payment_id', ARGV[9], 'state', status, 'decline_code', decline,
    'merchant_id', ARGV[15], 'store_id', ARGV[16], 'terminal_id', ARGV[17], 'order_ref', ARGV[18],
    'amount', ARGV[11], 'currency', ARGV[12], 'points', points, 'unit', ARGV[14],
    'member_id', member_id, 'slot', ARGV[24], 'approval_code', approval_code,
    'business_day', ARGV[20], 'created_ms', now_ms, 'refunded_amount', 0, 'refunded_points', 0,
    'balance_after', balance_after, 'account', ARGV[25], 'quote_id', ARGV[26], 'fx_rate', ARGV[27],
    'discount', discount, 'discount_points', discount_points, 'refunded_discount_points', 0,
    'coupons', coupons_json, 'lots', lots)
  return {'moved', hash_json(m.payment), status, decline}
end

-- Sale, step three (merchant scope): count the guesses, record the sale in
-- the terminal's batch, settle the order reference, and store the response
-- under the idempotency key; once (a finished request answers its stored
-- response). `outcome` and `decline` are what the move decided.
-- Returns {'done', response JSON} or {'replay', response JSON}.
local function pay_finish(k, response, outcome, decline)
  local stored = redis.call('HMGET', k.idem, 'state', 'response')
  if stored[1] == 'done' then return {'replay', stored[2]} end
  if is_guess(decline) then
    for _, key in ipairs({k.terminal_guesses, k.merchant_guesses}) do
      redis.call('HINCRBY', key, 'n', 1)
      redis.call('EXPIRE', key, 120)
    end
  end
  if outcome == 'approved' then batch_record(k.batch, k.batch_log, 'sale', ARGV[9], ARGV[11]) end
  if redis.call('HGET', k.order, 'payment_id') == ARGV[9] then
    redis.call('HSET', k.order, 'state', outcome == 'declined' and 'declined' or 'taken')
  end
  finish_request(k.idem, ARGV[2], response, ARGV[3], ARGV[4])
  return {'done', response}
end

-- The merchant scope of a reversal: the first six KEYS (reversal.lua's header).
local function reversal_merchant_keys()
  return {nonce = KEYS[1], signing_key = KEYS[2], idem = KEYS[3], order = KEYS[4], batch = KEYS[5], batch_log = KEYS[6]}
end

-- The member scope of a reversal: the KEYS from `first` to the end.
local function reversal_member_keys(first)
  return {wallet = wallet_keys(first), payment = KEYS[first + 7], marker = KEYS[first + 8], first_coupon = first + 9}
end

-- Reversal, step one (merchant scope): claim the request and mark the order
-- reference reversed, so a sale arriving later declines ('reversal wins').
-- A new request first checks the order's payment id is the one its caller
-- read (else {'retry'}, nothing written). Returns a reply, or nil to go on.
local function reversal_claim(k)
  if not redis.call('HGET', k.idem, 'request_hash') then
    if (redis.call('HGET', k.order, 'payment_id') or '') ~= ARGV[7] then return {'retry'} end
  end
  local early, claim = claim_steps(k.nonce, k.signing_key, k.idem, ARGV[1], ARGV[2])
  if early then return early end
  if not claim then
    redis.call('HSET', k.order, 'reversed', '1', 'reversed_ms', ARGV[4])
    redis.call('HSET', k.idem, 'request_hash', ARGV[2], 'state', 'claimed', 'created_ms', ARGV[4])
    redis.call('EXPIRE', k.idem, ARGV[3])
  end
  return nil
end

-- Reversal, step two (member scope, only when the order has a payment id):
-- give back whatever the payment still holds (all of it, less any refunds)
-- and restore its coupons; or, when the sale has only its claim, mark its
-- payment id so its move can never run. A marker names the reversal that
-- wrote it, so a retry of that reversal gets the same outcome and nothing
-- goes back twice. ARGV[11] names the reversal, ARGV[12] is '1' when the
-- caller read a payment record (its wallet and coupon keys are then these).
-- Returns {'moved', outcome, payment JSON ('' if none), points back in the
-- batch}, or {'retry'} (the sale moved since the caller read: read again).
local function reversal_move(m)
  local w = m.wallet
  local payment_key = m.payment
  local marker = redis.call('HMGET', m.marker, 'reversal', 'outcome', 'amount')
  local exists = redis.call('EXISTS', payment_key) == 1
  if marker[1] == ARGV[11] then
    return {'moved', marker[2], exists and hash_json(payment_key) or '', marker[3]}
  end
  if not exists then
    if ARGV[12] ~= '' then return redis.error_reply('payment ' .. ARGV[7] .. ' vanished') end
    redis.call('HSET', m.marker, 'reversal', ARGV[11], 'outcome', 'recorded', 'amount', '0', 'created_ms', ARGV[4])
    redis.call('EXPIRE', m.marker, ARGV[3])
    return {'moved', 'recorded', '', '0'}
  end
  if ARGV[12] == '' then return {'retry'} end
  local payment = redis.call('HMGET', payment_key, 'state', 'member_id', 'amount', 'refunded_amount', 'store_id', 'currency')
  local outcome, batch_amount = 'nothing_to_reverse', '0'
  local account = redis.call('HGET', payment_key, 'account') or ''
  if state_in(payment[1], ARGV[8]) and (payment[2] or '') == '' and string.sub(account, 1, 8) == 'partner:' then
    -- A partner member's payment, already reversed at the partner by the caller:
    -- what the merchant still holds goes back to the partner's clearing account.
    local left = tonumber(payment[3]) - tonumber(payment[4])
    if left > 0 then
      journal_append(w.journal, w.index, 'reversal:' .. ARGV[7], 'reversal', {
        posting('merchant:' .. ARGV[5], redis.call('HGET', payment_key, 'unit'), '-', int_text(left)),
        posting(account, redis.call('HGET', payment_key, 'unit'), '', int_text(left)),
      }, payment_meta(payment_key, int_text(left)), ARGV[4])
    end
    redis.call('HSET', payment_key, 'state', 'reversed', 'reversed_ms', ARGV[4])
    outcome, batch_amount = 'reversed', int_text(left)
  elseif state_in(payment[1], ARGV[8]) then
    local paid, refunded = tonumber(payment[3]), tonumber(payment[4])
    local postings, points = payment_give_back(w, payment_key, m.first_coupon, paid - refunded, paid, true)
    if #postings > 0 then
      wallet_entry(w, payment[2], 'reversal:' .. ARGV[7], 'reversal', postings,
        payment_meta(payment_key, int_text(paid - refunded)), ARGV[4], points, 0,
        {payment_id = ARGV[7], merchant_id = ARGV[5], store_id = payment[5], order_ref = ARGV[6],
          amount = int_text(paid - refunded), currency = payment[6]})
    end
    lots_expire(w, payment[2], ARGV[4])
    redis.call('HSET', payment_key, 'state', 'reversed', 'reversed_ms', ARGV[4],
      'balance_after', redis.call('HGET', w.member, 'available'))
    outcome, batch_amount = 'reversed', int_text(paid - refunded)
  end
  if outcome == 'reversed' then
    redis.call('HSET', m.marker, 'reversal', ARGV[11], 'outcome', outcome, 'amount', batch_amount, 'created_ms', ARGV[4])
    redis.call('EXPIRE', m.marker, ARGV[3])
  end
  return {'moved', outcome, hash_json(payment_key), batch_amount}
end

-- Reversal, step three (merchant scope): record the void in the terminal's
-- batch and store the response; once. Returns {'done', reversal JSON} or
-- {'replay', reversal JSON}.
local function reversal_finish(k, outcome, payment_json, batch_amount)
  local stored = redis.call('HMGET', k.idem, 'state', 'response')
  if stored[1] == 'done' then return {'replay', stored[2]} end
  if outcome == 'reversed' then batch_record(k.batch, k.batch_log, 'void', ARGV[7], batch_amount) end
  local response = cjson.encode({order_ref = ARGV[6], outcome = outcome,
    payment = payment_json ~= '' and payment_json or false,
    store_id = ARGV[9], terminal_id = ARGV[10], created_ms = ARGV[4]})
  finish_request(k.idem, ARGV[2], response, ARGV[3], ARGV[4])
  return {'done', response}
end

-- Cancels and refunds: adjustments of a payment that already moved ----------
--
-- Built by the scripts that run them (adjustment_steps()), not by every
-- script this library is prepended to: Redis runs a script's top-level
-- definitions on every call, and each function defined costs a closure
-- (about 0.2 us), which the sale, the hot path, would pay for nothing.
-- The steps and key layouts below are the fields of the table it returns.
local function adjustment_steps()
  -- The merchant scope of a cancel, a refund and their partner-member twin
  -- (outbound_adjust): the first five KEYS of cancel.lua, refund.lua and
  -- outbound_adjust.lua.
  local function merchant_keys()
    return {nonce = KEYS[1], signing_key = KEYS[2], idem = KEYS[3], batch = KEYS[4], batch_log = KEYS[5]}
  end

  -- The member scope of a cancel (cancel.lua's header): the KEYS from `first` to the end.
  local function cancel_member_keys(first)
    return {wallet = wallet_keys(first), payment = KEYS[first + 7], adjustments = KEYS[first + 8],
      first_coupon = first + 9}
  end

  -- The member scope of a refund (refund.lua's header): the KEYS from `first` to the end.
  local function refund_member_keys(first)
    return {wallet = wallet_keys(first), payment = KEYS[first + 7], refunds = KEYS[first + 8],
      adjustments = KEYS[first + 9], first_coupon = first + 10}
  end

  -- The member scope of a partner member's cancel or refund (outbound_adjust.lua's header).
  local function outbound_member_keys(first)
    return {payment = KEYS[first], journal = KEYS[first + 1], index = KEYS[first + 2], refunds = KEYS[first + 3],
      adjustments = KEYS[first + 4]}
  end

  -- Adjustment, step one (merchant scope): claim the request (claim_steps: the
  -- key is active, the nonce fresh, the idempotency key new or this request's)
  -- and, when it is new, store it 'claimed' with `refund_id`, the id its refund
  -- will have ('' for a cancel), chosen before anything moves. A retry or a
  -- duplicate that finds the claim continues it with the claim's refund id.
  -- Returns a reply to answer at once ({'replay', response} or {error code}),
  -- or nil and the refund id.
  local function claim(k, refund_id)
    local early, open = claim_steps(k.nonce, k.signing_key, k.idem, ARGV[1], ARGV[2])
    if early then return early end
    if open then return nil, redis.call('HGET', k.idem, 'refund_id') or '' end
    redis.call('HSET', k.idem, 'request_hash', ARGV[2], 'state', 'claimed', 'refund_id', refund_id, 'created_ms', ARGV[4])
    redis.call('EXPIRE', k.idem, ARGV[3])
    return nil, refund_id
  end

  -- What an earlier run of this request's move did, as the move's reply, or nil.
  -- The payment's adjustments hash holds, under the request's name (its
  -- idempotency key's), the request hash, the response and the batch amount; a
  -- field whose hash is another's belongs to an older request that used the same
  -- key before it expired, and is not this one's.
  local function moved_before(adjustments_key, request_name)
    local stored = redis.call('HGET', adjustments_key, request_name)
    if not stored then return nil end
    local recorded = cjson.decode(stored)
    if recorded[1] ~= ARGV[2] then return nil end
    return {'moved', recorded[2], recorded[3]}
  end

  -- Record, in the same step as the movement, what this request's move did;
  -- returns the move's reply {'moved', response JSON, amount for the batch}.
  local function record_move(adjustments_key, request_name, response, batch_amount)
    redis.call('HSET', adjustments_key, request_name, cjson.encode({ARGV[2], response, batch_amount}))
    redis.call('EXPIRE', adjustments_key, ARGV[3])
    return {'moved', response, batch_amount}
  end

  -- Cancel, step two (member scope): give the payment's points back to the
  -- member (into the lots they came from), restore its coupons with their
  -- discounts back to their funders, take all of it off the merchant's payable
  -- (payment_give_back and wallet_entry), and mark the payment cancelled; once
  -- per request (moved_before). Refuses another merchant's payment,
  -- a state the payment table does not allow, and another business day; a
  -- refusal writes nothing, so the claim stays and the same request sent again
  -- is judged again. ARGV[9] names the cancel (its idempotency key).
  -- Returns {'moved', payment JSON, amount for the batch} or {error code, detail}.
  local function cancel_move(m)
    local before = moved_before(m.adjustments, ARGV[9])
    if before then return before end
    local w = m.wallet
    local payment = redis.call('HMGET', m.payment, 'merchant_id', 'state', 'business_day', 'member_id', 'amount',
      'store_id', 'currency')
    if payment[1] ~= ARGV[5] then return {'payment_not_found'} end
    if not state_in(payment[2], ARGV[8]) then return {'invalid_state', payment[2]} end
    if payment[3] ~= ARGV[7] then return {'cancel_window_closed', payment[3]} end

    local member_id, amount = payment[4], tonumber(payment[5])
    local postings, points = payment_give_back(w, m.payment, m.first_coupon, amount, amount, true)
    if #postings > 0 then
      wallet_entry(w, member_id, 'cancel:' .. ARGV[6], 'cancel', postings,
        payment_meta(m.payment, payment[5]), ARGV[4], points, 0,
        {payment_id = ARGV[6], merchant_id = ARGV[5], store_id = payment[6], amount = payment[5], currency = payment[7]})
    end
    lots_expire(w, member_id, ARGV[4])
    redis.call('HSET', m.payment, 'state', 'cancelled', 'cancelled_ms', ARGV[4],
      'balance_after', redis.call('HGET', w.member, 'available'))
    return record_move(m.adjustments, ARGV[9], hash_json(m.payment), payment[5])
  end

  -- Refund, step two (member scope): the member's share of `ARGV[8]` of what
  -- they paid goes back to them (into the lots it came from), each coupon's
  -- share of its discount back to its funder, the sum off the merchant's
  -- payable (payment_give_back and wallet_entry); the refund is appended to the
  -- payment's refund list under `refund_id` (the claim's); the last refund
  -- restores the coupons. Once per request (moved_before). Refunds
  -- of a payment never add up to more than it paid: the check and the
  -- movement are one step in the payment's scope, whatever else runs at once.
  -- A refusal writes nothing. ARGV[11] names the refund (its idempotency key).
  -- Returns {'moved', {refund, payment} JSON, amount for the batch} or {error code, detail}.
  local function refund_move(m, refund_id)
    local before = moved_before(m.adjustments, ARGV[11])
    if before then return before end
    local w = m.wallet
    local payment = redis.call('HMGET', m.payment, 'merchant_id', 'state', 'amount', 'refunded_amount',
      'refunded_points', 'refunded_discount_points', 'member_id', 'store_id', 'currency')
    if payment[1] ~= ARGV[5] then return {'payment_not_found'} end
    if not state_in(payment[2], ARGV[9]) then return {'invalid_state', payment[2]} end
    local amount = parse_amount(ARGV[8])
    if not amount then return {'invalid_amount'} end
    local paid, refunded = tonumber(payment[3]), tonumber(payment[4])
    if refunded + amount > paid then return {'refund_exceeds_payment', int_text(paid - refunded)} end

    local member_id = payment[7]
    local last = refunded + amount == paid
    local postings, points, discount_points = payment_give_back(w, m.payment, m.first_coupon, amount, paid, last)
    if #postings > 0 then
      wallet_entry(w, member_id, 'refund:' .. refund_id, 'refund', postings,
        payment_meta(m.payment, ARGV[8], {refund_id = refund_id}), ARGV[4],
        points, 0, {payment_id = ARGV[6], refund_id = refund_id, merchant_id = ARGV[5], store_id = payment[8],
          amount = ARGV[8], currency = payment[9], discount_points = int_text(discount_points)})
    end
    lots_expire(w, member_id, ARGV[4])
    local balance_after = redis.call('HGET', w.member, 'available')
    redis.call('HSET', m.payment, 'state', last and 'refunded' or 'partially_refunded',
      'refunded_amount', int_text(refunded + amount),
      'refunded_points', int_text(tonumber(payment[5]) + points),
      'refunded_discount_points', int_text(tonumber(payment[6] or '0') + discount_points),
      'balance_after', balance_after)
    local refund = cjson.encode({refund_id = refund_id, payment_id = ARGV[6], amount = ARGV[8],
      points = int_text(points), discount_points = int_text(discount_points), reason = ARGV[10],
      created_ms = ARGV[4], balance_after = balance_after})
    redis.call('RPUSH', m.refunds, refund)
    return record_move(m.adjustments, ARGV[11], cjson.encode({refund = refund, payment = hash_json(m.payment)}), ARGV[8])
  end

  -- A partner member's cancel or refund, step two (member scope: the payment's
  -- partition), after the partner gave its member the points back: the amount
  -- moves off the merchant's payable and back onto the partner's clearing
  -- account (journal_append), and the payment is marked cancelled or
  -- (partially) refunded; once per request (moved_before). Never
  -- more than was paid, only the payment's own merchant, a cancel only on the
  -- payment's business day. A refusal writes nothing. ARGV[14] names the
  -- request (its idempotency key); `refund_id` is the claim's.
  -- Returns {'moved', response JSON, amount for the batch} or {error code, detail}.
  local function outbound_move(m, refund_id)
    local before = moved_before(m.adjustments, ARGV[14])
    if before then return before end
    local payment = redis.call('HMGET', m.payment, 'merchant_id', 'state', 'amount', 'refunded_amount', 'unit',
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
      if refunded + amount > paid then return {'refund_exceeds_payment', int_text(paid - refunded)} end
      amount_text = ARGV[8]
    end
    local entry = ARGV[7] .. ':' .. ARGV[6]
    if ARGV[7] == 'refund' then entry = 'refund:' .. refund_id end
    journal_append(m.journal, m.index, entry, ARGV[7], {
      posting('merchant:' .. ARGV[5], payment[5], '-', amount_text),
      posting(payment[6], payment[5], '', amount_text),
    }, payment_meta(m.payment, amount_text, {partner_points = ARGV[13]}), ARGV[4])
    local response
    if ARGV[7] == 'cancel' then
      redis.call('HSET', m.payment, 'state', 'cancelled', 'cancelled_ms', ARGV[4])
      response = hash_json(m.payment)
    else
      local total = refunded + tonumber(amount_text)
      redis.call('HSET', m.payment, 'state', total == paid and 'refunded' or 'partially_refunded',
        'refunded_amount', int_text(total), 'refunded_points', int_text(total))
      local refund = cjson.encode({refund_id = refund_id, payment_id = ARGV[6], amount = amount_text,
        points = amount_text, reason = ARGV[12], created_ms = ARGV[4], balance_after = ''})
      redis.call('RPUSH', m.refunds, refund)
      response = cjson.encode({refund = refund, payment = hash_json(m.payment)})
    end
    return record_move(m.adjustments, ARGV[14], response, amount_text)
  end

  -- Adjustment, step three (merchant scope): count the movement in the
  -- terminal's batch (`batch_kind` 'void' or 'refund', for the payment ARGV[6])
  -- and store the response under the idempotency key; once: a request already
  -- finished (a duplicate's finish ran first) answers its stored response.
  -- `response` and `batch_amount` are the move's. The idempotency key holding
  -- another request (this one's expired and was used again between the move
  -- and here) is never overwritten.
  -- Returns {'done', response JSON}, {'replay', response JSON} or {'idempotency_mismatch'}.
  local function finish(k, batch_kind, response, batch_amount)
    local stored = redis.call('HMGET', k.idem, 'request_hash', 'state', 'response')
    if stored[1] and stored[1] ~= ARGV[2] then return {'idempotency_mismatch'} end
    if stored[2] == 'done' then return {'replay', stored[3]} end
    batch_record(k.batch, k.batch_log, batch_kind, ARGV[6], batch_amount)
    finish_request(k.idem, ARGV[2], response, ARGV[3], ARGV[4])
    return {'done', response}
  end

  return {merchant_keys = merchant_keys, cancel_member_keys = cancel_member_keys,
    refund_member_keys = refund_member_keys, outbound_member_keys = outbound_member_keys,
    claim = claim, cancel_move = cancel_move, refund_move = refund_move, outbound_move = outbound_move,
    finish = finish}
end

-- A partner member's sale: the pending payment, then the partner's answer ----
--
-- Built by the scripts that run them (outbound_sale_steps()), for the same
-- reason; the steps and key layouts below are the fields of the table it returns.
local function outbound_sale_steps()
  -- The merchant scope of a partner member's sale before the partner is asked
  -- (outbound_claim.lua's header): the first four KEYS.
  local function claim_merchant_keys()
    return {nonce = KEYS[1], signing_key = KEYS[2], idem = KEYS[3], order = KEYS[4]}
  end

  -- Its member scope (the payment's partition): the payment and its reversal marker.
  local function claim_member_keys(first)
    return {payment = KEYS[first], reversal = KEYS[first + 1]}
  end

  -- Partner member's sale, step one (merchant scope): claim the request (as
  -- claim_steps, a retry that brought another payment id than the claim's is
  -- told to 'resume' with the claim's) and the order reference. A claim whose
  -- first request is still asking the partner (its lease, ARGV[16] ms, has not
  -- run out) makes a duplicate wait ('idempotency_in_progress'); past its lease
  -- the first request is presumed dead and this one takes the lease over.
  -- Returns a reply ({'replay', response}, {'resume', payment id}, {error code}),
  -- or nil and 'reversed' when a reversal of the order arrived before this new
  -- sale (it declines), else ''.
  local function claim(k)
    local early, open = claim_steps(k.nonce, k.signing_key, k.idem, ARGV[1], ARGV[2], ARGV[5])
    if early then return early end
    local lease_until_ms = tonumber(ARGV[4]) + tonumber(ARGV[16])
    if open then
      if open[1] ~= ARGV[5] then return {'resume', open[1]} end
      if tonumber(redis.call('HGET', k.idem, 'lease_ms') or '0') > tonumber(ARGV[4]) then
        return {'idempotency_in_progress'}
      end
      redis.call('HSET', k.idem, 'lease_ms', lease_until_ms)
      return nil, ''
    end
    local order = redis.call('HMGET', k.order, 'payment_id', 'state', 'reversed')
    if order[1] and order[2] ~= 'declined' and order[3] ~= '1' then return {'order_ref_in_use'} end
    redis.call('HSET', k.order, 'payment_id', ARGV[5], 'state', 'pending')
    redis.call('HSET', k.idem, 'request_hash', ARGV[2], 'state', 'claimed', 'payment_id', ARGV[5],
      'created_ms', ARGV[4], 'lease_ms', lease_until_ms)
    redis.call('EXPIRE', k.idem, ARGV[3])
    return nil, order[3] == '1' and 'reversed' or ''
  end

  -- Partner member's sale, step two (member scope): place the payment pending,
  -- unless an earlier attempt did. Nothing moves here. The partner is asked only
  -- by the attempt that placed the record, after this step, so a payment without
  -- a record has never been asked for: the attempt that places it asks (a retry
  -- of a request lost after its claim authorises as the first would have), and a
  -- reversal that found no record (its marker, 'recorded') makes it decline as
  -- 'reversed' without asking. `order_reversed` is step one's.
  -- Returns {'claimed', payment id} (ask the partner), {'claimed_reversed',
  -- payment id} (decline it: the order was reversed), {'pending', payment id}
  -- (an earlier attempt's, which may have asked: look it up at the partner) or
  -- {'decided', payment id} (an earlier attempt recorded the partner's answer
  -- and was lost before its finish: finish it, asking the partner nothing).
  local function place(m, order_reversed)
    local state = redis.call('HGET', m.payment, 'state')
    if state == 'pending' then return {'pending', ARGV[5]} end
    if state then return {'decided', ARGV[5]} end
    redis.call('HSET', m.payment, 'payment_id', ARGV[5], 'state', 'pending', 'decline_code', '',
      'merchant_id', ARGV[6], 'store_id', ARGV[7], 'terminal_id', ARGV[8], 'order_ref', ARGV[9],
      'amount', ARGV[10], 'currency', ARGV[11], 'points', 0, 'unit', ARGV[14], 'member_id', '',
      'slot', ARGV[15], 'approval_code', '', 'business_day', ARGV[12], 'created_ms', ARGV[4],
      'refunded_amount', 0, 'refunded_points', 0, 'balance_after', '', 'account', ARGV[13],
      'quote_id', '', 'fx_rate', '')
    if order_reversed == 'reversed' or redis.call('EXISTS', m.reversal) == 1 then
      return {'claimed_reversed', ARGV[5]}
    end
    return {'claimed', ARGV[5]}
  end

  -- The merchant scope of a partner member's sale once the partner answered
  -- (outbound_finish.lua's header): the first four KEYS.
  local function finish_merchant_keys()
    return {idem = KEYS[1], order = KEYS[2], batch = KEYS[3], batch_log = KEYS[4]}
  end

  -- Its member scope: the payment and its partition's journal.
  local function finish_member_keys(first)
    return {payment = KEYS[first], journal = KEYS[first + 1], index = KEYS[first + 2]}
  end

  -- Partner member's sale, step three (member scope): the partner's answer (or
  -- our reversal at the partner) decides the pending payment, once: an
  -- approval credits the merchant's payable against the partner's clearing
  -- account in one journal entry (journal_append); a payment decided before
  -- (by an earlier attempt, or by a duplicate) stays as it is.
  -- Returns {'moved', payment JSON, 'approved' or 'declined' (as it was
  -- decided), payment id, amount, '1' if decided by this call else ''}.
  local function decide(m)
    local payment = redis.call('HMGET', m.payment, 'state', 'payment_id', 'amount', 'unit', 'account', 'merchant_id')
    if not payment[1] then return redis.error_reply('no pending payment at ' .. m.payment) end
    local decided_now = ''
    if payment[1] == 'pending' then
      decided_now = '1'
      if ARGV[1] == 'approved' then
        if not parse_amount(payment[3]) then return redis.error_reply('bad amount on payment ' .. payment[2]) end
        journal_append(m.journal, m.index, 'out:' .. payment[2], 'partner_payment', {
          posting(payment[5], payment[4], '-', payment[3]),
          posting('merchant:' .. payment[6], payment[4], '', payment[3]),
        }, payment_meta(m.payment, payment[3], {partner_payment_id = ARGV[4], partner_points = ARGV[5]}), ARGV[7])
        redis.call('HSET', m.payment, 'state', 'approved', 'points', payment[3], 'approval_code', ARGV[3],
          'partner_payment_id', ARGV[4], 'partner_points', ARGV[5], 'fx_rate', ARGV[6], 'quote_id', ARGV[9],
          'discount', ARGV[10], 'partner_coupons', ARGV[11])
      else
        redis.call('HSET', m.payment, 'state', 'declined', 'decline_code', ARGV[2])
      end
    end
    local decided = redis.call('HMGET', m.payment, 'state', 'decline_code')
    local outcome = (decided[1] ~= 'declined' and decided[2] == '') and 'approved' or 'declined'
    return {'moved', hash_json(m.payment), outcome, payment[2], payment[3], decided_now}
  end

  -- Partner member's sale, step four (merchant scope): settle the order
  -- reference, record an approved sale in the terminal's batch and store the
  -- response under the idempotency key, once: a request finished before
  -- answers its stored response. Without an idempotency key (expired) the
  -- batch counts the sale only when this call decided it.
  -- Returns {'done', payment JSON}.
  local function finish(k, payment_json, outcome, payment_id, amount, decided_now)
    local stored = redis.call('HMGET', k.idem, 'request_hash', 'state', 'response')
    if stored[2] == 'done' then return {'done', stored[3]} end
    if outcome == 'approved' and (stored[1] or decided_now == '1') then
      batch_record(k.batch, k.batch_log, 'sale', payment_id, amount)
    end
    if redis.call('HGET', k.order, 'payment_id') == payment_id then
      redis.call('HSET', k.order, 'state', outcome == 'approved' and 'taken' or 'declined')
    end
    if stored[1] then finish_request(k.idem, stored[1], payment_json, ARGV[8], ARGV[7]) end
    return {'done', payment_json}
  end

  return {claim_merchant_keys = claim_merchant_keys, claim_member_keys = claim_member_keys,
    claim = claim, place = place,
    finish_merchant_keys = finish_merchant_keys, finish_member_keys = finish_member_keys,
    decide = decide, finish = finish}
end
