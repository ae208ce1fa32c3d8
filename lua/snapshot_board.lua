-- snapshot_board.lua: every given leaderboard key of a board with ranks, in one atomic call, so that
-- all of them are read at one point of the board's log: the snapshot of a board that never stays
-- quiet for a read in chunks (see Engine::snapshot_board), which can then seed a rebuild.
--
-- KEYS  [1] definition hash  [2] operation sequence counter  [3] the board's key index, then per key
--       [2j + 2] its leaderboard zset and [2j + 3] its distinct-value zset (j = 1..K)
-- ARGV  [1] order desc|asc  [2] rank mode  [3] most entries to read in all  [3 + j] key j's tick bits
-- Reply per key j, what snapshot_key.lua answers for the whole key: {sequence number, total, {member,
--       score, rank, ...}, definition version, expire-at ms ('+inf' when it never expires)}; {} when the
--       keys hold more than ARGV[3] entries (nothing read), or the board is gone.
-- Cost  O(K log N + E) for E entries, E at most ARGV[3]: it holds Redis while it reads them all.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local keys = (#KEYS - 3) / 2
local total = 0
for j = 1, keys do
  total = total + redis.call('ZCARD', KEYS[2 * j + 2])
end
if total > tonumber(ARGV[3]) then
  return {}
end
local seq = tonumber(redis.call('GET', KEYS[2])) or 0
local version = redis.call('HGET', KEYS[1], 'v')
local out = {}
for j = 1, keys do
  local ctx = board_ctx(KEYS[2 * j + 2], KEYS[2 * j + 3], ARGV[1] == 'desc', ARGV[2], tonumber(ARGV[3 + j]))
  local expire = redis.call('ZSCORE', KEYS[3], ctx.key) or '+inf'
  local n = redis.call('ZCARD', ctx.key)
  local run = {}
  if n > 0 then
    run = rank_run(ctx, 0, by_position(ctx, 0, n - 1))
  end
  out[j] = { seq, n, run, version, expire }
end
return out
