--[[
  Deletes the gate state of an archived event in one step (the caller then takes it out of the registry, a key
  that lives elsewhere on a Cluster), but only if the state
  is still the one the archiver checked against MySQL: the same counter, the same end, the end passed by Redis's
  clock, and nothing pending in the outbox group. A state that moved on (the end was moved and the gate issued
  again) is left alone and the caller un-archives the event.

  KEYS[1] meta hash       KEYS[2] issued counter   KEYS[3] users hash
  KEYS[4] outbox stream   KEYS[5] persisted bitmap
  KEYS[6] archive tombstone: left behind, so the public reads know the event exists and ask MySQL for it
  ARGV[1] event id
  ARGV[2] the issued counter the archiver found equal to MySQL's count
  ARGV[3] the end (epoch ms) the archiver found passed
  ARGV[4] the outbox's consumer group

  Returns 1 when deleted, 0 when no state was left (the caller still removes the registry entry), -1 when the state moved on.
]]
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
  redis.call('SET', KEYS[6], '1')
  return 0
end
local issued = redis.call('GET', KEYS[2]) or '0'
local endsAt = redis.call('HGET', KEYS[1], 'endsAt')
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if issued ~= ARGV[2] or endsAt ~= ARGV[3] or tonumber(endsAt) > nowMs then
  return -1
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  local ok, summary = pcall(redis.call, 'XPENDING', KEYS[4], ARGV[4])
  if ok and tonumber(summary[1]) > 0 then
    return -1
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[6], '1')
return 1
