--[[
  Records that the api gave one gate call up (its deadline passed, it answers 503): gate.lua never issues for that
  attempt afterwards, whenever the client delivers it (ioredis re-sends a script after TRYAGAIN, CLUSTERDOWN or a
  closed connection, on its own timers). One key, so that it runs even while the event's slot is half moved (a
  script of several keys then gets TRYAGAIN, as the gate does): the record lives in the meta hash, which the gate
  reads in the same atomic step in which it would issue. Whichever comes first wins: the gate ran before, and the
  user's entry (read by the caller after this) is there; or it runs after, and it refuses.

  KEYS[1] meta   hash   field 'abandoned:<userId>': the user's given-up attempt ids, each preceded by a space
                        (gate.lua deletes the field once the user holds a coupon)

  ARGV[1] userId
  ARGV[2] attempt id (gate.lua ARGV[7]): no spaces

  Returns 1 recorded (or already), 0 no gate state (no meta hash; nothing is created: a meta hash marks a state
  that exists): the gate cannot issue now, but could after a restore wrote the state again.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local field = 'abandoned:' .. ARGV[1]
local given = redis.call('HGET', KEYS[1], field) or ''
if not string.find(given .. ' ', ' ' .. ARGV[2] .. ' ', 1, true) then
  redis.call('HSET', KEYS[1], field, given .. ' ' .. ARGV[2])
end
return 1
