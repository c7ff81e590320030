-- pointgate Lua library: prepended to every script when the store loads it,
-- so each script stays one atomic step that checks everything, then writes.
--
-- Conventions: every script returns a flat array whose first element is a
-- status string ('ok', 'duplicate', or a stable error code); amounts travel as
-- decimal strings of integers in minor units or points, validated here again
-- because a script is the last line of defence for money.

local AMOUNT_MAX = 1000000000000000  -- 10^15 < 2^53: exact in Lua's doubles

-- A positive integer amount given as a decimal string, or nil.
local function parse_amount(text)
  if type(text) ~= 'string' or not string.match(text, '^[1-9][0-9]*$') or #text > 16 then
    return nil
  end
  local n = tonumber(text)
  if n > AMOUNT_MAX then return nil end
  return n
end

local function hget_number(key, field)
  return tonumber(redis.call('HGET', key, field) or '0')
end

-- One posting as JSON. Amounts are concatenated as their validated decimal
-- strings, never formatted from doubles (cjson would print 1e+15).
local function posting(account, unit, sign, amount_text)
  return '["' .. account .. '","' .. unit .. '",' .. sign .. amount_text .. ']'
end

-- The journal entry of one movement, appended in the same script as the
-- balance change it records. The index makes an entry id usable only once.
local function journal_append(journal_key, index_key, entry_id, kind, postings, meta_json, now_ms)
  local sid = redis.call('XADD', journal_key, '*',
    'entry', entry_id, 'kind', kind,
    'postings', '[' .. table.concat(postings, ',') .. ']',
    'meta', meta_json, 'ts_ms', now_ms)
  redis.call('HSET', index_key, entry_id, sid)
  return sid
end

-- If this entry id was applied before, the reply for a retry.
local function already_applied(index_key, entry_id, member_key)
  local sid = redis.call('HGET', index_key, entry_id)
  if sid then
    return {'duplicate', sid, hget_number(member_key, 'available'), hget_number(member_key, 'held')}
  end
  return nil
end

local function balances(status, sid, member_key)
  return {status, sid, hget_number(member_key, 'available'), hget_number(member_key, 'held')}
end

-- Apply the caller's OTP decision to a device and burn the code (see
-- verify.lua for the guarantees). Returns outcome, member id or false, failures.
local function verify_code(device_key, used_key, otp_outcome, counter, failures_max, oldest_counter)
  local device = redis.call('HMGET', device_key, 'status', 'member_id')
  local status, member_id = device[1], device[2]
  if not status then return 'unknown_slot', false, 0 end
  if status ~= 'active' then return status, false, 0 end
  if otp_outcome == 'wrong_otp' then
    local failures = redis.call('HINCRBY', device_key, 'failures', 1)
    if failures >= tonumber(failures_max) then
      redis.call('HSET', device_key, 'status', 'locked')
      return 'locked', false, failures
    end
    return 'wrong_otp', false, failures
  end
  -- A code that matches an older step proves the secret (a stale screen), so
  -- it is not a guess and does not count toward the lock.
  if otp_outcome == 'expired' then return 'expired', false, 0 end
  if otp_outcome ~= 'ok' then return 'invalid_outcome', false, 0 end
  if redis.call('ZADD', used_key, 'NX', counter, counter) == 0 then
    return 'replayed', false, 0
  end
  redis.call('ZREMRANGEBYSCORE', used_key, '-inf', '(' .. oldest_counter)
  redis.call('HSET', device_key, 'failures', 0)
  return 'ok', member_id, 0
end

