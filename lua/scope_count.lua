-- scope_count.lua: how many scopes a board keeps, and how many of some scopes would be new to it.
--
-- KEYS  [1] scope index zset (scope -> expire-at ms of its latest key, +inf for never)
-- ARGV  [1] now ms  [2..] scopes
-- Reply {scopes kept (live in the index), how many of ARGV[2..] are not}.
-- Cost  O(log N + S) for S scopes given.
--
-- A batch of several calls asks it before writing (see Engine::submit_batch): when the board has
-- room for every scope it names, no call can be refused for its scopes; otherwise the board's events
-- are checked one by one (lua/submit.lua in check mode).

local now = tonumber(ARGV[1])
local kept = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
local new = 0
for i = 2, #ARGV, 1000 do
  local got = redis.call('ZMSCORE', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  for j = 1, #got do
    local at = got[j]
    if not at or (at ~= 'inf' and tonumber(at) <= now) then
      new = new + 1
    end
  end
end
return { kept, new }
