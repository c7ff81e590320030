-- Debit points from a member's available balance to an external account
-- (a merchant's payable, cash-out clearing, ...).
-- Guarantees: applied at most once per entry id; never leaves the available
-- balance negative; balance change and journal entry are written together.
-- KEYS[1] member hash   KEYS[2] journal stream   KEYS[3] entry index
-- ARGV[1] entry id  ARGV[2] amount  ARGV[3] destination account  ARGV[4] kind
-- ARGV[5] meta JSON ARGV[6] now (ms) ARGV[7] member id  ARGV[8] unit
-- Returns {status, stream id, available, held}.
local dup = already_applied(KEYS[3], ARGV[1], KEYS[1])
if dup then return dup end
local amount = parse_amount(ARGV[2])
if not amount then return {'invalid_amount'} end
local unit = redis.call('HGET', KEYS[1], 'unit')
if not unit then return {'unknown_member'} end
if unit ~= ARGV[8] then return {'unit_mismatch'} end
if hget_number(KEYS[1], 'available') < amount then
  return balances('insufficient_points', false, KEYS[1])
end

redis.call('HINCRBY', KEYS[1], 'available', '-' .. ARGV[2])
local sid = journal_append(KEYS[2], KEYS[3], ARGV[1], ARGV[4], {
  posting('member:' .. ARGV[7], unit, '-', ARGV[2]),
  posting(ARGV[3], unit, '', ARGV[2]),
}, ARGV[5], ARGV[6])
return balances('ok', sid, KEYS[1])