-- The merchant-scope checks every signed mutating request starts with:
-- the signing key is still active, the nonce is fresh (burned here), and the
-- idempotency key is new or a retry of the same request.
-- Returns nil to proceed, or a reply array to return at once.
local function claim_request(nonce_key, signing_key_key, idem_key, nonce_ttl_s, request_hash)
  if redis.call('HGET', signing_key_key, 'status') ~= 'active' then return {'unknown_key'} end
  if not redis.call('SET', nonce_key, '1', 'NX', 'EX', nonce_ttl_s) then return {'nonce_replayed'} end
  local stored = redis.call('HGET', idem_key, 'request_hash')
  if stored then
    if stored ~= request_hash then return {'idempotency_mismatch'} end
    if redis.call('HGET', idem_key, 'state') ~= 'done' then return {'idempotency_in_progress'} end
    return {'replay', redis.call('HGET', idem_key, 'response')}
  end
  return nil
end

-- Store the response of a finished request under its idempotency key.
local function finish_request(idem_key, request_hash, response, ttl_s, now_ms)
  redis.call('HSET', idem_key, 'request_hash', request_hash, 'state', 'done', 'response', response, 'created_ms', now_ms)
  redis.call('EXPIRE', idem_key, ttl_s)
end

-- A hash as a JSON object of strings (the stored form of a response).
local function hash_json(key)
  local flat = redis.call('HGETALL', key)
  local object = {}
  for i = 1, #flat, 2 do object[flat[i]] = flat[i + 1] end
  return cjson.encode(object)
end

-- Whether `state` is one of the space-separated states in `allowed`.
local function state_in(state, allowed)
  for candidate in string.gmatch(allowed, '%S+') do
    if candidate == state then return true end
  end
  return false
end

-- Count a movement in the terminal's open batch and log it for batch close.
local function batch_record(batch_key, log_key, kind, payment_id, amount_text)
  local batch_no = redis.call('HGET', batch_key, 'batch_no') or '1'
  redis.call('HSET', batch_key, 'batch_no', batch_no)
  redis.call('HINCRBY', batch_key, kind .. '_count', 1)
  redis.call('HINCRBY', batch_key, kind .. '_amount', amount_text)
  redis.call('RPUSH', log_key, batch_no .. '|' .. kind .. '|' .. payment_id .. '|' .. amount_text)
end

-- The member scope of a movement: seven consecutive KEYS from `first`, in
-- the order keyspace.wallet_keys() gives them.
local function wallet_keys(first)
  return {member = KEYS[first], journal = KEYS[first + 1], index = KEYS[first + 2],
    events = KEYS[first + 3], lots = KEYS[first + 4], lot_points = KEYS[first + 5], due = KEYS[first + 6]}
end

local function int_text(n)
  return string.format('%d', n)
end

-- A movement of the member's wallet: its journal entry and, in the same
-- step, one event in the member's own stream (the app's history and live
-- feed), so the member sees every movement exactly once, in order.
-- `points_delta` and `held_delta` are the signed changes to the member's
-- available and held points; `data` is a Lua table of the event's details.
local function wallet_entry(w, member_id, entry_id, kind, postings, meta_json, now_ms, points_delta, held_delta, data)
  local sid = journal_append(w.journal, w.index, entry_id, kind, postings, meta_json, now_ms)
  local balance = redis.call('HMGET', w.member, 'available', 'held')
  data = data or {}
  data.member_id = member_id
  redis.call('XADD', w.events, '*', 'entry', entry_id, 'kind', kind,
    'points', int_text(points_delta), 'held', int_text(held_delta or 0),
    'available_after', balance[1] or '0', 'held_after', balance[2] or '0',
    'data', cjson.encode(data), 'ts_ms', now_ms)
  return sid
end

-- Expiring points. A credit with an expiry date is a lot: its id (the
-- crediting entry id) in w.lots scored by its expiry, its unspent points in
-- w.lot_points, the total of the member's unspent lots in the member hash's
-- `expiring` (never more than `available`), and `<member id> <lot id>` in the
-- partition's w.due for the expiry job. Spending takes the earliest-expiring
-- points first and the points without expiry last; what a movement took is
-- kept as a spec `lot/expires_ms/points,...` so giving the points back puts
-- them in the same lots with the same expiry.
local function lots_add(w, member_id, lot, expires_ms, points)
  redis.call('ZADD', w.lots, expires_ms, lot)
  redis.call('HINCRBY', w.lot_points, lot, int_text(points))
  redis.call('HINCRBY', w.member, 'expiring', int_text(points))
  redis.call('ZADD', w.due, expires_ms, member_id .. ' ' .. lot)
