-- submit.lua: applies a chunk of one board's score events, in order, atomically.
--
-- KEYS  [1] definition hash  [2] dedupe zset (event id -> forget-at ms)  [3] key index zset (key -> expire-at)
--       [4] operation sequence counter  [5] operation log stream
--       then per slot s = 1..S, W keys starting at KEYS[5 + (s-1)*W + 1]: the leaderboard zset and, on
--       dense boards (W = 3), its distinct-value zset and distinct-value count hash;
--       last, the event print hash (event id -> print of the event it was first accepted with).
-- ARGV  [1] definition version  [2] now ms  [3] dedupe ttl ms  [4] policy incr|best|set  [5] order desc|asc
--       [6] rank mode ordinal|competition|dense  [7] score bound (0: any finite score)  [8] max members
--       (0: unbounded)  [9] reply full|count|check  [10] log 1|0  [11] S, then S pairs (expire-at ms or 0, tick
--       bits), then E and E events: member, value, event id ('' for none), at ms, scopes (space-separated),
--       now ms (when the event was received: dedupe decisions use it, so a rebuild can replay events of
--       different times in one call), k, then k pairs (slot, tick), then the event's print (a digest of
--       its member, value and set of scopes; '' without an event id).
--       With log 1, every accepted event takes the next sequence number and is appended to the log stream
--       as entry 0-<seq>
--       (fields o=e s=seq m v i a n=now c=scopes), for the durable store to copy.
-- Reply count: {accepted, duplicates, first sequence number (0 without log), per-event flags '1' accepted
--       '0' duplicate}.
--       full (one event): {duplicate 0|1, {{score|nil, rank|nil, previous rank|nil} per slot of the event},
--       sequence number (0 without log or when duplicate)}.
--       check: writes nothing and answers {event index, '<field>: <detail>', ...} for every event the
--       chunk would refuse, each judged as if the events before it were applied and the refused ones
--       were not; {} when it would take them all. It lets a caller about to make several calls find
--       every refusal before the first call writes.
-- Errors RANKD_NOBOARD, RANKD_STALE <version>, RANKD_RANGE <event index> <field>: <detail>,
--       RANKD_REUSED <event index> <event id>: the id stands for another event (one the board remembers
--       with another print, or an earlier event of the chunk); in check mode it is listed as
--       'event_id: reused'.
--       An error means nothing was written: events are checked before the first write, except on
--       boards that trim to max members, whose writes are undone before a refusal is answered.
-- Cost  O(E * k * log N), plus O(log N + M) per key when max members trims M members.

local err = check_def(KEYS[1], ARGV[1])
if err then
  return err
end

local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local policy = ARGV[4]
local desc = ARGV[5] == 'desc'
local mode = ARGV[6]
local bound = tonumber(ARGV[7])
local max_members = tonumber(ARGV[8])
local full = ARGV[9] == 'full'
local check = ARGV[9] == 'check'
local logged = ARGV[10] == '1'
local dense = mode == 'dense'
local width = dense and 3 or 1

local slots = {}
local a = 12
for s = 1, tonumber(ARGV[11]) do
  local base = 5 + (s - 1) * width
  local ctx = board_ctx(KEYS[base + 1], KEYS[base + 2], desc, mode, tonumber(ARGV[a + 1]))
  ctx.dc = KEYS[base + 3]
  ctx.expire = tonumber(ARGV[a])
  slots[s] = ctx
  a = a + 2
end

-- Events stay in ARGV: pos[e] is the index of event e's member there, its other fields follow it (see
-- the layout above), its (slot, tick) pairs run from pos[e] + 7 to last[e], and its print is at
-- last[e] + 2. No table per event: a chunk holds hundreds of events, and each table costs more than the
-- fields it would save reading.
local pos, last, values = {}, {}, {}
local count = tonumber(ARGV[a])
a = a + 1
for e = 1, count do
  pos[e] = a
  values[e] = tonumber(ARGV[a + 1])
  a = a + 8 + 2 * tonumber(ARGV[a + 6])
  last[e] = a - 3
