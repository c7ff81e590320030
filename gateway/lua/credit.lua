-- Credit points to a member's available balance from an external account
-- (an affiliate's funding, a refund from a merchant's payable, ...).
-- Guarantees: applied at most once per entry id; the balance change and its
-- journal entry are written together or not at all.
-- KEYS[1] member hash   KEYS[2] journal stream   KEYS[3] entry index
-- ARGV[1] entry id  ARGV[2] amount  ARGV[3] source account  ARGV[4] kind
-- ARGV[5] meta JSON ARGV[6] now (ms) ARGV[7] member id  ARGV[8] unit
-- Returns {status, stream id, available, held}.
local dup = already_applied(KEYS[3], ARGV[1], KEYS[1])
if dup then return dup end
local amount = parse_amount(ARGV[2])
if not amount then return {'invalid_amount'} end
local unit = redis.call('HGET', KEYS[1], 'unit')
if not unit then return {'unknown_member'} end
if unit ~= ARGV[8] then return {'unit_mismatch'} end

redis.call('HINCRBY', KEYS[1], 'available', ARGV[2])
local sid = journal_append(KEYS[2], KEYS[3], ARGV[1], ARGV[4], {
  posting(ARGV[3], unit, '-', ARGV[2]),
  posting('member:' .. ARGV[7], unit, '', ARGV[2]),
}, ARGV[5], ARGV[6])
return balances('ok', sid, KEYS[1])
