-- board_put.lua: creates or updates a board definition, compare-and-set on its version.
--
-- KEYS  [1] definition hash  [2] operation sequence counter  [3] operation log stream  [4] cache hash
-- ARGV  [1] expected version ('' to create: the board must not exist)  [2] new version  [3] definition JSON
--       [4] now ms  [5] log 1|0: append the definition to the log (fields o=d s=seq j=json x=version n=now)
-- Reply {new version, sequence number (0 without log)}.
-- Errors RANKD_EXISTS <version> (create of a defined board), RANKD_STALE <version|''> (update lost a race),
--       RANKD_DELETING <token> (create of a board whose deletion is under way: end it, then create).
-- Cost  O(1).
--
-- Versions are unique tokens, never counters, so a board deleted and defined again never matches a
-- version cached from its previous life.

local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if current then
    return fail('EXISTS', current)
  end
  local deleting = redis.call('HGET', KEYS[1], 'del')
  if deleting then
    return fail('DELETING', deleting)
  end
  -- sx: its scope index holds every scope from the start (see scope_backfill.lua).
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'json', ARGV[3], 'created', ARGV[4], 'sx', '1')
elseif current ~= ARGV[1] then
  return fail('STALE', current or '')
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'json', ARGV[3])
  if ARGV[2] ~= ARGV[1] then
    -- A rebuild hands the board back: its lease renewals (rebuild_beat.lua) go with its token.
    redis.call('HDEL', KEYS[1], 'beat')
  end
end
-- Cached pages of the board were read under the old definition (see pages_changed in lib.lua): the cache
-- hash carries the definition's version, and why it last changed: a rebuild takes a board under a version
-- 'rebuild:<...>' and hands it back from one.
local rebuilt = string.sub(ARGV[2], 1, 8) == 'rebuild:' or string.sub(current or '', 1, 8) == 'rebuild:'
redis.call('HSET', KEYS[4], 'dv', ARGV[2], 'r', rebuilt and 'rebuild' or 'definition')
local seq = 0
if ARGV[5] == '1' then
  seq = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[3], '0-' .. seq, 'o', 'd', 's', seq, 'j', ARGV[3], 'x', ARGV[2], 'n', ARGV[4])
end
return { ARGV[2], seq }
