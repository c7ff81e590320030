-- Enrol a device: store its encrypted secret under a fresh slot of the
-- member's partition.
-- Guarantees: a slot is never reused or overwritten (the caller draws another
-- on 'slot_taken'); the device is active from the moment it is written.
-- KEYS[1] device hash  KEYS[2] member devices set  KEYS[3] partition slots set
-- KEYS[4] member hash
-- ARGV[1] slot  ARGV[2] member id  ARGV[3] key id  ARGV[4] encrypted secret
-- ARGV[5] now (ms)
if redis.call('EXISTS', KEYS[4]) == 0 then return {'unknown_member'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'slot_taken'} end
redis.call('HSET', KEYS[1], 'member_id', ARGV[2], 'status', 'active', 'key_id', ARGV[3],
  'secret', ARGV[4], 'failures', 0, 'enrolled_ms', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return {'ok'}