end
local prints_key = KEYS[#KEYS]

local function out_of_bound(v)
  return v ~= v or v == math.huge or v == -math.huge or (bound > 0 and (v > bound or v < -bound))
end

local function bound_text()
  if bound > 0 then
    return 'an integer in [-' .. fmt(bound) .. ', ' .. fmt(bound) .. ']'
  end
  return 'finite'
end

-- The stored score after applying `value` to `old` (nil when absent), or nil and the reason it is refused.
local function next_score(ctx, old, value, tick)
  local oldv = old and decode(old, ctx.pow)
  local newv
  if policy == 'incr' then
    newv = (oldv or 0) + value
  elseif policy == 'set' or oldv == nil then
    newv = value
  elseif (desc and value > oldv) or (not desc and value < oldv) then
    newv = value
  else
    newv = oldv
  end
  if oldv ~= nil and newv == oldv then
    -- Unchanged value: keep the stored score, and with it the moment the member first reached it.
    return old
  end
  if out_of_bound(newv) then
    return nil, 'the resulting score ' .. fmt(newv) .. ' must be ' .. bound_text()
  end
  return encode(newv, ctx.pow, tick, desc)
end

-- Names per ZMSCORE or pairs per ZADD: far below the Lua stack's limit on unpacked arguments.
local MULTI = 1000

-- Reads `names` from zset `key` in as few calls as the argument limit allows: one ZMSCORE answers a list
-- for much less than a ZSCORE call per name. Returns name -> score, false where absent.
local function scores_of(key, names)
  local out = {}
  for i = 1, #names, MULTI do
    local got = redis.call('ZMSCORE', key, unpack(names, i, math.min(i + MULTI - 1, #names)))
    for j = 1, #got do
      out[names[i + j - 1]] = tonumber(got[j]) or false
    end
  end
  return out
end

-- Every score pass 1 may need, read up front: each slot's members (first-seen order) and the event ids.
local initial, order = {}, {}
local ids, forget = {}, {}
for s = 1, #slots do
  order[s] = {}
  initial[s] = {}
end
for e = 1, count do
  local p = pos[e]
  local member, id = ARGV[p], ARGV[p + 2]
  if id ~= '' and forget[id] == nil then
    forget[id] = false
    ids[#ids + 1] = id
  end
  for q = p + 7, last[e], 2 do
    local slot = tonumber(ARGV[q])
    if initial[slot][member] == nil then
      initial[slot][member] = false
      order[slot][#order[slot] + 1] = member
    end
  end
end
for s = 1, #slots do
  initial[s] = scores_of(slots[s].key, order[s])
end
forget = scores_of(KEYS[2], ids)
-- The prints the remembered ids were accepted with (false where none was kept).
local known = {}
for i = 1, #ids, MULTI do
  local got = redis.call('HMGET', prints_key, unpack(ids, i, math.min(i + MULTI - 1, #ids)))
  for j = 1, #got do
    known[ids[i + j - 1]] = got[j]
  end
end

-- Boards that trim to max members cannot be judged before writing: an event's score depends on whether
-- the events before it trimmed its member away, and that depends on every other member of the key. They
-- are applied in order with every change recorded (pass 2), and an event that leaves the range has the
-- chunk's changes undone before the refusal is answered. Other boards are judged exactly in pass 1.
local trims = max_members > 0

-- Pass 1: decide duplicates and check every event against the scores it would produce, writing nothing.
-- pending[s][member] holds the member's stored score in slot s after the accepted events so far.
local dup = {}
local seen = {}
local pending = {}
-- Check mode: the refused events, {index, reason, ...}.
local refused = {}
-- Events a refusal of their value (pass 1) or of their sum (pass 2, check mode) leaves out.
local skip = {}
for s = 1, #slots do
  pending[s] = {}
end
-- The stored score `member` would hold in `slot` after `value`, given the pending scores, or nil and
-- the reason it is refused.
local function next_in(slot, member, value, tick)
  local cur = pending[slot][member]
  if cur == nil then
    cur = initial[slot][member]
  end
  return next_score(slots[slot], cur or nil, value, tick)
end
-- Check mode: why adding event e to the pending scores would leave the board's range, or nil.
local function sum_refusal(e)
  local p = pos[e]
  for q = p + 7, last[e], 2 do
    local nxt, why = next_in(tonumber(ARGV[q]), ARGV[p], values[e], tonumber(ARGV[q + 1]))
    if not nxt then
      return 'value: ' .. why
    end
  end
  return nil
end
-- Whether event e repeats an id already taken (earlier in the chunk, or remembered and not yet forgotten).
local function is_dup(e)
  local p = pos[e]
  local id = ARGV[p + 2]
  return id ~= '' and (seen[id] or (forget[id] and forget[id] > tonumber(ARGV[p + 5]))) or false
end
local function refuse(e, why)
  refused[#refused + 1] = e - 1
  refused[#refused + 1] = why
  skip[e] = true
end
-- An event id stands for one event (its print). An id the board remembers with another print, or that
-- an earlier event of this chunk carries with another, is a client reusing it for another event: refused
-- before anything is written, on every kind of board.
local claimed = {}
for e = 1, count do
  local p = pos[e]
  local id = ARGV[p + 2]
  if id ~= '' then
    local mine = ARGV[last[e] + 2]
    local theirs = claimed[id]
    if theirs == nil and forget[id] and forget[id] > tonumber(ARGV[p + 5]) and known[id] then
      theirs = known[id]
    end
    if theirs and mine ~= '' and theirs ~= mine then
      if not check then
        return fail('REUSED', (e - 1) .. ' ' .. id)
      end
      refuse(e, 'event_id: reused')
    elseif theirs == nil then
      claimed[id] = mine
    end
  end
end
for e = 1, count do
  local p, value = pos[e], values[e]
  if skip[e] then
    -- Refused above.
  elseif value == nil or out_of_bound(value) or (bound > 0 and value ~= math.floor(value)) then
    if not check then
      return fail('RANGE', (e - 1) .. ' value: must be ' .. bound_text())
    end
    refuse(e, 'value: must be ' .. bound_text())
  elseif not trims then
    local d = is_dup(e)
    -- A refused event leaves no trace: neither its id nor its scores.
    local why = check and not d and sum_refusal(e)
    if why then
      refuse(e, why)
    else
      if ARGV[p + 2] ~= '' then
        seen[ARGV[p + 2]] = true
      end
      if d then
        dup[e] = true
      else
        local member = ARGV[p]
        for q = p + 7, last[e], 2 do
          local slot = tonumber(ARGV[q])
          local nxt, bad = next_in(slot, member, value, tonumber(ARGV[q + 1]))
          if not nxt then
            return fail('RANGE', (e - 1) .. ' value: ' .. bad)
          end
          pending[slot][member] = nxt
        end
      end
    end
  end
end
if check and not trims then
  return refused
end

-- Pass 2: write. With trimming (or ranks to report), scores are read again: trimming to max members may
-- have removed a member.

-- With trimming, every change to a leaderboard key, {ctx, member, score before, score after} (false:
-- absent), so that a refusal can undo them (Redis does not roll a script back).
local undo = {}

-- On dense boards, moves one member's count in the distinct-value index from `old` (nil: none) to `new`
-- (nil: none).
local function dense_move(ctx, old, new)
  if dense then
    if old then
      dense_count(ctx, ctx.dc, old, -1)
    end
    if new then
      dense_count(ctx, ctx.dc, new, 1)
    end
  end
end

local function trim(ctx)
  local n = redis.call('ZCARD', ctx.key) - max_members
  if n <= 0 then
    return
  end
  local first, last = 0, n - 1
  if not desc then
    first, last = -n, -1
  end
  local gone = redis.call('ZRANGE', ctx.key, first, last, 'WITHSCORES')
  for i = 1, #gone, 2 do
    local sc = tonumber(gone[i + 1])
    dense_move(ctx, sc, nil)
    undo[#undo + 1] = { ctx, gone[i], sc, false }
  end
  redis.call('ZREMRANGEBYRANK', ctx.key, first, last)
end

-- Undoes the recorded changes past the first `keep`, newest first.
local function rollback(keep)
  for i = #undo, keep + 1, -1 do
    local ctx, member, before, after = unpack(undo[i])
    if before then
      redis.call('ZADD', ctx.key, fmt(before), member)
    else
      redis.call('ZREM', ctx.key, member)
    end
    dense_move(ctx, after or nil, before or nil)
    undo[i] = nil
  end
end

local function standing(e)
  local rows = {}
  local member = ARGV[pos[e]]
  for q = pos[e] + 7, last[e], 2 do
    local ctx = slots[tonumber(ARGV[q])]
    local sc = tonumber(redis.call('ZSCORE', ctx.key, member))
    if sc then
      local r = rank_of(ctx, member, sc)
      rows[#rows + 1] = { fmt(sc), r, r }
    else
      rows[#rows + 1] = { false, false, false }
    end
  end
  return rows
end

-- Ids past their window are forgotten a bounded number at a time (a chunk remembers at most as many),
-- with their prints; one still held past its time is already no duplicate (see is_dup).
if ttl > 0 and not check then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, MULTI)
  if #gone > 0 then
    redis.call('ZREM', KEYS[2], unpack(gone))
    redis.call('HDEL', prints_key, unpack(gone))
  end
end

-- Without trimming, every member's score after each event is exactly what pass 1 worked out (nothing
-- else writes in between): count-mode batches reuse it instead of reading it again.
local reuse = not full and not trims

-- (score, member) pairs for one variadic ZADD per call of at most MULTI pairs.
local function zadd_pairs(key, args)
  for i = 1, #args, 2 * MULTI do
    redis.call('ZADD', key, unpack(args, i, math.min(i + 2 * MULTI - 1, #args)))
  end
end

-- Event ids to remember, as (forget-at, id) pairs, and their prints, as (id, print) pairs.
local remember = {}
local prints = {}
local duplicates = 0
-- The accepted events, in order: they take the next sequence numbers once the chunk stands.
local taken = {}
local flags = {}
local reply
local touched = {}
for e = 1, count do
  local p = pos[e]
  if trims and not skip[e] then
    dup[e] = is_dup(e)
  end
  if skip[e] then
    flags[e] = '-'
  elseif dup[e] then
    duplicates = duplicates + 1
    flags[e] = '0'
    if full then
      reply = { 1, standing(e), 0 }
    end
  else
    local member, id = ARGV[p], ARGV[p + 2]
    local rows = full and {}
    local mark = #undo
    local why = nil
    -- Reused scores are written after this loop, once per member.
    if not reuse then
      for q = p + 7, last[e], 2 do
        local ctx = slots[tonumber(ARGV[q])]
        local old = tonumber(redis.call('ZSCORE', ctx.key, member))
        local prev = false
        if full and old then
          prev = rank_of(ctx, member, old)
        end
        local new, bad = next_score(ctx, old, values[e], tonumber(ARGV[q + 1]))
        if not new then
          why = bad
          break
        end
        if new ~= old then
          if trims then
            undo[#undo + 1] = { ctx, member, old or false, new }
          end
          redis.call('ZADD', ctx.key, fmt(new), member)
          dense_move(ctx, old, new)
          if trims then
            trim(ctx)
          end
        end
        if full then
          local sc = tonumber(redis.call('ZSCORE', ctx.key, member))
          if sc then
            rows[#rows + 1] = { fmt(sc), rank_of(ctx, member, sc), prev }
          else
            rows[#rows + 1] = { false, false, prev }
          end
        end
      end
    end
    if why and not check then
      rollback(0)
      return fail('RANGE', (e - 1) .. ' value: ' .. why)
    elseif why then
      rollback(mark)
      refuse(e, 'value: ' .. why)
      flags[e] = '-'
    else
      for q = p + 7, last[e], 2 do
        touched[tonumber(ARGV[q])] = true
      end
      if id ~= '' then
        seen[id] = true
        if ttl > 0 then
          remember[#remember + 1] = tonumber(ARGV[p + 5]) + ttl
          remember[#remember + 1] = id
          if ARGV[last[e] + 2] ~= '' then
            prints[#prints + 1] = id
            prints[#prints + 1] = ARGV[last[e] + 2]
          end
        end
      end
      taken[#taken + 1] = e
      flags[e] = '1'
      if full then
        reply = { 0, rows, 0 }
      end
    end
  end
end

if check then
  rollback(0)
  return refused
end

-- The chunk stands: every accepted event takes the next sequence number and is logged, in order.
local first_seq = 0
if logged and #taken > 0 then
  local seq = redis.call('INCRBY', KEYS[4], #taken) - #taken
  first_seq = seq + 1
  for _, e in ipairs(taken) do
    local p = pos[e]
    seq = seq + 1
    redis.call('XADD', KEYS[5], '0-' .. seq, 'o', 'e', 's', seq, 'm', ARGV[p], 'v', ARGV[p + 1], 'i', ARGV[p + 2],
      'a', ARGV[p + 3], 'n', tonumber(ARGV[p + 5]), 'c', ARGV[p + 4])
  end
  if full and reply[1] == 0 then
    reply[3] = seq
  end
end

zadd_pairs(KEYS[2], remember)
for i = 1, #prints, 2 * MULTI do
  redis.call('HSET', prints_key, unpack(prints, i, math.min(i + 2 * MULTI - 1, #prints)))
end

-- Reused scores: each member's final score in one write, in first-seen order. A member's
-- intermediate scores within the chunk were never read by anything, so only its first and last
-- matter, to the sorted set and to the distinct-value counts alike.
if reuse then
  for s, ctx in ipairs(slots) do
    local args = {}
    for _, member in ipairs(order[s]) do
      local old, new = initial[s][member] or nil, pending[s][member]
      if new ~= nil and new ~= old then
        args[#args + 1] = fmt(new)
        args[#args + 1] = member
        dense_move(ctx, old, new)
      end
    end
    zadd_pairs(ctx.key, args)
  end
end

-- Register every written key in the index (so removals and deletion find it) and set its expiry.
for s, ctx in ipairs(slots) do
  if touched[s] then
    if ctx.expire > 0 then
      redis.call('PEXPIREAT', ctx.key, ctx.expire)
      if dense then
        redis.call('PEXPIREAT', ctx.dv, ctx.expire)
        redis.call('PEXPIREAT', ctx.dc, ctx.expire)
      end
      redis.call('ZADD', KEYS[3], ctx.expire, ctx.key)
    else
      redis.call('ZADD', KEYS[3], '+inf', ctx.key)
    end
  end
end

if full then
  return reply
end
return { #taken, duplicates, first_seq, table.concat(flags) }
