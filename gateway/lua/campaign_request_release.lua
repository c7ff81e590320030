-- Let go of a claimed campaign request that was refused (nothing was written
-- for it), so the caller may send it again once the reason is gone.
-- Guarantees: only the claiming request's own, unfinished claim is removed.
-- KEYS[1] idempotency key   ARGV[1] request hash
-- Returns {'released'} or {'kept'}.
local stored = redis.call('HMGET', KEYS[1], 'request_hash', 'state')
if stored[1] ~= ARGV[1] or stored[2] == 'done' then return {'kept'} end
redis.call('DEL', KEYS[1])
return {'released'}
