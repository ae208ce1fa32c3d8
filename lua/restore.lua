-- restore.lua: writes part of a snapshot back into a board a rebuild holds, so that a rebuild can start
-- from the board's latest snapshot instead of its first operation.
--
-- KEYS  [1] definition hash  [2] key index zset  [3] the target: a leaderboard zset (kind zset), the
--       board's dedupe zset (kind dedupe) or its event print hash (kind prints)  [4] its distinct-value
--       zset  [5] its distinct-value count hash (both written on dense boards only)
-- ARGV  [1] the rebuild's version token  [2] kind zset|dedupe|prints  [3] expire-at ms (0: never)
--       [4] rank mode  [5] tick bits, then pairs: stored score, member (zset), forget-at ms, event id
--       (dedupe) or event id, print (prints); at most 2,000 pairs
-- Reply the number of pairs written.
-- Errors RANKD_NOBOARD, RANKD_STALE <version> (the rebuild no longer holds the board).
-- Cost  O(P * log N) for P pairs.

local err = check_def(KEYS[1], ARGV[1])
if err then
  return err
end
local pairs_given = (#ARGV - 5) / 2
if pairs_given < 1 then
  return 0
end
if ARGV[2] == 'prints' then
  redis.call('HSET', KEYS[3], unpack(ARGV, 6))
  return pairs_given
end
redis.call('ZADD', KEYS[3], unpack(ARGV, 6))
if ARGV[2] == 'dedupe' then
  return pairs_given
end

local dense = ARGV[4] == 'dense'
if dense then
  local ctx = board_ctx(KEYS[3], KEYS[4], true, ARGV[4], tonumber(ARGV[5]))
  for i = 6, #ARGV, 2 do
    dense_count(ctx, KEYS[5], tonumber(ARGV[i]), 1)
  end
end
local expire = tonumber(ARGV[3])
if expire > 0 then
  redis.call('PEXPIREAT', KEYS[3], expire)
  if dense then
    redis.call('PEXPIREAT', KEYS[4], expire)
    redis.call('PEXPIREAT', KEYS[5], expire)
  end
  redis.call('ZADD', KEYS[2], expire, KEYS[3])
else
  redis.call('ZADD', KEYS[2], '+inf', KEYS[3])
end
return pairs_given
