-- Verify one presented payment code against its device's state and burn it.
-- The OTP itself is checked by the caller (it holds the decrypted secret);
-- this script applies the decision atomically across all gateway processes.
-- Guarantees: each (slot, step, seq) is accepted at most once, ever (the
-- first verification with a matching OTP burns it); a revoked or locked
-- device accepts nothing; wrong OTPs count toward the lock, and the
-- slot_failures_max-th one locks the device until the member unlocks it.
-- KEYS[1] device hash  KEYS[2] used-codes sorted set
-- ARGV[1] OTP outcome: 'ok', 'expired' or 'wrong_otp'
-- ARGV[2] code counter (step * 10 + seq)  ARGV[3] failures max
-- ARGV[4] oldest counter still inside the window (older burns are trimmed)
-- Returns {outcome, member id or false, failures}.
local device = redis.call('HMGET', KEYS[1], 'status', 'member_id')
local status, member_id = device[1], device[2]
if not status then return {'unknown_slot', false, 0} end
if status ~= 'active' then return {status, false, 0} end

if ARGV[1] == 'wrong_otp' then
  local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  if failures >= tonumber(ARGV[3]) then
    redis.call('HSET', KEYS[1], 'status', 'locked')
    return {'locked', false, failures}
  end
  return {'wrong_otp', false, failures}
end
-- A code that matches an older step proves the secret (a stale screen), so it
-- is not a guess and does not count toward the lock.
if ARGV[1] == 'expired' then return {'expired', false, 0} end
if ARGV[1] ~= 'ok' then return {'invalid_outcome', false, 0} end

if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[2]) == 0 then
  return {'replayed', false, 0}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
redis.call('HSET', KEYS[1], 'failures', 0)
return {'ok', member_id, 0}
