-- Phase two of a two-phase movement: post a pending hold to its destination
-- account, or void it back to the member's available balance.
-- Guarantees: a hold leaves `pending` exactly once, to `posted` or `voided`,
-- never both; held never goes negative; state, balances and journal together.
-- KEYS[1] member hash  KEYS[2] journal stream  KEYS[3] entry index  KEYS[4] hold hash
-- ARGV[1] entry id  ARGV[2] 'post' or 'void'  ARGV[3] destination account (post)
-- ARGV[4] kind  ARGV[5] meta JSON  ARGV[6] now (ms)  ARGV[7] member id
-- Returns {status, stream id, available, held}.
local dup = already_applied(KEYS[3], ARGV[1], KEYS[1])
if dup then return dup end
local hold = redis.call('HMGET', KEYS[4], 'state', 'member_id', 'amount', 'unit')
local state, member_id, amount_text, unit = hold[1], hold[2], hold[3], hold[4]
if ARGV[2] ~= 'post' and ARGV[2] ~= 'void' then return {'invalid_operation'} end
if not state or member_id ~= ARGV[7] then return {'unknown_hold'} end
if state ~= 'pending' then return balances('hold_' .. state, false, KEYS[1]) end

local postings
redis.call('HINCRBY', KEYS[1], 'held', '-' .. amount_text)
if ARGV[2] == 'post' then
  postings = {
    posting('member:' .. member_id .. ':held', unit, '-', amount_text),
    posting(ARGV[3], unit, '', amount_text),
  }
  redis.call('HSET', KEYS[4], 'state', 'posted', 'finished_ms', ARGV[6])
else
  redis.call('HINCRBY', KEYS[1], 'available', amount_text)
  postings = {
    posting('member:' .. member_id .. ':held', unit, '-', amount_text),
    posting('member:' .. member_id, unit, '', amount_text),
  }
  redis.call('HSET', KEYS[4], 'state', 'voided', 'finished_ms', ARGV[6])
end
local sid = journal_append(KEYS[2], KEYS[3], ARGV[1], ARGV[4], postings, ARGV[5], ARGV[6])
return balances('ok', sid, KEYS[1])
