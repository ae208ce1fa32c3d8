-- dedupe_get.lua: the prints of the event ids a board remembers, so that a batch of several calls can
-- find an id reused for another event before its first call writes.
--
-- KEYS  [1] dedupe zset (event id -> forget-at ms)  [2] event print hash (event id -> print)
-- ARGV  [1] now ms, then the event ids
-- Reply per id, in order: its print when the board remembers it now with one, else ''.
-- Cost  O(I * log N) for I ids.

local now = tonumber(ARGV[1])
local out = {}
local MULTI = 1000
for i = 2, #ARGV, MULTI do
  local j = math.min(i + MULTI - 1, #ARGV)
  local forget = redis.call('ZMSCORE', KEYS[1], unpack(ARGV, i, j))
  local known = redis.call('HMGET', KEYS[2], unpack(ARGV, i, j))
  for k = 1, #forget do
    local f = tonumber(forget[k])
    out[#out + 1] = (f and f > now and known[k]) or ''
  end
end
return out
