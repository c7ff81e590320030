-- Link a bank account to a member, given the accounts the caller read and
-- compared against (account numbers are sealed, so the caller decrypts and
-- compares; this step makes sure nothing changed since).
-- Guarantees: a member never has more than ARGV[3] accounts; the accounts the
-- caller read are still all of the member's (accounts are never removed, so
-- the same count and every id present means the same accounts), else nothing
-- is written and the reply is 'stale' so the caller reads again.
-- KEYS[1] member's bank accounts hash
-- ARGV[1] new account id  ARGV[2] its JSON  ARGV[3] accounts max  ARGV[4..] every account id read
-- Returns {'ok'}, {'stale'} or {'too_many_bank_accounts'}.
local read = #ARGV - 3
if redis.call('HLEN', KEYS[1]) ~= read or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'stale'} end
for i = 1, read do
  if redis.call('HEXISTS', KEYS[1], ARGV[3 + i]) == 0 then return {'stale'} end
end
if read >= tonumber(ARGV[3]) then return {'too_many_bank_accounts'} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'ok'}
