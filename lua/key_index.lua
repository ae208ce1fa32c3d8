-- key_index.lua: the live data keys of a board, forgetting the ones that have expired.
--
-- KEYS  [1] key index zset (data key -> expire-at ms, +inf for none)
--       [2] optional, with 'prune': the scope index zset (scope -> expire-at ms), whose expired
--       scopes are forgotten too (they stopped counting when they expired: see lua/submit.lua)
-- ARGV  [1] now ms
--       [2] optional: 'prune' to forget expired keys only; 'page' to list ARGV[4] keys from position
--       ARGV[3], counted from the index's last (latest to expire), forgetting none
-- Reply the data keys whose expiry lies after now; with 'prune', how many keys it forgot; with 'page',
--       the page (a walk by pages misses no key the index holds throughout and keeps its place: it
--       loses keys from its other end only).
-- Cost  O(log K + K) for K keys; with 'prune', O(log K + E) for E expired keys (and scopes); with
--       'page', O(log K + ARGV[4]).

if ARGV[2] == 'page' then
  local first = tonumber(ARGV[3])
  return redis.call('ZREVRANGE', KEYS[1], first, first + tonumber(ARGV[4]) - 1)
end

local forgot = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if ARGV[2] == 'prune' then
  if KEYS[2] then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  end
  return forgot
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
