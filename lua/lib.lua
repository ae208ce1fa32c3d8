-- lib.lua: helpers shared by every rankd script. It is prepended to each script when rankd is built,
-- so a script file reads as if these were local functions of its own.
--
-- Stored scores. A board that breaks ties by member stores a value as it is. A board that breaks ties
-- by who reached a score first folds a tick (time within the period) into the low T bits:
--   stored = value * 2^T + r,  r = tick (asc boards) or 2^T - 1 - tick (desc boards),  0 <= r < 2^T
-- so that among equal values the earlier tick ranks higher, and value = floor(stored / 2^T) exactly
-- while |stored| < 2^53. `pow` below is 2^T, and 1 when no tick is folded.

local function fmt(x)
  return string.format('%.17g', x)
end

local function fail(code, detail)
  return redis.error_reply('RANKD_' .. code .. ' ' .. detail)
end

-- Checks that the caller's copy of the board definition is current. Returns an error reply or nil.
local function check_def(def_key, version)
  local v = redis.call('HGET', def_key, 'v')
  if not v then
    return fail('NOBOARD', 'the board is not defined')
  end
  if v ~= version then
    return fail('STALE', v)
  end
  return nil
end

-- check_def for a script that writes ranks: also answers the deepest page of the board any rankd
-- instance caches (the definition's `cd` field, 0 when none), so that a write far below it spends nothing
-- on the page cache.
local function check_def_depth(def_key, version)
  local got = redis.call('HMGET', def_key, 'v', 'cd')
  if not got[1] then
    return fail('NOBOARD', 'the board is not defined'), 0
  end
  if got[1] ~= version then
    return fail('STALE', got[1]), 0
  end
  return nil, tonumber(got[2]) or 0
end

-- Cached pages. Every rankd instance that caches a page of leaderboard `key` at depth d (offset + limit)
-- registers d in the board's cache hash `cv` (field 'd:<key>': the depths, space-separated), and the
-- page carries the version 'v:<key>:<d>' it was read at. A write that changes the entries at 0-based
-- positions `pos` and below (or the key's member count: `pos` 0) moves on the version of every
-- registered depth deeper than `pos`, in the same atomic call: any instance checking its copy after
-- the write was answered finds it changed.
local function pages_changed(cv, key, pos)
  local list = redis.call('HGET', cv, 'd:' .. key)
  if list then
    for d in string.gmatch(list, '%d+') do
      if tonumber(d) > pos then
        redis.call('HINCRBY', cv, 'v:' .. key .. ':' .. d, 1)
      end
    end
  end
end

local function decode(stored, pow)
  if pow == 1 then
    return stored
  end
  return math.floor(stored / pow)
end

local function encode(value, pow, tick, desc)
  if pow == 1 then
    return value
  end
  if desc then
    return value * pow + (pow - 1 - tick)
  end
  return value * pow + tick
end

-- ZCOUNT bounds, in stored space, of the members whose value is strictly better than `value`.
local function better_bounds(value, pow, desc)
  if pow == 1 then
    if desc then
      return '(' .. fmt(value), '+inf'
    end
    return '-inf', '(' .. fmt(value)
  end
  if desc then
    return fmt((value + 1) * pow), '+inf'
  end
  return '-inf', '(' .. fmt(value * pow)
end

-- ZCOUNT bounds, in stored space, of the members whose value is strictly worse than `value`.
local function worse_bounds(value, pow, desc)
  if pow == 1 then
    if desc then
      return '-inf', '(' .. fmt(value)
    end
    return '(' .. fmt(value), '+inf'
  end
  if desc then
    return '-inf', '(' .. fmt(value * pow)
  end
  return fmt((value + 1) * pow), '+inf'
end

-- Byte-wise string order, as Redis orders members with equal scores (Lua's own `<` follows the locale).
local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end

-- A leaderboard key with what is needed to rank inside it.
--   key: the sorted set; dv: distinct values (dense boards); desc: order; mode: rank mode; pow: 2^T.
local function board_ctx(key, dv, desc, mode, bits)
  return { key = key, dv = dv, desc = desc, mode = mode, pow = 2 ^ bits }
end

-- The rank of a member known to hold `stored` in ctx.key, in the board's rank mode.
local function rank_of(ctx, member, stored)
  if ctx.mode == 'ordinal' then
    local r
    if ctx.desc then
      r = redis.call('ZREVRANK', ctx.key, member)
    else
      r = redis.call('ZRANK', ctx.key, member)
    end
    return r + 1
  end
  local value = decode(stored, ctx.pow)
  if ctx.mode == 'competition' then
    local lo, hi = better_bounds(value, ctx.pow, ctx.desc)
    return redis.call('ZCOUNT', ctx.key, lo, hi) + 1
  end
  local lo, hi = better_bounds(value, 1, ctx.desc)
  return redis.call('ZCOUNT', ctx.dv, lo, hi) + 1
end

-- Ranks a run of consecutive entries, given flat {member, score, ...} as WITHSCORES returns it and the
-- 0-based position of its first entry. Only the first entry costs a lookup, and none when it is the
-- board's first (nothing ranks above it, in any mode); the rest follow from it.
-- Returns flat {member, score, rank, ...}.
local function rank_run(ctx, pos, flat)
  local out = {}
  local rank, prev
  for i = 1, #flat, 2 do
    local member, score = flat[i], flat[i + 1]
    local ordinal = pos + (i + 1) / 2
    local r
    if ctx.mode == 'ordinal' then
      r = ordinal
    else
      local value = decode(tonumber(score), ctx.pow)
      if prev == nil and pos == 0 then
        r = 1
      elseif prev == nil then
        r = rank_of(ctx, member, tonumber(score))
      elseif value == prev then
        r = rank
      elseif ctx.mode == 'competition' then
        r = ordinal
      else
        r = rank + 1
      end
      prev = value
    end
    rank = r
    local j = (i - 1) / 2 * 3
    out[j + 1] = member
    out[j + 2] = score
    out[j + 3] = r
  end
  return out
end

-- Entries at 0-based positions [first, last] in board order, WITHSCORES.
local function by_position(ctx, first, last)
  if ctx.desc then
    return redis.call('ZREVRANGE', ctx.key, first, last, 'WITHSCORES')
  end
  return redis.call('ZRANGE', ctx.key, first, last, 'WITHSCORES')
end

-- Appends each entry's display name (or false) to a ranked run: {member, score, rank, name, ...}.
-- Most boards carry no display names: an EXISTS then spares the HMGET of every entry's.
local function with_names(names_key, run)
  local out = {}
  if #run == 0 then
    return out
  end
  local n = #run / 3
  local names = {}
  if redis.call('EXISTS', names_key) == 1 then
    local members = {}
    for i = 1, n do
      members[i] = run[3 * i - 2]
    end
    names = redis.call('HMGET', names_key, unpack(members))
  end
  for i = 1, n do
    local j = 3 * i - 3
    out[j + i] = run[j + 1]
    out[j + i + 1] = run[j + 2]
    out[j + i + 2] = run[j + 3]
    out[j + i + 3] = names[i] or false
  end
  return out
end

-- Adds delta to the count of a value in a dense board's distinct-value index.
local function dense_count(ctx, dc, stored, delta)
  -- + 0 turns -0 into 0: they are one value, and must be one entry of the index.
  local f = fmt(decode(stored, ctx.pow) + 0)
  local c = redis.call('HINCRBY', dc, f, delta)
  if c <= 0 then
    redis.call('HDEL', dc, f)
    redis.call('ZREM', ctx.dv, f)
  elseif c == 1 and delta > 0 then
    redis.call('ZADD', ctx.dv, f, f)
  end
end

