-- read_members.lua: the standing of each of a list of members in one leaderboard key.
--
-- KEYS  [1] definition hash  [2] leaderboard zset  [3] its distinct-value zset (dense boards)
--       [4] display-name hash  [5] display-data hash
-- ARGV  [1] definition version  [2] order desc|asc  [3] rank mode  [4] tick bits  [5] with data 0|1
--       [6..] members
-- Reply {total, {score, rank, worse[, display name|nil, data|nil]} or nil per member}; `worse` counts
--       the members with a strictly worse value (for percentiles); the display name and data come
--       only when the board has either (and data only when asked for): most boards have neither, and
--       every element of a reply costs decoding it.
-- Errors RANKD_NOBOARD, RANKD_STALE <version>.
-- Cost  O(M * log N) for M members: 4 calls, then 2 per member found (a call from a script costs
--       Redis more than the sorted-set work it asks for, so every call it can spare is spared).

local err = check_def(KEYS[1], ARGV[1])
if err then
  return err
end

local ctx = board_ctx(KEYS[2], KEYS[3], ARGV[2] == 'desc', ARGV[3], tonumber(ARGV[4]))
local total = redis.call('ZCARD', ctx.key)
local rows = {}
if #ARGV < 6 then
  return { total, rows }
end
-- Every member's score in one call. Redis writes a score as fmt does (%.17g, which reads back to
-- the same number): on a board that folds no tick into its scores, the text it answers is the
-- score's in the reply and the value's in the bounds of the ZCOUNT, with no number read and
-- written again (formatting a double costs Redis more than the ZCOUNT that reads it).
local scores = redis.call('ZMSCORE', ctx.key, unpack(ARGV, 6))
local found = {}
for i = 1, #scores do
  local text = scores[i]
  if text then
    local member = ARGV[i + 5]
    local stored, lo, hi
    if ctx.pow == 1 then
      if ctx.mode ~= 'ordinal' then
        stored = tonumber(text)
      end
      if ctx.desc then
        lo, hi = '-inf', '(' .. text
      else
        lo, hi = '(' .. text, '+inf'
      end
    else
      stored = tonumber(text)
      lo, hi = worse_bounds(decode(stored, ctx.pow), ctx.pow, ctx.desc)
    end
    rows[i] = {
      text,
      rank_of(ctx, member, stored),
      redis.call('ZCOUNT', ctx.key, lo, hi),
    }
    found[#found + 1] = i
  else
    rows[i] = false
  end
end
-- Most boards carry no display data: one EXISTS of both hashes then spares the members their
-- lookups; else one HMGET a hash reads every member's.
if #found > 0 then
  local with_data = ARGV[5] == '1'
  local shown
  if with_data then
    shown = redis.call('EXISTS', KEYS[4], KEYS[5])
  else
    shown = redis.call('EXISTS', KEYS[4])
  end
  if shown > 0 then
    local members = {}
    for j = 1, #found do
      members[j] = ARGV[found[j] + 5]
    end
    local names = redis.call('HMGET', KEYS[4], unpack(members))
    local datas = with_data and redis.call('HMGET', KEYS[5], unpack(members))
    for j = 1, #found do
      local row = rows[found[j]]
      row[4] = names[j]
      row[5] = datas and datas[j]
    end
  end
end
return { total, rows }
