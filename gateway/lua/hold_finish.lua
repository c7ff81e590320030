-- Phase two of a two-phase movement: post a pending hold to its destination
-- account (less an optional fee to a fee account), or void it back to the
-- member's available balance and the lots its points came from.
-- Guarantees: a hold leaves `pending` exactly once, to `posted` or `voided`,
-- never both; held never goes negative; the fee is never more than the hold;
-- state, balances, journal entry and the member's event together.
-- KEYS[1..7] the member's wallet (keyspace.wallet_keys)  KEYS[8] hold hash
-- ARGV[1] entry id  ARGV[2] 'post' or 'void'  ARGV[3] destination account (post)
-- ARGV[4] kind  ARGV[5] meta JSON  ARGV[6] now (ms)  ARGV[7] member id
-- ARGV[8] fee account ('' for none)  ARGV[9] fee points ('0' for none)
-- Returns {status, stream id, available, held}.
local w = wallet_keys(1)
local dup = already_applied(w.index, ARGV[1], w.member)
if dup then return dup end
local hold = redis.call('HMGET', KEYS[8], 'state', 'member_id', 'amount', 'unit', 'lots')
local state, member_id, amount_text, unit = hold[1], hold[2], hold[3], hold[4]
if ARGV[2] ~= 'post' and ARGV[2] ~= 'void' then return {'invalid_operation'} end
if not state or member_id ~= ARGV[7] then return {'unknown_hold'} end
if state ~= 'pending' then return balances('hold_' .. state, false, w.member) end
local amount = tonumber(amount_text)
local fee = tonumber(ARGV[9] or '0') or -1
if fee < 0 or fee > amount or math.floor(fee) ~= fee or (fee > 0 and (ARGV[8] or '') == '') then
  return {'invalid_fee'}
end

local postings
redis.call('HINCRBY', w.member, 'held', '-' .. amount_text)
local data = cjson.decode(ARGV[5])
if ARGV[2] == 'post' then
  postings = {posting('member:' .. member_id .. ':held', unit, '-', amount_text)}
  if fee < amount then postings[#postings + 1] = posting(ARGV[3], unit, '', int_text(amount - fee)) end
  if fee > 0 then
    postings[#postings + 1] = posting(ARGV[8], unit, '', int_text(fee))
    data.fee = int_text(fee)
  end
  redis.call('HSET', KEYS[8], 'state', 'posted', 'finished_ms', ARGV[6])
  return balances('ok', wallet_entry(w, member_id, ARGV[1], ARGV[4], postings, ARGV[5], ARGV[6], 0, -amount, data), w.member)
end
wallet_give_back(w, member_id, amount, hold[5], amount)
postings = {
  posting('member:' .. member_id .. ':held', unit, '-', amount_text),
  posting('member:' .. member_id, unit, '', amount_text),
}
redis.call('HSET', KEYS[8], 'state', 'voided', 'finished_ms', ARGV[6])
local sid = wallet_entry(w, member_id, ARGV[1], ARGV[4], postings, ARGV[5], ARGV[6], amount, -amount, data)
lots_expire(w, member_id, ARGV[6])
return balances('ok', sid, w.member)
