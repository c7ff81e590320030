-- Register a merchant (or another signing principal: affiliate, partner
-- network, operator) under an id no one holds yet.
-- Guarantees: an id is registered once; a registered merchant is never
-- overwritten (its status, name and settings stay as they are).
-- KEYS[1] merchant hash
-- ARGV[1] name  ARGV[2] currency  ARGV[3] time zone  ARGV[4] business day cutoff
-- ARGV[5] receipt width  ARGV[6] role  ARGV[7] now (ms)
-- Returns {'ok'} or {'duplicate'} when the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'duplicate'} end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'currency', ARGV[2], 'time_zone', ARGV[3],
  'business_day_cutoff', ARGV[4], 'receipt_width', ARGV[5], 'status', 'active', 'role', ARGV[6],
  'created_ms', ARGV[7])
return {'ok'}
