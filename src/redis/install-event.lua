--[[
  Installs an event's gate state, or merges what MySQL knows into a state that is already there. Used when an
  event is created, when the state is rebuilt after Redis lost it (a flush, an empty replacement), and when a
  Redis that came back older than MySQL (a failover to a replica that had not received every write) is repaired.
  Neither two restorers nor a restorer racing the gate can ever roll the issued counter back or take a user's
  coupon away.

  An event of any size is written a chunk of users per call (installEventState sends at most 500), so no call
  holds Redis for more than a millisecond or two:
    install     one call for a small state: a missing state is written whole, an existing one merged into
    begin       a missing state, first chunk: the users hash is cleared and marked with this restorer's token
    stage       a further chunk of that state, written only while the marker still carries the token
    commit      the last chunk, then the counter, the outbox group and the meta hash, last: the gate treats an
                event without its meta hash as missing, so nothing issues from a half-written state
    merge       a chunk of users merged into an existing state (HSETNX) and the counter raised to ARGV[6]
    merge-last  the same, then the epoch raised and the outbox group ensured
  A restorer that begins while another one stages takes the state over (a new token): the first one's next call
  answers superseded and it stops, so the two never interleave their chunks into one state.

  KEYS[1] meta    hash
  KEYS[2] issued  string
  KEYS[3] users   hash; while a state is staged, also the field MARKER (never a user id: ids have no ':')
  KEYS[4] outbox  stream (its consumer group is created here)
  All four share the event's hash tag, so the script runs on Redis Cluster too. The registry of events (a key of
  its own, elsewhere on a Cluster) is written by the caller before the first call: see installEventState.

  ARGV[1] mode (above)
  ARGV[2] eventId
  ARGV[3] total
  ARGV[4] startsAt (epoch ms)
  ARGV[5] endsAt (epoch ms, or '' when open-ended)
  ARGV[6] issued: the highest sequence MySQL knows was handed out
  ARGV[7] consumer group name
  ARGV[8] epoch: the event's gate epoch in MySQL; the state never goes back to an older one
  ARGV[9] token of the restorer staging a missing state ('' for install and merge)
  ARGV[10] paused: '1' when MySQL records the event as paused (written with the meta hash of a missing state; a
           state that exists keeps its settings here: the restore puts MySQL's back afterwards, under the event's
           row lock, with update-event.lua)
  ARGV[11..] pairs of userId, "sequence:issuedAtMs[:requestId]" persisted in MySQL

  Returns
    install          2 installed a missing state, 1 merged something (a user or a higher counter) into an existing
                     one, 0 the existing state already held everything
    begin, stage     3 staged; begin -1: the state exists (merge instead); stage -2: superseded
    commit           2 installed; -2 superseded
    merge[-last]     how many users and counter raises it merged (0 or more); -3 the state is gone (restore again)
]]
local MARKER = ':restoring'
local mode = ARGV[1]
local FIRST_PAIR = 11

local function ensureGroup()
  if redis.call('EXISTS', KEYS[4]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[4], ARGV[7], '0', 'MKSTREAM')
  else
    pcall(redis.call, 'XGROUP', 'CREATE', KEYS[4], ARGV[7], '0')
  end
end

local function writePairs()
  if #ARGV >= FIRST_PAIR then
    redis.call('HSET', KEYS[3], unpack(ARGV, FIRST_PAIR))
  end
end

local function mergePairs()
  local changed = 0
  for i = FIRST_PAIR, #ARGV, 2 do
    changed = changed + redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[6]) then
    redis.call('SET', KEYS[2], ARGV[6])
    changed = changed + 1
  end
  return changed
end

local function finishMerge()
  if tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') < tonumber(ARGV[8]) then
    redis.call('HSET', KEYS[1], 'epoch', ARGV[8])
  end
  ensureGroup()
end

local function writeState()
  redis.call('SET', KEYS[2], ARGV[6])
  ensureGroup()
  local meta = {'total', ARGV[3], 'startsAt', ARGV[4], 'epoch', ARGV[8]}
  if ARGV[5] ~= '' then
    table.insert(meta, 'endsAt')
    table.insert(meta, ARGV[5])
  end
  if ARGV[10] == '1' then
    table.insert(meta, 'paused')
    table.insert(meta, '1')
  end
  redis.call('HSET', KEYS[1], unpack(meta))
end

local exists = redis.call('EXISTS', KEYS[1]) == 1

if mode == 'install' then
  if exists then
    local changed = mergePairs()
    finishMerge()
    if changed > 0 then return 1 end
    return 0
  end
  -- UNLINK: a big leftover hash is freed in the background, not while the script holds Redis.
  redis.call('UNLINK', KEYS[3])
  writePairs()
  writeState()
  return 2
end

if mode == 'merge' or mode == 'merge-last' then
  if not exists then return -3 end
  local changed = mergePairs()
  if mode == 'merge-last' then finishMerge() end
  return changed
end

if mode == 'begin' then
  if exists then return -1 end
  redis.call('UNLINK', KEYS[3])
  redis.call('HSET', KEYS[3], MARKER, ARGV[9])
  writePairs()
  return 3
end

if mode ~= 'stage' and mode ~= 'commit' then
  return redis.error_reply('install-event: unknown mode ' .. tostring(mode))
end
-- stage and commit: only the restorer whose token the marker carries writes on.
if exists or redis.call('HGET', KEYS[3], MARKER) ~= ARGV[9] then return -2 end
writePairs()
if mode == 'stage' then return 3 end
redis.call('HDEL', KEYS[3], MARKER)
writeState()
return 2
