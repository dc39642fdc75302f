--[[
  The global write-rate limit shared by every worker replica: a reservation bucket (GCRA).
  Each caller reserves `count` rows; rows are spaced 1/rate seconds apart on one timeline kept in Redis,
  so all replicas together never start more than `rate` rows per second. The reply tells the caller how
  long to wait before its reserved slot starts. Time is Redis TIME.

  KEYS[1] bucket  string: the theoretical arrival time of the next free slot (epoch microseconds)

  ARGV[1] rows to reserve
  ARGV[2] rate (rows per second)

  Returns the wait in milliseconds before the caller may write its rows.
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local rows = tonumber(ARGV[1])
local interval = 1000000 / tonumber(ARGV[2])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(now, next_free)
local after = start + rows * interval
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000) + 1000)
return math.ceil((start - now) / 1000)
