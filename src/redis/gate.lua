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
  ARGV[5] GATE_MIN_REPLICAS: before it writes, the script counts this primary's good replicas (INFO replication:
          online, and acknowledged within ARGV[6] seconds, as Redis's own min-replicas-max-lag counts them) and
          writes nothing when there are fewer. A write that no replica can acknowledge would be answered 503 after
          the coupon was issued: stock drained to users told only 503. Empty, absent or 0: no check.
  ARGV[6] the most seconds since a replica's last acknowledgement for it to count (with ARGV[5])
  ARGV[7] this call's attempt id (unique among the user's calls): a caller whose deadline passed records the
          attempt abandoned (abandon-attempt.lua, meta field 'abandoned:<userId>') before it answers 503, and the
          script then never issues for it, however late the client sends it again (ioredis re-sends after TRYAGAIN,
          CLUSTERDOWN or a closed connection on its own timers). Empty or absent: no check.

  Returns {code, sequence, issuedAtMs}, and for 0 and 6 the id of the node that ran it (on a Cluster; '' otherwise):
  the caller's WAIT must go to that node, which may not be the one its slot map names (ASK).
    0 issued (sequence, issuedAtMs)   1 already applied (sequence)   2 sold out
    3 not started                     4 ended                        5 gate state missing (Redis lost it)
    6 a repeat of the request that was issued this user's coupon (sequence, issuedAtMs): its entry is written
      again, unchanged, so that a replica acknowledging this call also holds the original write
    7 paused: an operator stopped issuing (the kill switch)
    8 this node is not one the caller has compared with MySQL (ARGV[4]): nothing was read or written
    9 fewer good replicas than ARGV[5] (their count): nothing was written
   10 the caller gave this attempt up (ARGV[7]) and answered 503: nothing was written

  A holder hears 1 (already applied) whatever the event's state: paused, ended or sold out, their coupon stands.

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

local minReplicas = tonumber(ARGV[5]) or 0
local function tooFewReplicas()
  if minReplicas <= 0 then return nil end
  local maxLag = tonumber(ARGV[6]) or 1
  local good = 0
  -- lag may read -1: Redis takes it as the cached clock minus the last ACK's time, and an ACK can land after
  -- the clock was cached (seen on a healthy replica, 1 call in a few hundred under load). Redis's own
  -- min-replicas-max-lag counts such a replica as current, and so does this.
  for state, lag in string.gmatch(redis.call('INFO', 'replication'), 'slave%d+:[^\r\n]*state=(%a+)[^\r\n]*lag=(%-?%d+)') do
    if state == 'online' and tonumber(lag) <= maxLag then good = good + 1 end
  end
  if good < minReplicas then return {9, good, 0} end
  return nil
end

local abandonedField = 'abandoned:' .. ARGV[2]
local meta = redis.call('HMGET', KEYS[1], 'total', 'startsAt', 'endsAt', 'paused', abandonedField)
local total = tonumber(meta[1])
if not total then
  return {5, 0, 0}
end

local previous = redis.call('HGET', KEYS[3], ARGV[2])
if previous then
  local sequence, issuedAt, requestId = string.match(previous, '^(%d+):(%d+):?(.*)$')
  if requestId == ARGV[3] then
    local refused = tooFewReplicas()
    if refused then return refused end
    redis.call('HSET', KEYS[3], ARGV[2], previous)
    return {6, tonumber(sequence), tonumber(issuedAt), node}
  end
  return {1, tonumber(sequence), 0}
end

-- Attempts given up, space-separated, each preceded by a space.
local attempt = ARGV[7]
if meta[5] and attempt and attempt ~= '' and string.find(meta[5] .. ' ', ' ' .. attempt .. ' ', 1, true) then
  return {10, 0, 0}
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

local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
if issued >= total then
  return {2, 0, 0}
end

local refused = tooFewReplicas()
if refused then return refused end

local sequence = redis.call('INCR', KEYS[2])
-- A holder's given-up attempts can issue nothing more (the entry answers them): the record has done its work.
if meta[5] then redis.call('HDEL', KEYS[1], abandonedField) end
redis.call('HSET', KEYS[3], ARGV[2], sequence .. ':' .. now .. ':' .. ARGV[3])
redis.call('XADD', KEYS[4], '*', 'eventId', ARGV[1], 'userId', ARGV[2], 'sequence', sequence, 'issuedAt', now)
return {0, sequence, now, node}
