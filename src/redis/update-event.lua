--[[
  Changes an event's quantity, end and/or pause (the kill switch), refusing a quantity below what is already
  issued. Atomic with the gate, so no coupon can slip in between the check and the write; a pause holds from the
  next gate call on, on every api. Also how a restore puts back the settings MySQL records (ARGV[4]): Redis may have
  lost the PATCH that wrote them (a failover to a replica that missed it, a restart from an older snapshot).

  KEYS[1] meta    hash
  KEYS[2] issued  string

  ARGV[1] new total ('' to keep)
  ARGV[2] new endsAt epoch ms ('' to keep, '-' to clear)
  ARGV[3] paused: '1' to pause, '0' to resume, '' to keep
  ARGV[4] '1': the settings of record, written whatever is issued (they were checked against the counter when
          they were saved); '' or absent: an admin's change, refused below what is issued

  Returns {code, issued, changed}: code 0 updated, 1 quantity below issued, 2 gate state missing; changed is how
  many of the fields had another value before (a field already holding its value is not written again).
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {2, 0, 0}
end
local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[1] ~= '' and ARGV[4] ~= '1' and tonumber(ARGV[1]) < issued then
  return {1, issued, 0}
end

local changed = 0
-- value false deletes the field
local function put(field, value)
  if redis.call('HGET', KEYS[1], field) == value then return end
  if value then
    redis.call('HSET', KEYS[1], field, value)
  else
    redis.call('HDEL', KEYS[1], field)
  end
  changed = changed + 1
end

if ARGV[1] ~= '' then
  put('total', ARGV[1])
end
if ARGV[2] == '-' then
  put('endsAt', false)
elseif ARGV[2] ~= '' then
  put('endsAt', ARGV[2])
end
if ARGV[3] == '1' then
  put('paused', '1')
elseif ARGV[3] == '0' then
  put('paused', false)
end
return {0, issued, changed}
