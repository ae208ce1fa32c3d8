-- key_index.lua: the live data keys of a board, forgetting the ones that have expired.
--
-- KEYS  [1] key index zset (data key -> expire-at ms, +inf for none)
-- ARGV  [1] now ms
--       [2] optional: 'prune' to forget expired keys only
-- Reply the data keys whose expiry lies after now; with 'prune', how many keys it forgot.
-- Cost  O(log K + K) for K keys; with 'prune', O(log K + E) for E expired keys.

local forgot = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if ARGV[2] == 'prune' then
  return forgot
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
