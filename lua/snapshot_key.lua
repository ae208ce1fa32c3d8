-- snapshot_key.lua: a run of one leaderboard key with ranks, and the board's sequence number, so a
-- snapshot can be taken in chunks and checked for consistency (same sequence number first and last).
--
-- KEYS  [1] definition hash  [2] operation sequence counter  [3] leaderboard zset
--       [4] its distinct-value zset (read on dense boards)  [5] the board's key index
-- ARGV  [1] order desc|asc  [2] rank mode  [3] tick bits  [4] first position  [5] count (-1: all)
-- Reply {sequence number, total, {member, score, rank, ...}, definition version, expire-at ms ('+inf'
--       when the key never expires)}; {0, 0, {}} when the board is gone. The sequence number and the
--       version let a caller check that chunks read in several calls belong to one state of the board.
-- Cost  O(log N + count).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 0, 0, {} }
end
local ctx = board_ctx(KEYS[3], KEYS[4], ARGV[1] == 'desc', ARGV[2], tonumber(ARGV[3]))
local seq = tonumber(redis.call('GET', KEYS[2])) or 0
local version = redis.call('HGET', KEYS[1], 'v')
local expire = redis.call('ZSCORE', KEYS[5], KEYS[3]) or '+inf'
local total = redis.call('ZCARD', ctx.key)
local first, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local last = total - 1
if count >= 0 then
  last = math.min(first + count - 1, total - 1)
end
if first > last then
  return { seq, total, {}, version, expire }
end
return { seq, total, rank_run(ctx, first, by_position(ctx, first, last)), version, expire }
