-- read_members.lua: the standing of each of a list of members in one leaderboard key.
--
-- KEYS  [1] definition hash  [2] leaderboard zset  [3] its distinct-value zset (dense boards)
--       [4] display-name hash  [5] display-data hash
-- ARGV  [1] definition version  [2] order desc|asc  [3] rank mode  [4] tick bits  [5] with data 0|1
--       [6..] members
-- Reply {total, {score, rank, worse, display name|nil, data|nil} or nil per member}; `worse` counts the
--       members with a strictly worse value (for percentiles); data is read only when asked for.
-- Errors RANKD_NOBOARD, RANKD_STALE <version>.
-- Cost  O(M * log N) for M members.

local err = check_def(KEYS[1], ARGV[1])
if err then
  return err
end

local ctx = board_ctx(KEYS[2], KEYS[3], ARGV[2] == 'desc', ARGV[3], tonumber(ARGV[4]))
-- Most boards carry no display data: then one EXISTS each spares every member its HGETs.
local names = redis.call('EXISTS', KEYS[4]) == 1
local datas = ARGV[5] == '1' and redis.call('EXISTS', KEYS[5]) == 1
local total = redis.call('ZCARD', ctx.key)
local rows = {}
for i = 6, #ARGV do
  local member = ARGV[i]
  local stored = tonumber(redis.call('ZSCORE', ctx.key, member))
  if stored then
    local lo, hi = worse_bounds(decode(stored, ctx.pow), ctx.pow, ctx.desc)
    local name, data = false, false
    if names then
      name = redis.call('HGET', KEYS[4], member)
    end
    if datas then
      data = redis.call('HGET', KEYS[5], member)
    end
    rows[#rows + 1] = {
      fmt(stored),
      rank_of(ctx, member, stored),
      redis.call('ZCOUNT', ctx.key, lo, hi),
      name,
      data,
    }
  else
    rows[#rows + 1] = false
  end
end
return { total, rows }
