-- Create a member wallet with zero balance, once.
-- KEYS[1] member hash   KEYS[2] partition members set
-- ARGV[1] member id     ARGV[2] points unit   ARGV[3] now (ms)
-- Returns {'ok'} or {'duplicate'} when the member already exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'duplicate'}
end
redis.call('HSET', KEYS[1], 'available', 0, 'held', 0, 'unit', ARGV[2], 'created_ms', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return {'ok'}
