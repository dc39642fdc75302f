--[[
  The apply gate: decides one user's request for one event in a single atomic step.

  KEYS[1] meta    hash   total, startsAt (epoch ms), endsAt (epoch ms, absent when open-ended), paused ('1' while
                         an operator has paused issuing)
  KEYS[2] issued  string coupons issued so far (the last sequence handed out)
  KEYS[3] users   hash   userId -> "sequence:issuedAtMs:requestId"
  KEYS[4] outbox  stream issued coupons waiting to be persisted

  ARGV[1] eventId
  ARGV[2] userId
  ARGV[3] requestId: recorded with the user, so a caller whose reply timed out can learn whether it was its
          own request that got the coupon; a client's Idempotency-Key when it sent one, so a retry of the
          request that got the coupon gets the same answer again
  ARGV[4] on a Cluster: the ids (CLUSTER MYID) of the primaries the caller has compared with MySQL, comma-separated;
          the script runs only on one of them. The caller picks the node from its slot map, but its client follows
          MOVED and ASK to whichever node owns the slot now, which may be one not compared yet (a promoted replica,
          a slot moved). Empty or absent: one server, nothing to check.

  Returns {code, sequence, issuedAtMs}, and for 0 and 6 the id of the node that ran it (on a Cluster; '' otherwise):
  the caller's WAIT must go to that node, which may not be the one its slot map names (ASK).
    0 issued (sequence, issuedAtMs)   1 already applied (sequence)   2 sold out
    3 not started                     4 ended                        5 gate state missing (Redis lost it)
    6 a repeat of the request that was issued this user's coupon (sequence, issuedAtMs): its entry is written
      again, unchanged, so that a replica acknowledging this call also holds the original write
    7 paused: an operator stopped issuing (the kill switch)
    8 this node is not one the caller has compared with MySQL (ARGV[4]): nothing was read or written

  Time is Redis TIME, never the caller's clock, so every api pod judges the window alike.
]]
local checked = ARGV[4]
local node = ''
if checked and checked ~= '' then
  node = redis.call('CLUSTER', 'MYID')
  if not string.find(checked, node, 1, true) then
    return {8, 0, 0}
  end
end

local meta = redis.call('HMGET', KEYS[1], 'total', 'startsAt', 'endsAt', 'paused')
local total = tonumber(meta[1])
if not total then
  return {5, 0, 0}
end

local previous = redis.call('HGET', KEYS[3], ARGV[2])
if previous then
  local sequence, issuedAt, requestId = string.match(previous, '^(%d+):(%d+):?(.*)$')
  if requestId == ARGV[3] then
    redis.call('HSET', KEYS[3], ARGV[2], previous)
    return {6, tonumber(sequence), tonumber(issuedAt), node}
  end
end

if meta[4] == '1' then
  return {7, 0, 0}
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if now < tonumber(meta[2]) then
  return {3, 0, 0}
end
local endsAt = tonumber(meta[3])
if endsAt and now >= endsAt then
  return {4, 0, 0}
end

if previous then
  return {1, tonumber(string.match(previous, '^(%d+)')), 0}
end

local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
if issued >= total then
  return {2, 0, 0}
end

local sequence = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[2], sequence .. ':' .. now .. ':' .. ARGV[3])
redis.call('XADD', KEYS[4], '*', 'eventId', ARGV[1], 'userId', ARGV[2], 'sequence', sequence, 'issuedAt', now)
return {0, sequence, now, node}
