-- key_index.lua: the live data keys of a board, forgetting the ones that have expired.
--
-- KEYS  [1] key index zset (data key -> expire-at ms, +inf for none)
-- ARGV  [1] now ms
-- Reply the data keys whose expiry lies after now.
-- Cost  O(log K + K) for K keys.

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
