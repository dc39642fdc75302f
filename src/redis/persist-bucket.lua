--[[
  The global write timeline shared by every worker replica (GCRA): rows are given slots 1/rate seconds apart on
  one timeline kept in Redis, so all replicas together never write more than `rate` rows per second. A caller
  writes its rows in its own slots only, each insert at the time of its first slot. Time is Redis TIME.

  Reserving (ARGV[1] > 0) appends slots at the end of the timeline. With a horizon (ARGV[3] > 0) it grants only
  the slots that start within that many ms of now, in whole steps of ARGV[4] rows, or nothing: that is how a
  worker reads no more outbox entries than it can write before other workers would claim them. A timeline that
  is free now always grants one step, so a horizon shorter than a step cannot stall the writers.

  Giving back (ARGV[1] < 0) returns that many slots from the end of the caller's reservation, which ended at
  ARGV[5], if no other reservation came after it (otherwise the slots just pass unused).

  KEYS[1] bucket  string: the end of the timeline, the start of the next free slot (epoch microseconds)

  ARGV[1] rows to reserve, or minus the rows to give back
  ARGV[2] rate (rows per second)
  ARGV[3] horizon in ms (0: grant every row asked for, however far ahead)
  ARGV[4] step: with a horizon, grant a multiple of this many rows (all rows asked for, when fewer)
  ARGV[5] when giving back: the end of the caller's reservation, as this script returned it

  Returns {rows, wait_us, end}:
    reserving: the rows granted; the microseconds until the first of them starts (when none were granted: until
    one step would fit within the horizon); the end of the timeline after them (a string, for a give-back).
    giving back: the rows given back (0 or all asked for), 0, the end of the timeline.
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local rows = tonumber(ARGV[1])
local interval = 1000000 / tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local next_free = tonumber(stored or '0')

local function set_end(after)
  local text = string.format('%.0f', after)
  redis.call('SET', KEYS[1], text, 'PX', math.max(1, math.ceil((after - now) / 1000)) + 1000)
  return text
end

if rows < 0 then
  if stored == nil or stored ~= ARGV[5] then return {0, 0, stored or '0'} end
  return {-rows, 0, set_end(next_free + rows * interval)}
end

local start = math.max(now, next_free)
local horizon = tonumber(ARGV[3] or '0') * 1000
if horizon > 0 then
  local step = math.min(rows, math.max(1, tonumber(ARGV[4] or '1')))
  local fit = math.floor((now + horizon - start) / interval)
  local granted = math.min(rows, fit - fit % step)
  if granted < step then
    if start > now then
      return {0, math.ceil(start + step * interval - horizon - now), stored or '0'}
    end
    granted = step
  end
  rows = granted
end
return {rows, math.ceil(start - now), set_end(start + rows * interval)}
