-- submit.lua: applies a chunk of one board's score events, in order, atomically.
--
-- KEYS  [1] definition hash  [2] dedupe zset (event id -> forget-at ms)  [3] key index zset (key -> expire-at)
--       [4] operation sequence counter  [5] operation log stream
--       then per slot s = 1..S, W keys starting at KEYS[5 + (s-1)*W + 1]: the leaderboard zset and, on
--       dense boards (W = 3), its distinct-value zset and distinct-value count hash;
--       last, the event print hash (event id -> print of the event it was first accepted with), the
--       scope index zset (scope -> expire-at ms of its latest key, +inf for never), the removal
--       hash (member under removal -> data keys written for it since the removal began) and the
--       board's cache hash (see pages_changed in lib.lua).
-- ARGV  [1] definition version  [2] now ms  [3] dedupe ttl ms  [4] policy incr|best|set  [5] order desc|asc
--       [6] rank mode ordinal|competition|dense  [7] score bound (0: any finite score)  [8] max members
--       (0: unbounded)  [9] reply full|each|count|check  [10] log 1|0  [11] max scopes (0: unbounded, as
--       a replay of accepted events passes it)  [12] S, then S triples (expire-at ms or 0, tick bits,
--       scope or '' for the global board), then E and E events: member, value, event id ('' for none),
--       at ms, scopes (space-separated),
--       now ms (when the event was received: dedupe decisions use it, so a rebuild can replay events of
--       different times in one call), k, then k pairs (slot, tick), then the event's print (a digest of
--       its member, value and set of scopes; '' without an event id).
--       With log 1, every accepted event takes the next sequence number and is appended to the log stream
--       as entry 0-<seq>
--       (fields o=e s=seq m v i a n=now c=scopes), for the durable store to copy.
-- Reply count: {accepted, duplicates, first sequence number (0 without log), per-event flags '1' accepted
--       '0' duplicate}.
--       full (one event): {duplicate 0|1, sequence number (0 without log or when duplicate), then per
--       slot of the event its score|nil, rank|nil, previous rank|nil}, flat: one table costs Redis less
--       to turn into a reply than one per slot.
--       each: every event's own answer, in order: as full, and for a refused event {2, '<field>: <detail>'};
--       one event's refusal (a value or sum out of range, a reused id) refuses that event only, as if it
--       had been sent alone at its place, and the others are applied. Concurrent single writes share a
--       call this way.
--       check: writes nothing and answers {event index, '<field>: <detail>', ...} for every event the
--       chunk would refuse, each judged as if the events before it were applied and the refused ones
--       were not; {} when it would take them all. It lets a caller about to make several calls find
--       every refusal before the first call writes.
-- Errors RANKD_NOBOARD, RANKD_STALE <version>, RANKD_RANGE <event index> <field>: <detail> (a value
--       or sum out of range, or 'scopes: ...' for a scope beyond max scopes),
--       RANKD_REUSED <event index> <event id>: the id stands for another event (one the board remembers
--       with another print, or an earlier event of the chunk); in check mode it is listed as
--       'event_id: reused'.
--       An error means nothing was written: events are checked before the first write, except on
--       boards that trim to max members, whose writes are undone before a refusal is answered.
-- Cost  O(E * k * log N), plus O(log N + M) per key when max members trims M members (M at most
--       TRIM_SLICE per write). A write that changes a cached page (one ranked within its depth before
--       or after) also moves that page's version: O(log N) more for the exact position, and O(D) for
--       the D depths cached of the key.
--
-- Scopes. The scope index holds every scope of the board with the expiry of its latest key; a scope
-- counts towards max scopes while that lies ahead, so a scope whose keys all expired stops counting
-- (on boards with the all-time window, whose keys never expire, a scope counts until the board is
-- deleted). A key the key index holds live is of a known scope: the common write reads nothing more.
-- A key new to the index costs one ZSCORE of its scope, and a scope new to the board one ZCOUNT.
--
-- Removals. A member removal (lua/remove_member.lua) goes through the board's keys a chunk at a
-- time; while one is under way the definition's field rm lists its member, and the keys this script
-- writes for that member, and every key it adds to the key index, are noted in the removal hash for
-- the removal to go through again before it ends.