end

local function lot_drop(w, member_id, lot)
  redis.call('HDEL', w.lot_points, lot)
  redis.call('ZREM', w.lots, lot)
  redis.call('ZREM', w.due, member_id .. ' ' .. lot)
end

-- Take `points` (already checked against `available`) from the lots,
-- earliest expiry first. Returns the spec of what was taken ('' if none).
local function lots_take(w, member_id, points)
  if hget_number(w.member, 'expiring') <= 0 then return '' end
  local taken, left = {}, points
  local flat = redis.call('ZRANGE', w.lots, 0, -1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    if left <= 0 then break end
    local lot = flat[i]
    local unspent = hget_number(w.lot_points, lot)
    local n = math.min(unspent, left)
    if n == unspent then
      lot_drop(w, member_id, lot)
    else
      redis.call('HINCRBY', w.lot_points, lot, int_text(-n))
    end
    if n > 0 then
      taken[#taken + 1] = lot .. '/' .. int_text(tonumber(flat[i + 1])) .. '/' .. int_text(n)
      left = left - n
    end
  end
  redis.call('HINCRBY', w.member, 'expiring', int_text(-(points - left)))
  return table.concat(taken, ',')
end

-- Put `points` back into the lots of `spec`, latest expiry first (the rule
-- favours the member). Returns the spec of what is still out.
local function lots_restore(w, member_id, spec, points)
  if spec == nil or spec == '' or points <= 0 then return spec or '' end
  local items = {}
  for item in string.gmatch(spec, '[^,]+') do items[#items + 1] = item end
  local left = points
  for i = #items, 1, -1 do
    if left <= 0 then break end
    local lot, expires, n = string.match(items[i], '^(.+)/([0-9]+)/([0-9]+)$')
    n = tonumber(n)
    local back = math.min(n, left)
    lots_add(w, member_id, lot, expires, back)
    left = left - back
    if back == n then items[i] = false else items[i] = lot .. '/' .. expires .. '/' .. int_text(n - back) end
  end
  local still = {}
  for _, item in ipairs(items) do if item then still[#still + 1] = item end end
  return table.concat(still, ',')
end

-- Expire every lot of the member whose expiry has passed: each is its own
-- movement (journal entry and event) to the network's expired-points
-- account. Runs first in every script that spends, and last in every script
-- that gives points back, so expired points can never be spent.
local function lots_expire(w, member_id, now_ms)
  if hget_number(w.member, 'expiring') <= 0 then return 0 end
  local unit = redis.call('HGET', w.member, 'unit')
  local flat = redis.call('ZRANGEBYSCORE', w.lots, '-inf', now_ms, 'WITHSCORES')
  local expired = 0
  for i = 1, #flat, 2 do
    local lot = flat[i]
    local n = hget_number(w.lot_points, lot)
    lot_drop(w, member_id, lot)
    if n > 0 then
      local n_text = int_text(n)
      redis.call('HINCRBY', w.member, 'available', '-' .. n_text)
      redis.call('HINCRBY', w.member, 'expiring', '-' .. n_text)
      local seq = redis.call('HINCRBY', w.member, 'expiries', 1)
      wallet_entry(w, member_id, 'expire:' .. member_id .. ':' .. seq, 'expiry', {
        posting('member:' .. member_id, unit, '-', n_text),
        posting('expired:points', unit, '', n_text),
      }, cjson.encode({lot = lot, expired_ms = int_text(tonumber(flat[i + 1]))}), now_ms, -n, 0,
        {lot = lot, expires_ms = int_text(tonumber(flat[i + 1]))})
      expired = expired + n
    end
  end
  return expired
end

local function spec_total(spec)
  local total = 0
  for item in string.gmatch(spec or '', '[^,]+') do
    total = total + tonumber(string.match(item, '/([0-9]+)$'))
  end
  return total
end

-- Give `points` back to the member's available balance. `points_out` is how
-- many of the movement's points were still out before (so this is all of
-- them when the two are equal), `spec` which lots they came from. Points
-- without expiry go back first, then the lots, latest expiry first: a partial
-- refund favours the member. Returns the spec of the lots still out.
local function wallet_give_back(w, member_id, points, spec, points_out)
  redis.call('HINCRBY', w.member, 'available', int_text(points))
  local from_lots = spec_total(spec)
  local to_lots = math.max(0, points - (points_out - from_lots))
  return lots_restore(w, member_id, spec, math.min(to_lots, from_lots))
end

-- Give back part or all of a payment: the member's share of what they paid
-- (into the lots it came from), each coupon's share of its discount to the
-- coupon's funder, the sum off the account the payment went to. Shares are
-- pro rata to `amount` of `paid`, rounded down; `last` gives back everything
-- still out and restores the coupons (coupon keys from KEYS[first_coupon]).
-- Stores the payment's coupons and lots; returns the postings, the member's
-- points back and the discount points back.
local function payment_give_back(w, payment_key, first_coupon, amount, paid, last)
  local p = redis.call('HMGET', payment_key, 'member_id', 'unit', 'account', 'points', 'refunded_points',
    'coupons', 'lots', 'payment_id')
  local member_id, unit = p[1], p[2]
  local points, refunded = tonumber(p[4]), tonumber(p[5] or '0')
  local member_back = math.floor(points * amount / paid)
  if last then member_back = points - refunded end
  local coupons = cjson.decode(p[6] or '[]')
  local funders, discount_back = {}, 0
  for i, coupon in ipairs(coupons) do
    local share, out = tonumber(coupon.discount_points), tonumber(coupon.refunded_points or '0')
    local back = math.floor(share * amount / paid)
    if last then back = share - out end
    if back > 0 then funders[#funders + 1] = posting(coupon.funding, unit, '', int_text(back)) end
    coupon.refunded_points = int_text(out + back)
    discount_back = discount_back + back
    local key = KEYS[first_coupon + i - 1]
    if last and redis.call('HGET', key, 'payment_id') == p[8] then
      redis.call('HSET', key, 'state', 'issued', 'payment_id', '', 'discount', '0', 'redeemed_ms', '')
      coupon.restored = true
    end
  end
  local postings = {}
  if member_back + discount_back > 0 then
    postings[1] = posting(p[3], unit, '-', int_text(member_back + discount_back))
  end
  if #postings > 0 then postings[#postings + 1] = posting('member:' .. member_id, unit, '', int_text(member_back)) end
  for _, funder in ipairs(funders) do postings[#postings + 1] = funder end
  local lots = wallet_give_back(w, member_id, member_back, p[7], points - refunded)
  redis.call('HSET', payment_key, 'lots', lots, 'coupons', #coupons > 0 and cjson.encode(coupons) or '[]')
  return postings, member_back, discount_back
end

-- The journal meta of a movement of a payment: who and where (from the
-- payment record), the movement's own amount in the payment's currency, and
-- `extra`. The journal then describes itself: its consumers (merchant
-- payables, network positions, settlement) need nothing else.
local function payment_meta(payment_key, amount_text, extra)
  local p = redis.call('HMGET', payment_key, 'payment_id', 'merchant_id', 'store_id', 'terminal_id', 'order_ref',
    'currency', 'account', 'partner_payment_id')
  local meta = {payment_id = p[1], merchant_id = p[2], store_id = p[3], terminal_id = p[4], order_ref = p[5],
    amount = amount_text, currency = p[6], account = p[7], partner_payment_id = p[8] or ''}
  for k, v in pairs(extra or {}) do meta[k] = v end
  return cjson.encode(meta)
end
