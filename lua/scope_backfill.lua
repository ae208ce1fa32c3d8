-- scope_backfill.lua: enters the scopes of a board's existing keys in its scope index, a page at a time,
-- for a board whose keys were written before the index existed (it counts scopes for max_scopes).
--
-- KEYS  [1] definition hash  [2] key index zset (data key -> expire-at ms, +inf for none)
--       [3] scope index zset (scope -> expire-at ms of its latest key)
-- ARGV  [1] the head of the board's leaderboard keys ('<prefix>{<board>}:z:')  [2] position, counted from
--       the key index's last (latest to expire), as key_index.lua pages it  [3] page length  [4] now ms
-- Reply how many keys the page held. A page shorter than ARGV[3] ends the walk: the definition records it
--       (field 'sx'), and the board is never walked again. Boards created with the index have 'sx' from
--       the start (board_put.lua).
-- Cost  O(log K + ARGV[3]).
--
-- Idempotent: a scope's expiry only grows (GT), so two instances walking at once, or a walk beside writes
-- that enter their own scopes, agree.

local head = ARGV[1]
local first = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local page = redis.call('ZREVRANGE', KEYS[2], first, first + n - 1, 'WITHSCORES')
for i = 1, #page, 2 do
  local key, at = page[i], page[i + 1]
  if string.sub(key, 1, #head) == head then
    -- <window>:<period>:s:<scope> (a global board's key ends in :g); scopes may hold ':'
    local scope = string.match(string.sub(key, #head + 1), '^[^:]*:[^:]*:s:(.*)$')
    local never = at == 'inf' or at == '+inf'
    if scope and (never or tonumber(at) > now) then
      redis.call('ZADD', KEYS[3], 'GT', never and '+inf' or at, scope)
    end
  end
end
local held = #page / 2
if held < n and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'sx', '1')
end
return held
