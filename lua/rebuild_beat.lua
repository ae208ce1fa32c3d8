-- rebuild_beat.lua: renews the lease of a rebuild that holds a board, or reads it.
--
-- KEYS  [1] definition hash
-- ARGV  [1] the rebuild's token ('' to read)  [2] now ms
-- Reply reading: the holder's latest renewal, ms (0 when none). Renewing: now, or 0 when the board
--       is no longer held by the token (nothing is written then).
-- Cost  O(1).
--
-- A rebuild's token carries the time it began; a long replay renews it here, so that another
-- instance takes the board over only from a rebuild that stopped, not from one still working.

if ARGV[1] == '' then
  return tonumber(redis.call('HGET', KEYS[1], 'beat')) or 0
end
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'beat', ARGV[2])
return tonumber(ARGV[2])
