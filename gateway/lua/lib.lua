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
