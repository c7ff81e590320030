-- Change a device's status on its member's request: 'revoke' (lost phone;
-- final) or 'unlock' (after failed code attempts; resets the failure count).
-- Guarantees: only the owning member can change it; a revoked device never
-- becomes active again, and its bearer token ends with it, in the same step,
-- and it no longer counts towards the member's devices. An unknown slot and
-- another member's slot answer alike, so the reply never reveals whose device
-- a slot is.
-- KEYS[1] device hash  KEYS[2] member's active devices set  KEYS[3] token hash
-- (of the device's token_hash; any key of the partition when it has none)
-- ARGV[1] 'revoke' or 'unlock'  ARGV[2] member id  ARGV[3] now (ms)  ARGV[4] slot
local device = redis.call('HMGET', KEYS[1], 'status', 'member_id', 'token_hash')
if not device[1] or device[2] ~= ARGV[2] then return {'unknown_slot'} end
if device[1] == 'revoked' then return {'revoked'} end
if ARGV[1] == 'revoke' then
  redis.call('HSET', KEYS[1], 'status', 'revoked', 'revoked_ms', ARGV[3])
  redis.call('SREM', KEYS[2], ARGV[4])
  if device[3] and redis.call('HGET', KEYS[3], 'slot') == ARGV[4] then
    redis.call('HSET', KEYS[3], 'status', 'revoked')
  end
elseif ARGV[1] == 'unlock' then
  redis.call('HSET', KEYS[1], 'status', 'active', 'failures', 0)
else
  return {'invalid_operation'}
end
return {'ok'}
