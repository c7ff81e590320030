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
local outcome, member_id, failures = verify_code(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return {outcome, member_id, failures}
