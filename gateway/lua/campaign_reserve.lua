-- Reserve one coupon of a campaign's total before it is issued in a member's
-- partition (a different hash slot, so it cannot be the same script).
-- Guarantees: the counter never passes the total limit; a reservation whose
-- issue is refused is given back by the caller (HINCRBY -1), so the counter
-- is never below the coupons issued, and above it only by issues that died
-- between the two steps (the campaign then under-issues; it never over-issues).
-- KEYS[1] issued counters (hash)   ARGV[1] campaign id   ARGV[2] total limit ('0': none)
-- Returns {'reserved', count} or {'campaign_exhausted', count}.
local issued = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local limit = tonumber(ARGV[2])
if limit > 0 and issued >= limit then return {'campaign_exhausted', string.format('%d', issued)} end
return {'reserved', string.format('%d', redis.call('HINCRBY', KEYS[1], ARGV[1], 1))}
