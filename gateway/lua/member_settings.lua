-- Set a member's own spending limits: both at once, so two concurrent changes
-- never leave one's threshold beside the other's cap.
-- Guarantees: each limit is set, or removed when its argument is empty; the
-- reply is the limits as stored after this step.
-- KEYS[1] member hash
-- ARGV[1] confirm_over points, or '' for none  ARGV[2] daily_cap points, or '' for the wallet's cap
-- Returns {'ok', confirm_over or nil, daily_cap or nil}.
local fields = {'confirm_over', 'daily_cap'}
for i, field in ipairs(fields) do
  if ARGV[i] == '' then
    redis.call('HDEL', KEYS[1], field)
  else
    redis.call('HSET', KEYS[1], field, ARGV[i])
  end
end
local stored = redis.call('HMGET', KEYS[1], 'confirm_over', 'daily_cap')
return {'ok', stored[1], stored[2]}
