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
