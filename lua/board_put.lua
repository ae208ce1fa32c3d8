-- board_put.lua: creates or updates a board definition, compare-and-set on its version.
--
-- KEYS  [1] definition hash
-- ARGV  [1] expected version ('' to create: the board must not exist)  [2] new version  [3] definition JSON
--       [4] now ms
-- Reply the new version.
-- Errors RANKD_EXISTS <version> (create of a defined board), RANKD_STALE <version|''> (update lost a race).
-- Cost  O(1).
--
-- Versions are unique tokens, never counters, so a board deleted and defined again never matches a
-- version cached from its previous life.

local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if current then
    return fail('EXISTS', current)
  end
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'json', ARGV[3], 'created', ARGV[4])
  return ARGV[2]
end
if current ~= ARGV[1] then
  return fail('STALE', current or '')
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'json', ARGV[3])
return ARGV[2]
