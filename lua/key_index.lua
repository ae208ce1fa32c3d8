-- key_index.lua: reads a board's key index a page at a time, or forgets the keys that have expired.
--
-- KEYS  [1] key index zset (data key -> expire-at ms, +inf for none)
--       [2] with 'prune': the scope index zset (scope -> expire-at ms), whose expired scopes are
--       forgotten too (they stopped counting when they expired: see lua/submit.lua)
-- ARGV  [1] now ms  [2] 'prune' to forget expired keys; 'page' to list ARGV[4] keys from position
--       ARGV[3], counted from the index's last (latest to expire), forgetting none
-- Reply with 'prune', how many keys it forgot; with 'page', the page as {key, expire-at, ...} (a walk
--       by pages misses no key the index holds throughout and keeps its place: the index loses keys
--       from its other end only, those that expired).
-- Cost  'prune' O(log K + E) for E expired keys (and scopes); 'page' O(log K + ARGV[4]).

if ARGV[2] == 'page' then
  local first = tonumber(ARGV[3])
  return redis.call('ZREVRANGE', KEYS[1], first, first + tonumber(ARGV[4]) - 1, 'WITHSCORES')
end
local forgot = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if KEYS[2] then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
return forgot
