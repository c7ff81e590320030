-- Settle one merchant's business day: the day's payable moves from the
-- merchant's payable account to settled (less the fee, to the fee account),
-- and the settlement report is kept as first written.
-- Guarantees: once per merchant and day (entry id `settle:<merchant>:<day>`);
-- entry and report together; nothing moves for a day with nothing payable.
-- KEYS[1] settlement journal  KEYS[2] settlement entry index  KEYS[3] the report
-- ARGV[1] entry id  ARGV[2] merchant id  ARGV[3] unit  ARGV[4] payable points (signed)
-- ARGV[5] fee points  ARGV[6] report JSON  ARGV[7] now ms
-- Returns {'ok'} or {'duplicate'}.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'duplicate'} end
local payable, fee = tonumber(ARGV[4]), tonumber(ARGV[5])
if not payable or not fee or fee < 0 or (payable <= 0 and fee > 0) or fee > math.max(payable, 0) then
  return redis.error_reply('bad settlement amounts for ' .. ARGV[1])
end
redis.call('SET', KEYS[3], ARGV[6])
if payable == 0 then return {'ok'} end
local postings
if payable > 0 then
  postings = {posting('merchant:' .. ARGV[2], ARGV[3], '-', ARGV[4]),
              posting('settled:' .. ARGV[2], ARGV[3], '', int_text(payable - fee))}
  if fee > 0 then postings[#postings + 1] = posting('fee:merchant', ARGV[3], '', ARGV[5]) end
else
  -- More given back than sold: the merchant owes the day's difference.
  postings = {posting('merchant:' .. ARGV[2], ARGV[3], '', int_text(-payable)),
              posting('settled:' .. ARGV[2], ARGV[3], '-', int_text(-payable))}
end
journal_append(KEYS[1], KEYS[2], ARGV[1], 'settlement', postings,
  cjson.encode({merchant_id = ARGV[2], fee = ARGV[5]}), ARGV[7])
return {'ok'}
