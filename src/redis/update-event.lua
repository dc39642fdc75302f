--[[
  Changes an event's quantity, end and/or pause (the kill switch), refusing a quantity below what is already
  issued. Atomic with the gate, so no coupon can slip in between the check and the write; a pause holds from the
  next gate call on, on every api.

  KEYS[1] meta    hash
  KEYS[2] issued  string

  ARGV[1] new total ('' to keep)
  ARGV[2] new endsAt epoch ms ('' to keep, '-' to clear)
  ARGV[3] paused: '1' to pause, '0' to resume, '' to keep

  Returns {code, issued}: 0 updated, 1 quantity below issued, 2 gate state missing.
]]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {2, 0}
end
local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[1] ~= '' then
  if tonumber(ARGV[1]) < issued then
    return {1, issued}
  end
  redis.call('HSET', KEYS[1], 'total', ARGV[1])
end
if ARGV[2] == '-' then
  redis.call('HDEL', KEYS[1], 'endsAt')
elseif ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'endsAt', ARGV[2])
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'paused', '1')
elseif ARGV[3] == '0' then
  redis.call('HDEL', KEYS[1], 'paused')
end
return {0, issued}
