-- restore.lua: writes part of a snapshot back into a board a rebuild holds, so that a rebuild can start
-- from the board's latest snapshot instead of its first operation.
--
-- KEYS  [1] definition hash  [2] key index zset  [3] the target: a leaderboard zset (kind zset), the
--       board's dedupe zset (kind dedupe) or its event print hash (kind prints)  [4] its distinct-value
--       zset  [5] its distinct-value count hash (both written on dense boards only)  [6] the board's
--       scope index (written for a scoped zset)
-- ARGV  [1] the rebuild's version token  [2] kind zset|dedupe|prints  [3] expire-at ms (0: never)
--       [4] now ms (the expiry is set relative to it, as lua/submit.lua sets it)  [5] rank mode
--       [6] tick bits  [7] the zset's scope ('' for the global board), then pairs: stored score, member (zset), forget-at ms, event id
--       (dedupe) or event id, print (prints); at most 2,000 pairs
-- Reply the number of pairs written.
-- Errors RANKD_NOBOARD, RANKD_STALE <version> (the rebuild no longer holds the board).
-- Cost  O(P * log N) for P pairs.

local err = check_def(KEYS[1], ARGV[1])
if err then
  return err
end
local pairs_given = (#ARGV - 7) / 2
if pairs_given < 1 then
  return 0
end
if ARGV[2] == 'prints' then
  redis.call('HSET', KEYS[3], unpack(ARGV, 8))
  return pairs_given
end
redis.call('ZADD', KEYS[3], unpack(ARGV, 8))
if ARGV[2] == 'dedupe' then
  return pairs_given
end

local dense = ARGV[5] == 'dense'
if dense then
  local ctx = board_ctx(KEYS[3], KEYS[4], true, ARGV[5], tonumber(ARGV[6]))
  for i = 8, #ARGV, 2 do
    dense_count(ctx, KEYS[5], tonumber(ARGV[i]), 1)
  end
end
local expire = tonumber(ARGV[3])
if expire > 0 then
  local ttl_ms = expire - tonumber(ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ttl_ms)
  if dense then
    redis.call('PEXPIRE', KEYS[4], ttl_ms)
    redis.call('PEXPIRE', KEYS[5], ttl_ms)
  end
  redis.call('ZADD', KEYS[2], expire, KEYS[3])
else
  expire = '+inf'
  redis.call('ZADD', KEYS[2], expire, KEYS[3])
end
-- As lua/submit.lua registers a scoped key: its scope counts while its latest key lives.
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[6], 'GT', expire, ARGV[7])
end
return pairs_given
