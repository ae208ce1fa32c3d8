-- delete_board.lua: deletes a board: its definition and every key it owns.
--
-- KEYS  [1] definition hash  [2] dedupe zset  [3] key index zset  [4] display-name hash
--       [5] display-data hash  [6..] every live data key (leaderboard zsets and their dense indexes)
-- ARGV  [1] definition version  [2] now ms  [3..] the leaderboard zsets among KEYS[6..]
-- Reply the number of keys removed.
-- Errors RANKD_NOBOARD, RANKD_STALE <version>, RANKD_RETRY (the key index changed since it was read).
-- Cost  O(K) for K keys; memory is freed in the background (UNLINK).

local err = check_def(KEYS[1], ARGV[1])
if err then
  return err
end
local passed = {}
for i = 3, #ARGV do
  passed[#passed + 1] = ARGV[i]
end
err = check_index(KEYS[3], ARGV[2], passed)
if err then
  return err
end
local removed = 0
for i = 1, #KEYS do
  removed = removed + redis.call('UNLINK', KEYS[i])
end
return removed
