-- Enrol a device: store its encrypted secret under a fresh slot of the
-- member's partition and, for a member's own enrolment, the bearer token the
-- answer carries, in one step.
-- Guarantees: a slot is never reused or overwritten (the caller draws another
-- on 'slot_taken'); the device is active from the moment it is written; a
-- member never has more than ARGV[6] devices that are not revoked, however
-- many enrolments run at once; under an idempotency record, one device per
-- record: a retry gets the first answer back (sealed: it holds the device's
-- secret and token), never a second device.
-- KEYS[1] device hash  KEYS[2] member devices set  KEYS[3] partition slots set
-- KEYS[4] member hash  KEYS[5] member's active devices set  KEYS[6] token hash
-- KEYS[7] idempotency record
-- ARGV[1] slot  ARGV[2] member id  ARGV[3] key id  ARGV[4] encrypted secret
-- ARGV[5] now (ms)  ARGV[6] devices max (0: no limit)
-- ARGV[7] token hash ('' for none)  ARGV[8] token expiry (ms)
-- ARGV[9] request hash ('' for no record)  ARGV[10] answer's key id
-- ARGV[11] sealed answer  ARGV[12] record ttl (s)
if ARGV[9] ~= '' then
  local record = redis.call('HMGET', KEYS[7], 'request_hash', 'key_id', 'answer')
  if record[1] then
    if record[1] ~= ARGV[9] then return {'idempotency_mismatch'} end
    return {'replay', record[2], record[3]}
  end
end
if redis.call('EXISTS', KEYS[4]) == 0 then return {'unknown_member'} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'slot_taken'} end
local devices_max = tonumber(ARGV[6])
if devices_max > 0 and redis.call('SCARD', KEYS[5]) >= devices_max then return {'too_many_devices'} end
redis.call('HSET', KEYS[1], 'member_id', ARGV[2], 'status', 'active', 'key_id', ARGV[3],
  'secret', ARGV[4], 'failures', 0, 'enrolled_ms', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'token_hash', ARGV[7])
  redis.call('HSET', KEYS[6], 'member_id', ARGV[2], 'slot', ARGV[1], 'status', 'active', 'expires_ms', ARGV[8])
  redis.call('PEXPIREAT', KEYS[6], ARGV[8])
end
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[7], 'request_hash', ARGV[9], 'key_id', ARGV[10], 'answer', ARGV[11], 'created_ms', ARGV[5])
  redis.call('EXPIRE', KEYS[7], ARGV[12])
end
return {'ok'}
