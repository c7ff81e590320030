-- pointgate payment steps: prepended after lib.lua to every script.
--
-- A sale and a reversal touch two scopes with different hash tags: the
-- merchant's and the member's (DESIGN.md 6a). Redis Cluster runs a script
-- over one slot only, so each is written here as steps over one scope each:
--
--   sale:     pay_claim (merchant)  pay_move (member)      pay_finish (merchant)
--   reversal: reversal_claim (merchant)  reversal_move (member)  reversal_finish (merchant)
--
-- On one Redis, pay.lua and reversal.lua run the three steps in one script
-- (one round trip); on a cluster the store runs pay_claim.lua, pay_move.lua
-- and pay_finish.lua (likewise reversal_*) as three calls, each handing its
-- reply (less the status) to the next as extra ARGV. The functions are the
-- same in both compositions.
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

-- The ARGV of a sale and of a reversal as their caller sends them (pay.lua's
-- and reversal.lua's headers); a cluster step finds the previous step's reply
-- after them.
local PAY_ARGS = 30
local REVERSAL_ARGS = 12

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
