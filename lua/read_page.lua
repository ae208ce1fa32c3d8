-- read_page.lua: a run of consecutive entries of one leaderboard key, ranked in the board's rank mode.
--
-- KEYS  [1] definition hash  [2] leaderboard zset  [3] its distinct-value zset (read on dense boards only)
--       [4] display-name hash  [5] the board's cache hash (read and written by a `range` to cache only)
-- ARGV  [1] definition version  [2] order desc|asc  [3] rank mode  [4] tick bits  [5] kind, then by kind:
--         range  offset, limit              entries at 0-based positions [offset, offset + limit)
--                then, to cache the page: its depth (offset + limit) and a new epoch for the cache hash
--         around member, radius             the member and radius entries each side, filled at the borders
--         after  score, member, limit       entries strictly after (stored score, member) in board order
--         score  min, max, limit            entries whose value lies in [min, max], best first
-- Reply {total, {member, score, rank, display name|nil, ...}}; `around` an absent member: {total, nil}.
--       A range to cache adds its stamp, {epoch, definition version, page version}, or false when the key
--       has as many cached depths as it may keep (MAX_DEPTHS): the page is then not cached.
-- Errors RANKD_NOBOARD, RANKD_STALE <version>.
-- Cost  O(log N + limit); `after` a cursor whose member changed score: O(log N * log T), T the ties there.

local err = check_def(KEYS[1], ARGV[1])
if err then
  return err
end

local ctx = board_ctx(KEYS[2], KEYS[3], ARGV[2] == 'desc', ARGV[3], tonumber(ARGV[4]))
local kind = ARGV[5]
local total = redis.call('ZCARD', ctx.key)

local function run(pos, flat)
  return { total, with_names(KEYS[4], rank_run(ctx, pos, flat)) }
end

local function window(first, count)
  if count <= 0 or first >= total then
    return run(first, {})
  end
  return run(first, by_position(ctx, first, first + count - 1))
end

-- Distinct cached depths a key keeps at most: a write that changes the top of a key moves one version per
-- depth (see pages_changed in lib.lua).
local MAX_DEPTHS = 16

-- Registers a cached page of depth d of this key and answers the versions it is read at. The cache hash
-- goes a day after its last registration: every copy stamped with its epoch is then out of date, and the
-- next read starts a new epoch.
local function stamp(cv, d, epoch)
  local e = redis.call('HGET', cv, 'e')
  if not e then
    e = epoch
    redis.call('HSET', cv, 'e', e, 'dv', ARGV[1])
  end
  local field = 'd:' .. ctx.key
  local list = redis.call('HGET', cv, field)
  local known, n = false, 0
  for x in string.gmatch(list or '', '%d+') do
    n = n + 1
    known = known or tonumber(x) == d
  end
  if not known then
    if n >= MAX_DEPTHS then
      return false
    end
    redis.call('HSET', cv, field, list and (list .. ' ' .. d) or tostring(d))
    if d > (tonumber(redis.call('HGET', KEYS[1], 'cd')) or 0) then
      redis.call('HSET', KEYS[1], 'cd', d)
    end
    redis.call('PEXPIRE', cv, 86400000)
  end
  local got = redis.call('HMGET', cv, 'dv', 'v:' .. ctx.key .. ':' .. d)
  return { e, got[1] or '', got[2] or '0' }
end

if kind == 'range' then
  local page = window(tonumber(ARGV[6]), tonumber(ARGV[7]))
  if ARGV[8] then
    page[3] = stamp(KEYS[5], tonumber(ARGV[8]), ARGV[9])
  end
  return page
end

if kind == 'around' then
  local member, radius = ARGV[6], tonumber(ARGV[7])
  local pos
  if ctx.desc then
    pos = redis.call('ZREVRANK', ctx.key, member)
  else
    pos = redis.call('ZRANK', ctx.key, member)
  end
  if not pos then
    return { total, false }
  end
  -- Always 2 * radius + 1 entries when the board has that many: shift the window at either border.
  local count = math.min(2 * radius + 1, total)
  local first = math.max(pos - radius, 0)
  if first + count > total then
    first = total - count
  end
  return window(first, count)
end

if kind == 'after' then
  local score, member, limit = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
  local s = fmt(score)
  local cur = tonumber(redis.call('ZSCORE', ctx.key, member))
  local before
  if cur == score then
    -- The cursor's member still holds its score: everything up to it comes before.
    if ctx.desc then
      before = redis.call('ZREVRANK', ctx.key, member) + 1
    else
      before = redis.call('ZRANK', ctx.key, member) + 1
    end
  else
    -- Find where (score, member) would sit: after the strictly better scores, then among the members
    -- holding exactly `score` (ordered by member bytes, descending on desc boards), by binary search.
    local ahead
    if ctx.desc then
      ahead = redis.call('ZCOUNT', ctx.key, '(' .. s, '+inf')
    else
      ahead = redis.call('ZCOUNT', ctx.key, '-inf', '(' .. s)
    end
    local lo, hi = 0, redis.call('ZCOUNT', ctx.key, s, s)
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local m = by_position(ctx, ahead + mid, ahead + mid)[1]
      local comes_first
      if ctx.desc then
        comes_first = bytes_less(member, m)
      else
        comes_first = bytes_less(m, member)
      end
      if comes_first then
        lo = mid + 1
      else
        hi = mid
      end
    end
    before = ahead + lo
  end
  return window(before, limit)
end

if kind == 'score' then
  local min, max, limit = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  local lo, hi
  if ctx.pow == 1 then
    lo, hi = fmt(min), fmt(max)
  else
    -- Values are integers here: [min, max] holds the values ceil(min)..floor(max), each of which spans
    -- pow stored scores. Clamp to the exact range of doubles first.
    local edge = 2 ^ 53 / ctx.pow
    local vlo = math.max(math.ceil(min), -edge)
    local vhi = math.min(math.floor(max), edge - 1)
    if vlo > vhi then
      return run(0, {})
    end
    lo, hi = fmt(vlo * ctx.pow), fmt((vhi + 1) * ctx.pow - 1)
  end
  local ahead, flat
  if ctx.desc then
    ahead = redis.call('ZCOUNT', ctx.key, '(' .. hi, '+inf')
    flat = redis.call('ZREVRANGEBYSCORE', ctx.key, hi, lo, 'WITHSCORES', 'LIMIT', 0, limit)
  else
    ahead = redis.call('ZCOUNT', ctx.key, '-inf', '(' .. lo)
    flat = redis.call('ZRANGEBYSCORE', ctx.key, lo, hi, 'WITHSCORES', 'LIMIT', 0, limit)
  end
  return run(ahead, flat)
end

return fail('ARGS', 'unknown page kind ' .. kind)
