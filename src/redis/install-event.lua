--[[
  Installs an event's gate state, or merges what MySQL knows into a state that is already there. Used when an
  event is created, when the state is rebuilt after Redis lost it (a flush, an empty replacement), and when a
  Redis that came back older than MySQL (a failover to a replica that had not received every write) is repaired.
  The check and every write are one atomic step, so neither two restorers nor a restorer racing the gate can
  ever roll the issued counter back or take a user's coupon away.

  KEYS[1] meta    hash
  KEYS[2] issued  string
  KEYS[3] users   hash
  KEYS[4] outbox  stream (its consumer group is created here)
  KEYS[5] registry set of event ids the worker drains

  ARGV[1] eventId
  ARGV[2] total
  ARGV[3] startsAt (epoch ms)
  ARGV[4] endsAt (epoch ms, or '' when open-ended)
  ARGV[5] issued: the highest sequence MySQL knows was handed out
  ARGV[6] consumer group name
  ARGV[7] epoch: the event's gate epoch in MySQL; the state never goes back to an older one
  ARGV[8..] pairs of userId, "sequence:issuedAtMs" persisted in MySQL

  Returns 2 when it installed a missing state, 1 when it merged something into an existing one (a user or a
  higher counter that Redis lacked), 0 when the existing state already held everything.
]]
local function ensureGroup()
  if redis.call('EXISTS', KEYS[4]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[4], ARGV[6], '0', 'MKSTREAM')
  else
    pcall(redis.call, 'XGROUP', 'CREATE', KEYS[4], ARGV[6], '0')
  end
  redis.call('SADD', KEYS[5], ARGV[1])
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  local changed = 0
  for i = 8, #ARGV, 2 do
    changed = changed + redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[5]) then
    redis.call('SET', KEYS[2], ARGV[5])
    changed = changed + 1
  end
  if tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') < tonumber(ARGV[7]) then
    redis.call('HSET', KEYS[1], 'epoch', ARGV[7])
  end
  ensureGroup()
  if changed > 0 then return 1 end
  return 0
end

redis.call('DEL', KEYS[3])
for i = 8, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[2], ARGV[5])
ensureGroup()
-- The meta hash last: the gate treats an event without it as missing, so nothing issues from a half-written state.
if ARGV[4] == '' then
  redis.call('HSET', KEYS[1], 'total', ARGV[2], 'startsAt', ARGV[3], 'epoch', ARGV[7])
else
  redis.call('HSET', KEYS[1], 'total', ARGV[2], 'startsAt', ARGV[3], 'endsAt', ARGV[4], 'epoch', ARGV[7])
end
return 2
