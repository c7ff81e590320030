-- Close a terminal's open batch and open the next one. The comparison with
-- what the terminal reported is computed by the caller from what this script
-- returns, then stored by idem_finish.lua.
-- Guarantees: every movement counted in the closed batch is counted in no
-- other; a retry of the same request gets the same closed batch back (it is
-- kept with the idempotency key until the response is stored).
-- KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key  KEYS[4] terminal batch
-- KEYS[5] terminal batch log  KEYS[6] closed batches hash (batch no -> JSON)
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- Returns {'closed', batch JSON}, {'replay', response JSON} or {error code}.
local stored = redis.call('HMGET', KEYS[3], 'request_hash', 'state', 'closed')
if stored[1] == ARGV[2] and stored[2] == 'closed' then
  if redis.call('HGET', KEYS[2], 'status') ~= 'active' then return {'unknown_key'} end
  if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {'nonce_replayed'} end
  return {'closed', stored[3]}
end
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end

local batch_no = redis.call('HGET', KEYS[4], 'batch_no') or '1'
local totals = redis.call('HGETALL', KEYS[4])
local object = {}
for i = 1, #totals, 2 do object[totals[i]] = totals[i + 1] end
object.batch_no = batch_no
object.closed_ms = ARGV[4]
object.log = redis.call('LRANGE', KEYS[5], 0, -1)
local closed = cjson.encode(object)
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('HSET', KEYS[4], 'batch_no', tostring(tonumber(batch_no) + 1))
redis.call('HSET', KEYS[6], batch_no, closed)
redis.call('HSET', KEYS[3], 'request_hash', ARGV[2], 'state', 'closed', 'closed', closed, 'created_ms', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {'closed', closed}
