--[[
  Writes an event's gate state if (and only if) it is missing: used when an event is created and when the
  state is rebuilt from MySQL after Redis lost it. Doing the check and all writes in one script means two
  rebuilders, or a rebuild racing the gate, can never roll the issued counter back.

  KEYS[1] meta    hash
  KEYS[2] issued  string
  KEYS[3] users   hash
  KEYS[4] outbox  stream (its consumer group is created here)
  KEYS[5] registry set of event ids the worker drains

  ARGV[1] eventId
  ARGV[2] total
  ARGV[3] startsAt (epoch ms)
  ARGV[4] endsAt (epoch ms, or '' when open-ended)
  ARGV[5] issued: the highest sequence already handed out
  ARGV[6] consumer group name
  ARGV[7..] pairs of userId, "sequence:issuedAtMs" already persisted

  Returns 1 when it wrote the state, 0 when the state was already there.
]]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end

redis.call('DEL', KEYS[3])
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[2], ARGV[5])
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[4], ARGV[6], '0', 'MKSTREAM')
else
  local ok = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[4], ARGV[6], '0')
end
redis.call('SADD', KEYS[5], ARGV[1])
if ARGV[4] == '' then
  redis.call('HSET', KEYS[1], 'total', ARGV[2], 'startsAt', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'total', ARGV[2], 'startsAt', ARGV[3], 'endsAt', ARGV[4])
end
return 1