local now = tonumber(ARGV[2])
local def = redis.call('HMGET', KEYS[1], 'v', 'rm', 'cd')
if not def[1] then
  return fail('NOBOARD', 'the board is not defined')
end
if def[1] ~= ARGV[1] then
  return fail('STALE', def[1])
end
-- The deepest page of the board any rankd instance caches (0: none; see pages_changed in lib.lua).
local depth = tonumber(def[3]) or 0

local ttl = tonumber(ARGV[3])
local policy = ARGV[4]
local desc = ARGV[5] == 'desc'
local mode = ARGV[6]
local bound = tonumber(ARGV[7])
local max_members = tonumber(ARGV[8])
local each = ARGV[9] == 'each'
local full = ARGV[9] == 'full' or each
local check = ARGV[9] == 'check'
-- Refusals are listed (check) or answered per event (each), not an error for the whole call.
local lists = check or each
local logged = ARGV[10] == '1'
local dense = mode == 'dense'
local width = dense and 3 or 1
local max_scopes = tonumber(ARGV[11])

-- A small non-negative integer argument (a slot number, a tick, a count). One digit is read without
-- tonumber, whose strtod costs more than a whole redis.call of the work around it.
local byte = string.byte
local function int(text)
  if #text == 1 then
    local b = byte(text)
    if b >= 48 and b <= 57 then
      return b - 48
    end
  end
  return tonumber(text)
end

-- Each slot as board_ctx (lib.lua) has it, with its distinct-value counts (dc), x, the index in ARGV of
-- its expiry (Unix ms, 0: never), and its scope ('' for the global board).
local slots = {}
local a = 13
for s = 1, int(ARGV[12]) do
  local base = 5 + (s - 1) * width
  local bits = ARGV[a + 1]
  slots[s] = {
    key = KEYS[base + 1],
    dv = KEYS[base + 2],
    dc = KEYS[base + 3],
    desc = desc,
    mode = mode,
    pow = bits == '0' and 1 or 2 ^ int(bits),
    x = a,
    scope = ARGV[a + 2],
  }
  a = a + 3
end

