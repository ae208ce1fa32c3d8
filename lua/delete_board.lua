-- delete_board.lua: deletes a board in bounded steps: its definition at once (from then on the board
-- reads as gone, takes no write, and cannot be defined again until the deletion ends), then its data
-- keys a chunk at a time, then its own keys.
--
-- KEYS  [1] definition hash  [2] key index zset, then by step:
--       start   [3] the board's cache hash (see pages_changed in lib.lua)
--       chunk   the data keys to remove: each leaderboard zset of ARGV[5..] and its dense indexes
--       finish  the board's other keys (dedupe, prints, display data, sequence, log, scope index,
--               removals)
-- ARGV  [1] step start|chunk|finish  [2] start: the definition version; chunk, finish: the deletion's
--       token  [3] start, chunk: most index entries to answer, then
--       start: [4] the token to delete under; chunk: [4..] the leaderboard zsets among KEYS[3..],
--       forgotten by the key index
-- Reply start, chunk: the next leaderboard zsets to remove, at most ARGV[3] ({}: none is left);
--       finish: the number of keys removed.
-- Errors RANKD_NOBOARD, RANKD_STALE <version> (start: the board changed); RANKD_STALE <token|''>
--       (chunk, finish: the deletion is no longer under way: another call finished it).
-- Cost  start O(log K + C); chunk O(C + log K) for C keys given and answered; finish O(1) a key;
--       memory is freed in the background (UNLINK).

local step = ARGV[1]
local function page()
  return redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[3]) - 1)
end

if step == 'start' then
  local err = check_def(KEYS[1], ARGV[2])
  if err then
    return err
  end
  redis.call('HDEL', KEYS[1], 'v', 'json', 'created', 'beat', 'rm', 'cd')
  redis.call('HSET', KEYS[1], 'del', ARGV[4])
  -- No cached page of the board is true any more, on any instance.
  redis.call('DEL', KEYS[3])
  return page()
end

local token = redis.call('HGET', KEYS[1], 'del')
if token ~= ARGV[2] then
  return fail('STALE', token or '')
end
if step == 'chunk' then
  for i = 3, #KEYS do
    redis.call('UNLINK', KEYS[i])
  end
  for i = 4, #ARGV, 1000 do
    redis.call('ZREM', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  return page()
end
local removed = 0
for i = 2, #KEYS do
  removed = removed + redis.call('UNLINK', KEYS[i])
end
return removed + redis.call('UNLINK', KEYS[1])
