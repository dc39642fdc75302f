--[[
  Removes a consumer from a stream's group, but only if it holds no pending entries. The check and the removal
  are one step: a consumer that reads entries between them would otherwise lose them from the pending list, and
  no other worker could ever claim them.

  KEYS[1] outbox stream
  ARGV[1] group
  ARGV[2] consumer

  Returns 1 when removed, 0 when it holds pending entries (or the stream or group is gone).
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