-- Names per ZMSCORE or pairs per ZADD: far below the Lua stack's limit on unpacked arguments.
local MULTI = 1000
-- Most members one write trims from a key (see trim below).
local TRIM_SLICE = 1000
local prints_key = KEYS[#KEYS - 3]
local scopes_key = KEYS[#KEYS - 2]
local removals_key = KEYS[#KEYS - 1]
local cv = KEYS[#KEYS]

-- Members under removal (see Removals above): the definition's rm lists them, one
-- '<lease end ms> <member>' a line; a removal whose lease ended is over (its next call starts again).
local removing = nil
if def[2] then
  for line in string.gmatch(def[2], '[^\n]+') do
    local sp = string.find(line, ' ', 1, true)
    if sp and tonumber(string.sub(line, 1, sp - 1)) > now then
      removing = removing or {}
      removing[string.sub(line, sp + 1)] = {}
    end
  end
end

-- What the key index holds for each slot's key (its expiry as Redis writes a score, 'inf' for never;
-- false: absent), read before anything is written, for the slots in `list` not read yet.
local held = {}
local function read_held(list)
  local todo = {}
  for _, s in ipairs(list) do
    if held[s] == nil then
      held[s] = false
      todo[#todo + 1] = s
    end
  end
  for i = 1, #todo, MULTI do
    local names = {}
    for j = i, math.min(i + MULTI - 1, #todo) do
      names[#names + 1] = slots[todo[j]].key
    end
    local got = redis.call('ZMSCORE', KEYS[3], unpack(names))
    for j = 1, #got do
      held[todo[i + j - 1]] = got[j]
    end
  end
end

local function live(expiry)
  return expiry and (expiry == 'inf' or tonumber(expiry) > now)
end

-- Scopes the board keeps: known[scope] is true once found live (by its key or in the scope index),
-- false once found absent; added lists the scopes new to the board this call takes, n_added of them;
-- kept is how many the scope index counts live, read when the first new scope shows up.
local known, added, n_added, kept = {}, {}, 0, nil

-- Takes the scopes of the keys at ARGV[first], ARGV[first + 2], ... ARGV[stop] (slot numbers), or
-- answers why not ('scopes: ...'), taking none of them.
local function take_scopes(first, stop)
  local mine = nil
  for q = first, stop, 2 do
    local s = int(ARGV[q])
    local sc = slots[s].scope
    if sc ~= '' and not known[sc] and not added[sc] then
      if live(held[s]) then
        known[sc] = true
      else
        if known[sc] == nil then
          known[sc] = live(redis.call('ZSCORE', scopes_key, sc)) or false
        end
        if not known[sc] then
          if kept == nil then
            kept = redis.call('ZCOUNT', scopes_key, '(' .. now, '+inf')
          end
          if max_scopes > 0 and kept + n_added >= max_scopes then
            for _, back in ipairs(mine or {}) do
              added[back] = nil
              n_added = n_added - 1
            end
            return 'scopes: the board keeps at most ' .. max_scopes .. ' scopes (max_scopes), and '
              .. sc .. ' would be one more'
          end
          added[sc] = true
          n_added = n_added + 1
          mine = mine or {}
          mine[#mine + 1] = sc
        end
      end
    end
  end
  return nil
end

local function out_of_bound(v)
  return v ~= v or v == math.huge or v == -math.huge or (bound > 0 and (v > bound or v < -bound))
end

-- Whether a submitted value is refused whatever it is applied to.
local function bad_value(v)
  return v == nil or out_of_bound(v) or (bound > 0 and v ~= math.floor(v))
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

-- The 0-based position of a member ranked `rank` (in the board's rank mode; nil: absent) when it may lie
-- within the deepest cached page, else nil. A rank in another mode than ordinal is at most the position
-- plus one, so only a member ranked within that depth costs an exact lookup. For the position before a
-- write, call it before the write.
local function cached_pos(ctx, member, rank)
  if not rank or rank - 1 >= depth then
    return nil
  end
  if ctx.mode == 'ordinal' then
    return rank - 1
  end
  if ctx.desc then
    return redis.call('ZREVRANK', ctx.key, member)
  end
  return redis.call('ZRANK', ctx.key, member)
end

-- After a write that moved a member from rank `prev` (position `before`, from cached_pos before the write;
-- nil: the member was absent) to rank `rank`: moves the version of every cached page of the key that the
-- write changed.
local function pages_moved(ctx, member, prev, before, rank)
  if depth == 0 then
    return
  end
  if not prev then
    -- A member added: the key's count changed, which every page shows.
    pages_changed(cv, ctx.key, 0)
    return
  end
  local p = math.min(before or depth, cached_pos(ctx, member, rank) or depth)
  if p < depth then
    pages_changed(cv, ctx.key, p)
  end
end

-- Calls that do not rank what they write (batches in count mode, boards that trim) judge each cached
-- depth d of a slot against the entry at position d - 1, read before the slot's first write: the page
-- changed when a member added or removed changed the count, or when any write's score before or after
-- reaches that entry (or the key held fewer than d members). A write that does neither leaves the top d
-- as they were. bounds[slot] lists {d, score, member, hit} per cached depth.
local bounds = {}
local function reaches(stored, member, b)
  if desc then
    return stored > b[2] or (stored == b[2] and not bytes_less(member, b[3]))
  end
  return stored < b[2] or (stored == b[2] and not bytes_less(b[3], member))
end
local function note_write(slot, member, old, new)
  if depth == 0 then
    return
  end
  local b = bounds[slot]
  if not b then
    b = {}
    bounds[slot] = b
    local ctx = slots[slot]
    local list = redis.call('HGET', cv, 'd:' .. ctx.key)
    for d in string.gmatch(list or '', '%d+') do
      local at = by_position(ctx, tonumber(d) - 1, tonumber(d) - 1)
      b[#b + 1] = { d, tonumber(at[2]), at[1], at[1] == nil }
    end
  end
  for _, x in ipairs(b) do
    if not x[4] and (not old or not new or reaches(old, member, x) or reaches(new, member, x)) then
      x[4] = true
    end
  end
end
local function bounds_moved()
  for slot, b in pairs(bounds) do
    for _, x in ipairs(b) do
      if x[4] then
        redis.call('HINCRBY', cv, 'v:' .. slots[slot].key .. ':' .. x[1], 1)
      end
    end
  end
end

-- Ids past their window are forgotten a bounded number at a time (a chunk remembers at most as many),
-- with their prints; one still held past its time is already no duplicate (see is_dup). A single event
-- takes that step one call in 16 (by its time), a chunk of several every call: each step forgets up to
-- MULTI ids, far more than the calls in between remember.
local function forget_step(always)
  if ttl > 0 and (always or now % 16 == 0) then
    local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, MULTI)
    if #gone > 0 then
      redis.call('ZREM', KEYS[2], unpack(gone))
      redis.call('HDEL', prints_key, unpack(gone))
    end
  end
end

-- Keys to note for the removals under way: per member under removal, the keys written for it, and
-- (under '') every key added to the key index, which a removal's walk of the index may have passed.
local noted = {}
local function note(member, key)
  if removing and (member == '' or removing[member]) then
    local list = noted[member] or {}
    noted[member] = list
    list[#list + 1] = key
  end
end

-- Appends the noted keys to each removal's list in the removal hash.
local function save_noted()
  if not removing then
    return
  end
  local moved = noted[''] or {}
  for member, _ in pairs(removing) do
    local keys = noted[member] or {}
    for _, k in ipairs(moved) do
      keys[#keys + 1] = k
    end
    if #keys > 0 then
      local before = redis.call('HGET', removals_key, member)
      local text = table.concat(keys, ' ')
      redis.call('HSET', removals_key, member, before and (before .. ' ' .. text) or text)
    end
  end
end

-- Every written key is in the index (so removals and deletion find it) with its expiry, set when the key
-- may be new (a write added a member to it: fresh[slot]) or its expiry differs from the one the index
-- holds (the board's retention changed): held (read before the writes), not a write per key per event.
-- A scoped key's scope goes in the scope index with the same expiry (or a later one it has). The
-- expiry is set relative to the call's time, so that Redis expires the key when rankd meant it to go,
-- counted on Redis's clock: a skew between the two clocks shifts when the key goes, and never deletes it
-- as it is written. `written` lists the slots written to, each once.
local function register(written, fresh)
  for _, s in ipairs(written) do
    local ctx = slots[s]
    local expire = ARGV[ctx.x]
    -- The index holds the expiry as Redis writes a score in a reply: 'inf' for never.
    if fresh[s] or held[s] ~= (expire == '0' and 'inf' or expire) then
      local score = expire
      if expire ~= '0' then
        local ttl_ms = tonumber(expire) - now
        if dense then
          redis.call('PEXPIRE', ctx.dv, ttl_ms)
          redis.call('PEXPIRE', ctx.dc, ttl_ms)
        end
      else
        score = '+inf'
      end
      redis.call('ZADD', KEYS[3], score, ctx.key)
      if ctx.scope ~= '' then
        -- GT: a scope's expiry is its latest key's; a scope absent from the index is added.
        redis.call('ZADD', scopes_key, 'GT', score, ctx.scope)
      end
      note('', ctx.key)
    end
  end
  save_noted()
end

-- Appends to `out` a duplicate's answer for one key: the member's stored score `sc` (nil or false:
-- absent) and its rank, twice (nothing moved).
local function push_standing(out, ctx, member, sc)
  local n = #out
  if sc then
    local r = rank_of(ctx, member, sc)
    out[n + 1], out[n + 2], out[n + 3] = fmt(sc), r, r
  else
    out[n + 1], out[n + 2], out[n + 3] = false, false, false
  end
end

-- The first sequence number of `n` accepted events, taken from the board's counter (0 without log).
local function take_seqs(n)
  if not logged or n == 0 then
    return 0
  end
  return redis.call('INCRBY', KEYS[4], n) - n + 1
end

-- Appends the accepted event whose member is at ARGV[p] to the log as entry 0-<seq>.
local function log_event(p, seq)
  redis.call('XADD', KEYS[5], '0-' .. seq, 'o', 'e', 's', seq, 'm', ARGV[p], 'v', ARGV[p + 1], 'i', ARGV[p + 2],
    'a', ARGV[p + 3], 'n', tonumber(ARGV[p + 5]), 'c', ARGV[p + 4])
end

-- One event with a full reply, on a board that does not trim: the common single write. It decides exactly
-- as the general path below does, in the same order (a reused id, then the value, then a duplicate), and
-- writes the same, but reads each score once and builds no table beyond its answer. The event's member is
-- at ARGV[p]. An event that names one key twice (a scope given twice) takes the general path,
-- which applies it in turn.
if ARGV[9] == 'full' and ARGV[8] == '0' and ARGV[a] == '1' then
  local p = a + 1
  local first, stop = p + 7, p + 5 + 2 * int(ARGV[p + 6])
  local twice = false
  for q = first + 2, stop, 2 do
    for r = first, q - 2, 2 do
      twice = twice or ARGV[q] == ARGV[r]
    end
  end
  if not twice then
    local member, value, id, mine = ARGV[p], tonumber(ARGV[p + 1]), ARGV[p + 2], ARGV[stop + 2]
    local received = tonumber(ARGV[p + 5])
    local dup = false
    if id ~= '' then
      local forget_at = tonumber(redis.call('ZSCORE', KEYS[2], id))
      if forget_at and forget_at > received then
        local theirs = redis.call('HGET', prints_key, id)
        if theirs and mine ~= '' and theirs ~= mine then
          return fail('REUSED', '0 ' .. id)
        end
        dup = true
      end
    end
    if bad_value(value) then
      return fail('RANGE', '0 value: must be ' .. bound_text())
    end
    -- The answer, flat (see the layout above): {duplicate, sequence number, then per key its score, rank
    -- and rank before}.
    local out = { 0, 0 }
    if dup then
      forget_step(false)
      out[1] = 1
      for q = first, stop, 2 do
        local ctx = slots[int(ARGV[q])]
        push_standing(out, ctx, member, tonumber(redis.call('ZSCORE', ctx.key, member)))
      end
      return out
    end
    local touched = {}
    for q = first, stop, 2 do
      touched[#touched + 1] = int(ARGV[q])
    end
    read_held(touched)
    local why = take_scopes(first, stop)
    if why then
      return fail('RANGE', '0 ' .. why)
    end
    -- Every new score is worked out, and the event refused, before the first write. Until the writes,
    -- each key's three places in the answer hold its score before (false: absent) and after.
    for q = first, stop, 2 do
      local ctx = slots[int(ARGV[q])]
      local old = tonumber(redis.call('ZSCORE', ctx.key, member))
      local new, bad = next_score(ctx, old, value, int(ARGV[q + 1]))
      if not new then
        return fail('RANGE', '0 value: ' .. bad)
      end
      local n = #out
      out[n + 1], out[n + 2], out[n + 3] = old or false, new, false
    end
    forget_step(false)
    local written, fresh = {}, {}
    local n, i = 0, 2
    for q = first, stop, 2 do
      n = n + 1
      local slot = int(ARGV[q])
      local ctx = slots[slot]
      local old, new = out[i + 1], out[i + 2]
      written[n] = slot
      note(member, ctx.key)
      if old == new then
        local r = rank_of(ctx, member, new)
        out[i + 1], out[i + 2], out[i + 3] = fmt(new), r, r
      else
        local prev = old and rank_of(ctx, member, old)
        local before = depth > 0 and cached_pos(ctx, member, prev)
        local text = fmt(new)
        redis.call('ZADD', ctx.key, text, member)
        dense_move(ctx, old or nil, new)
        fresh[slot] = not old
        local r = rank_of(ctx, member, new)
        pages_moved(ctx, member, prev, before, r)
        out[i + 1], out[i + 2], out[i + 3] = text, r, prev
      end
      i = i + 3
    end
    out[2] = take_seqs(1)
    if out[2] > 0 then
      log_event(p, out[2])
    end
    if id ~= '' and ttl > 0 then
      redis.call('ZADD', KEYS[2], received + ttl, id)
      if mine ~= '' then
        redis.call('HSET', prints_key, id, mine)
      end
    end
    register(written, fresh)
    return out
  end
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
  a = a + 8 + 2 * int(ARGV[a + 6])
  last[e] = a - 3
end
-- Reads `names` from zset `key` in as few calls as the argument limit allows: one ZMSCORE answers a list
-- for much less than a ZSCORE call per name. Sets out[name] to its score, false where absent.
local function scores_of(key, names, out)
  for i = 1, #names, MULTI do
    local got = redis.call('ZMSCORE', key, unpack(names, i, math.min(i + MULTI - 1, #names)))
    for j = 1, #got do
      out[names[i + j - 1]] = tonumber(got[j]) or false
    end
  end
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
    local slot = int(ARGV[q])
    if initial[slot][member] == nil then
      initial[slot][member] = false
      order[slot][#order[slot] + 1] = member
    end
  end
end
for s = 1, #slots do
  scores_of(slots[s].key, order[s], initial[s])
end
scores_of(KEYS[2], ids, forget)
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
-- Full replies: per accepted event, its (score before or false, score after) per key it touches, in
-- its order of keys: pass 2 writes them without reading any score again.
local steps = {}
local seen = {}
local pending = {}
-- Check mode: the refused events, {index, reason, ...}.
local refused = {}
-- Events a refusal of their value (pass 1) or of their sum (pass 2, check mode) leaves out.
local skip = {}
for s = 1, #slots do
  pending[s] = {}
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
  skip[e] = why
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
      if not lists then
        return fail('REUSED', (e - 1) .. ' ' .. id)
      end
      refuse(e, 'event_id: reused')
    elseif theirs == nil then
      claimed[id] = mine
    end
  end
end
-- Scopes new to the board, taken in event order (see Scopes above) by every event that may write: not
-- one refused so far, nor a duplicate of an id the board remembers. An event refused later (its sum
-- out of range) keeps its scopes taken: the count only errs towards refusing, as only written keys
-- enter the scope index.
do
  local all = {}
  for s = 1, #slots do
    all[s] = s
  end
  read_held(all)
end
local over = {}
for e = 1, count do
  local p = pos[e]
  local id = ARGV[p + 2]
  local remembered = id ~= '' and forget[id] and forget[id] > tonumber(ARGV[p + 5])
  if not skip[e] and not bad_value(values[e]) and not remembered then
    over[e] = take_scopes(p + 7, last[e])
  end
end
for e = 1, count do
  local p, value = pos[e], values[e]
  if skip[e] then
    -- Refused above.
  elseif bad_value(value) then
    if not lists then
      return fail('RANGE', (e - 1) .. ' value: must be ' .. bound_text())
    end
    refuse(e, 'value: must be ' .. bound_text())
  elseif over[e] then
    if not lists then
      return fail('RANGE', (e - 1) .. ' ' .. over[e])
    end
    refuse(e, over[e])
  elseif not trims then
    local member = ARGV[p]
    if is_dup(e) then
      if ARGV[p + 2] ~= '' then
        seen[ARGV[p + 2]] = true
      end
      dup[e] = true
      -- A duplicate's answer: the scores as they stand at its place in the chunk.
      if full then
        local st = {}
        for q = p + 7, last[e], 2 do
          local slot = int(ARGV[q])
          local cur = pending[slot][member]
          if cur == nil then
            cur = initial[slot][member]
          end
          st[#st + 1] = cur
        end
        steps[e] = st
      end
    else
      -- Each key's next score, in the event's order of keys (a key named twice sees its first
      -- change). A refused event leaves no trace: neither its id nor its scores, which are put back
      -- from st (a score read up front put back as pending is the same score).
      local st, bad = (full or lists) and {}, nil
      for q = p + 7, last[e], 2 do
        local slot = int(ARGV[q])
        local cur = pending[slot][member]
        if cur == nil then
          cur = initial[slot][member]
        end
        local nxt, why = next_score(slots[slot], cur or nil, value, int(ARGV[q + 1]))
        if not nxt then
          bad = why
          break
        end
        if st then
          st[#st + 1] = cur
          st[#st + 1] = nxt
        end
        pending[slot][member] = nxt
      end
      if bad and not lists then
        return fail('RANGE', (e - 1) .. ' value: ' .. bad)
      elseif bad then
        for k = #st / 2, 1, -1 do
          pending[int(ARGV[p + 5 + 2 * k])][member] = st[2 * k - 1]
        end
        refuse(e, 'value: ' .. bad)
      else
        if ARGV[p + 2] ~= '' then
          seen[ARGV[p + 2]] = true
        end
        steps[e] = st
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

-- Trims a key to max members, at most TRIM_SLICE members a write: a key over a max members just
-- lowered is trimmed by the definition change (lua/trim.lua, in slices) before it is answered, and
-- a write that meets one still over it (another instance lowered it a moment ago) takes one slice.
local function trim(ctx, slot)
  local n = math.min(redis.call('ZCARD', ctx.key) - max_members, TRIM_SLICE)
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
    note_write(slot, gone[i], sc, nil)
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

-- Without trimming, what pass 1 worked out is exactly what each write leaves (nothing else writes in
-- between): full replies and count-mode batches use it instead of reading scores again.
local reuse = not trims
-- Slots where a write added a member: the key may be new, so it is registered whatever the index says.
local fresh = {}

-- Appends to `out` the score and rank of event e's member in every key it touches, as they stand, each
-- twice (a duplicate's answer).
local function standing(e, out)
  local member = ARGV[pos[e]]
  local i = 0
  for q = pos[e] + 7, last[e], 2 do
    i = i + 1
    local ctx = slots[int(ARGV[q])]
    local sc
    if trims then
      sc = tonumber(redis.call('ZSCORE', ctx.key, member))
    else
      sc = steps[e][i]
    end
    push_standing(out, ctx, member, sc)
  end
end

-- Event e's writes as pass 1 worked them out (steps[e]). Appends to `out` the score, rank and rank before
-- in every key it touches. A key whose score does not change costs one rank lookup.
local function apply_steps(e, out)
  local member, st = ARGV[pos[e]], steps[e]
  local i = 1
  for q = pos[e] + 7, last[e], 2 do
    local slot = int(ARGV[q])
    local ctx = slots[slot]
    local old, new = st[i], st[i + 1]
    i = i + 2
    local n = #out
    if old == new then
      local r = rank_of(ctx, member, new)
      out[n + 1], out[n + 2], out[n + 3] = fmt(new), r, r
    else
      local prev = old and rank_of(ctx, member, old)
      local before = depth > 0 and cached_pos(ctx, member, prev)
      local text = fmt(new)
      redis.call('ZADD', ctx.key, text, member)
      dense_move(ctx, old or nil, new)
      if not old then
        fresh[slot] = true
      end
      local r = rank_of(ctx, member, new)
      pages_moved(ctx, member, prev, before, r)
      out[n + 1], out[n + 2], out[n + 3] = text, r, prev
    end
  end
end

if not check then
  forget_step(count > 1)
end

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
-- Each event's answer (full replies), by event.
local answers = {}
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
      reply = { 1, 0 }
      standing(e, reply)
      answers[e] = reply
    end
  else
    local member, id = ARGV[p], ARGV[p + 2]
    local rows = full and { 0, 0 }
    local mark = #undo
    local why = nil
    if steps[e] then
      apply_steps(e, rows)
    elseif trims then
      -- Count-mode batches without trimming write each member's final score after this loop.
      for q = p + 7, last[e], 2 do
        local slot = int(ARGV[q])
        local ctx = slots[slot]
        local old = tonumber(redis.call('ZSCORE', ctx.key, member))
        local prev = false
        if full and old then
          prev = rank_of(ctx, member, old)
        end
        local new, bad = next_score(ctx, old, values[e], int(ARGV[q + 1]))
        if not new then
          why = bad
          break
        end
        if new ~= old then
          note_write(slot, member, old, new)
          undo[#undo + 1] = { ctx, member, old or false, new }
          redis.call('ZADD', ctx.key, fmt(new), member)
          dense_move(ctx, old, new)
          if not old then
            fresh[slot] = true
          end
          trim(ctx, slot)
        end
        if full then
          local sc = tonumber(redis.call('ZSCORE', ctx.key, member))
          local n = #rows
          if sc then
            rows[n + 1], rows[n + 2], rows[n + 3] = fmt(sc), rank_of(ctx, member, sc), prev
          else
            rows[n + 1], rows[n + 2], rows[n + 3] = false, false, prev
          end
        end
      end
    end
    if why and not lists then
      rollback(0)
      return fail('RANGE', (e - 1) .. ' value: ' .. why)
    elseif why then
      rollback(mark)
      refuse(e, 'value: ' .. why)
      flags[e] = '-'
    else
      for q = p + 7, last[e], 2 do
        touched[int(ARGV[q])] = true
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
        reply = rows
        answers[e] = rows
      end
    end
  end
end

if check then
  rollback(0)
  return refused
end

-- The chunk stands: every accepted event takes the next sequence number and is logged, in order.
local first_seq = take_seqs(#taken)
if first_seq > 0 then
  for i, e in ipairs(taken) do
    log_event(pos[e], first_seq + i - 1)
  end
  for i, e in ipairs(taken) do
    if full then
      answers[e][2] = first_seq + i - 1
    end
  end
end

zadd_pairs(KEYS[2], remember)
for i = 1, #prints, 2 * MULTI do
  redis.call('HSET', prints_key, unpack(prints, i, math.min(i + 2 * MULTI - 1, #prints)))
end

-- Count-mode batches without trimming: each member's final score in one write, in first-seen order. A
-- member's intermediate scores within the chunk were never read by anything, so only its first and last
-- matter, to the sorted set and to the distinct-value counts alike.
if reuse and not full then
  for s, ctx in ipairs(slots) do
    local args = {}
    for _, member in ipairs(order[s]) do
      local old, new = initial[s][member] or nil, pending[s][member]
      if new ~= nil and new ~= old then
        note_write(s, member, old, new)
        args[#args + 1] = fmt(new)
        args[#args + 1] = member
        dense_move(ctx, old, new)
        if not old then
          fresh[s] = true
        end
      end
    end
    zadd_pairs(ctx.key, args)
  end
end

bounds_moved()

local written = {}
for s = 1, #slots do
  if touched[s] then
    written[#written + 1] = s
  end
end
if removing then
  for _, e in ipairs(taken) do
    local member = ARGV[pos[e]]
    for q = pos[e] + 7, last[e], 2 do
      note(member, slots[int(ARGV[q])].key)
    end
  end
end
register(written, fresh)

if each then
  local out = {}
  for e = 1, count do
    local part = answers[e] or { 2, skip[e] }
    for i = 1, #part do
      out[#out + 1] = part[i]
    end
  end
  return out
end
if full then
  return reply
end
return { #taken, duplicates, first_seq, table.concat(flags) }
