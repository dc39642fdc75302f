--[[
  What the gate state says now about coupons a worker is about to write: the event's gate epoch and, for each
  user, the entry the gate recorded. A coupon is the gate's current word only if its user's entry carries its
  sequence; anything else was issued by a state that has since been replaced (a flush, a failover) and must not
  be written over the answers given since.

  KEYS[1] meta   hash (field epoch)
  KEYS[2] users  hash userId -> "sequence:issuedAtMs:requestId"

  ARGV[1..] userIds

  Returns {epoch, entry1, entry2, ...} with false for a user the gate does not know; {-1} when the state is missing.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
local reply = {tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')}
local entries = redis.call('HMGET', KEYS[2], unpack(ARGV))
for i = 1, #entries do
  reply[i + 1] = entries[i]
end
return reply
