-- trim.lua: trims leaderboard keys of a board to its max members, at most a slice of members a call.
--
-- KEYS  [1] definition hash, then per key s = 1..S, W keys starting at KEYS[1 + (s-1)*W + 1]: the
--       leaderboard zset and, on dense boards (W = 3), its distinct-value zset and count hash; last,
--       the board's cache hash (see pages_changed in lib.lua)
-- ARGV  [1] definition version  [2] max members  [3] order desc|asc  [4] rank mode  [5] most members
--       to trim in this call  [6..] tick bits per key
-- Reply how many members the keys still hold over max members (0: every key is trimmed).
-- Errors RANKD_NOBOARD, RANKD_STALE <version>.
-- Cost  O(S * log N + M) for M members trimmed, M at most ARGV[5].
--
-- A lower max members is applied by the definition change (Engine::put_board), which calls this
-- over every key of the board until it answers 0, before it answers: a key of 200,000 members
-- trimmed to 10 is 200 calls of 1,000, never one call that holds Redis for all of them.

local err, depth = check_def_depth(KEYS[1], ARGV[1])
if err then
  return err
end
local max_members = tonumber(ARGV[2])
local desc = ARGV[3] == 'desc'
local dense = ARGV[4] == 'dense'
local width = dense and 3 or 1
local budget = tonumber(ARGV[5])
local left = 0
for s = 1, #ARGV - 5 do
  local base = 1 + (s - 1) * width
  local key = KEYS[base + 1]
  local over = redis.call('ZCARD', key) - max_members
  if over > 0 then
    local n = math.min(over, budget)
    budget = budget - n
    left = left + over - n
    if n > 0 then
      -- The worst members: the lowest scores on desc boards, the highest on asc ones.
      local first, last = 0, n - 1
      if not desc then
        first, last = -n, -1
      end
      if dense then
        local ctx = board_ctx(key, KEYS[base + 2], desc, 'dense', tonumber(ARGV[5 + s]))
        local gone = redis.call('ZRANGE', key, first, last, 'WITHSCORES')
        for i = 2, #gone, 2 do
          dense_count(ctx, KEYS[base + 3], tonumber(gone[i]), -1)
        end
      end
      redis.call('ZREMRANGEBYRANK', key, first, last)
      if depth > 0 then
        -- The key's count changed, which every cached page of it shows.
        pages_changed(KEYS[#KEYS], key, 0)
      end
    end
  end
end
return left
