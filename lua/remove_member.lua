-- remove_member.lua: removes a member from every key of a board, with its display data.
--
-- KEYS  [1] definition hash  [2] key index zset  [3] display-name hash  [4] display-data hash
--       [5] operation sequence counter  [6] operation log stream
--       then per live data key s = 1..S, W keys starting at KEYS[6 + (s-1)*W + 1]: the leaderboard zset
--       and, on dense boards (W = 3), its distinct-value zset and count hash; last, the board's cache hash.
-- ARGV  [1] definition version  [2] now ms  [3] rank mode  [4] member  [5] log 1|0 (fields o=r s=seq m n)
--       [6..] tick bits per data key
-- Reply {the number of leaderboard keys the member was removed from, sequence number (0 without log)}.
-- Errors RANKD_NOBOARD, RANKD_STALE <version>, RANKD_RETRY (the key index changed since it was read).
-- Cost  O(S * log N).

local err, depth = check_def_depth(KEYS[1], ARGV[1])
if err then
  return err
end

local dense = ARGV[3] == 'dense'
local width = dense and 3 or 1
local member = ARGV[4]
local ctxs = {}
local passed = {}
for s = 1, #ARGV - 5 do
  local base = 6 + (s - 1) * width
  local ctx = board_ctx(KEYS[base + 1], KEYS[base + 2], true, ARGV[3], tonumber(ARGV[5 + s]))
  ctx.dc = KEYS[base + 3]
  ctxs[s] = ctx
  passed[s] = ctx.key
end
err = check_index(KEYS[2], ARGV[2], passed)
if err then
  return err
end

-- A dense board needs the score to count the member out of its distinct values; any other board only
-- the ZREM, whose answer says whether the member was there.
local removed = 0
for _, ctx in ipairs(ctxs) do
  local gone = 0
  if dense then
    local stored = tonumber(redis.call('ZSCORE', ctx.key, member))
    if stored then
      redis.call('ZREM', ctx.key, member)
      dense_count(ctx, ctx.dc, stored, -1)
      gone = 1
    end
  else
    gone = redis.call('ZREM', ctx.key, member)
  end
  if gone == 1 then
    removed = removed + 1
    if depth > 0 then
      -- The key's count changed: every cached page of it (see pages_changed in lib.lua).
      pages_changed(KEYS[#KEYS], ctx.key, 0)
    end
  end
end
redis.call('HDEL', KEYS[3], member)
redis.call('HDEL', KEYS[4], member)
local seq = 0
if ARGV[5] == '1' then
  seq = redis.call('INCR', KEYS[5])
  redis.call('XADD', KEYS[6], '0-' .. seq, 'o', 'r', 's', seq, 'm', member, 'n', ARGV[2])
end
return { removed, seq }
