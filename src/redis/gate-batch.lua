--[[
  The apply gate, batched: decides several requests for one event in one atomic step, each in the order given and
  each exactly as gate.lua would decide it alone, one call after another (the property test in
  test/integration/gate-batch.test.ts holds the two to the same answers and the same writes). What one call
  shares: the checked-node check, one read of the event's fields and of its users' entries, one Redis TIME, one
  count of good replicas (only when some request would write), one INCRBY, one HSET of the users, and the reply;
  each coupon still has its own XADD.

  KEYS[1..4] as gate.lua: meta (hash), issued (string), users (hash), outbox (stream)

  ARGV[1] eventId
  ARGV[2] on a Cluster: the ids of the primaries the caller has compared with MySQL (gate.lua ARGV[4])
  ARGV[3] GATE_MIN_REPLICAS (gate.lua ARGV[5])
  ARGV[4] the most seconds since a replica's last acknowledgement for it to count (gate.lua ARGV[6])
  ARGV[5 + 3(i-1)], ARGV[6 + 3(i-1)], ARGV[7 + 3(i-1)]: request i's userId, requestId and attempt id
          (gate.lua ARGV[2], ARGV[3], ARGV[7])

  Returns {node, code1, sequence1, issuedAtMs1, code2, ...}: node as gate.lua returns it for 0 and 6 (the same for
  the whole call: it runs on one node), and per request gate.lua's {code, sequence, issuedAtMs}, with its codes.
  Code 8 (unchecked node) and 5 (no gate state) answer every request of the call alike, as gate.lua would.
]]
local checked = ARGV[2]
local node = ''
local count = math.floor((#ARGV - 4) / 3)
local reply = {''}
local function answerAll(code)
  for i = 1, count do
    reply[#reply + 1] = code
    reply[#reply + 1] = 0
    reply[#reply + 1] = 0
  end
  return reply
end

if checked and checked ~= '' then
  node = redis.call('CLUSTER', 'MYID')
  if not string.find(checked, node, 1, true) then
    return answerAll(8)
  end
end
reply[1] = node

-- Counted once, when the first request would write: replication cannot change while the script runs.
local minReplicas = tonumber(ARGV[3]) or 0
local goodReplicas
local function tooFewReplicas()
  if minReplicas <= 0 then return false end
  if not goodReplicas then
    local maxLag = tonumber(ARGV[4]) or 1
    goodReplicas = 0
    -- lag may read -1: Redis takes it as the cached clock minus the last ACK's time, and an ACK can land after
    -- the clock was cached (seen on a healthy replica, 1 call in a few hundred under load). Redis's own
    -- min-replicas-max-lag counts such a replica as current, and so does this.
    for state, lag in string.gmatch(redis.call('INFO', 'replication'), 'slave%d+:[^\r\n]*state=(%a+)[^\r\n]*lag=(%-?%d+)') do
      if state == 'online' and tonumber(lag) <= maxLag then goodReplicas = goodReplicas + 1 end
    end
  end
  return goodReplicas < minReplicas
end

-- One read of the event's fields and of every user's abandoned attempts and entry. Within the call only the
-- script itself changes them: an entry it writes is kept in `entries`; the abandoned field it deletes belongs to a
-- user who then holds an entry, which is looked at first.
local fields = {'total', 'startsAt', 'endsAt', 'paused'}
local userIds = {}
for i = 1, count do
  local userId = ARGV[5 + 3 * (i - 1)]
  userIds[i] = userId
  fields[4 + i] = 'abandoned:' .. userId
end
local meta = redis.call('HMGET', KEYS[1], unpack(fields))
local total = tonumber(meta[1])
if not total then
  return answerAll(5)
end
local previousOf = redis.call('HMGET', KEYS[3], unpack(userIds))
local entries = {}
for i = 1, count do
  if entries[userIds[i]] == nil then entries[userIds[i]] = previousOf[i] end
end

local now
local issued
-- The writes, made after every request is decided, one command each but the XADDs (one outbox entry per coupon, as
-- the worker reads them), in gate.lua's order: counter first, so a write that fails part-way can leave sequences
-- unused, never hand one out twice.
local before
local userWrites = {}
local givenUpDone = {}
local coupons = {}
local function answer(code, sequence, issuedAt)
  reply[#reply + 1] = code
  reply[#reply + 1] = sequence
  reply[#reply + 1] = issuedAt
end

for i = 1, count do
  local base = 5 + 3 * (i - 1)
  local userId, requestId, attempt = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local previous = entries[userId]
  if previous then
    local sequence, issuedAt, recordedId = string.match(previous, '^(%d+):(%d+):?(.*)$')
    if recordedId == requestId then
      if tooFewReplicas() then
        answer(9, goodReplicas, 0)
      else
        userWrites[#userWrites + 1] = userId
        userWrites[#userWrites + 1] = previous
        answer(6, tonumber(sequence), tonumber(issuedAt))
      end
    else
      answer(1, tonumber(sequence), 0)
    end
  else
    local abandoned = meta[4 + i]
    if abandoned and attempt and attempt ~= '' and string.find(abandoned .. ' ', ' ' .. attempt .. ' ', 1, true) then
      answer(10, 0, 0)
    elseif meta[4] == '1' then
      answer(7, 0, 0)
    else
      if not now then
        local time = redis.call('TIME')
        now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
      end
      local endsAt = tonumber(meta[3])
      if now < tonumber(meta[2]) then
        answer(3, 0, 0)
      elseif endsAt and now >= endsAt then
        answer(4, 0, 0)
      else
        if not issued then
          issued = tonumber(redis.call('GET', KEYS[2]) or '0')
          before = issued
        end
        if issued >= total then
          answer(2, 0, 0)
        elseif tooFewReplicas() then
          answer(9, goodReplicas, 0)
        else
          issued = issued + 1
          if abandoned then givenUpDone[#givenUpDone + 1] = 'abandoned:' .. userId end
          local entry = issued .. ':' .. now .. ':' .. requestId
          userWrites[#userWrites + 1] = userId
          userWrites[#userWrites + 1] = entry
          entries[userId] = entry
          coupons[#coupons + 1] = userId
          answer(0, issued, now)
        end
      end
    end
  end
end

if #coupons > 0 then
  redis.call('INCRBY', KEYS[2], #coupons)
  -- A holder's given-up attempts can issue nothing more (the entry answers them): the record has done its work.
  if #givenUpDone > 0 then redis.call('HDEL', KEYS[1], unpack(givenUpDone)) end
end
if #userWrites > 0 then redis.call('HSET', KEYS[3], unpack(userWrites)) end
for i = 1, #coupons do
  redis.call('XADD', KEYS[4], '*', 'eventId', ARGV[1], 'userId', coupons[i], 'sequence', before + i, 'issuedAt', now)
end
return reply
