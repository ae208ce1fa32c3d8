-- log_trim.lua: forgets operations the durable store has committed.
--
-- KEYS  [1] operation log stream
-- ARGV  [1..] sequence numbers committed
-- Reply the number of entries removed.
-- Cost  O(M log N) for M entries. XDEL takes them a thousand at a time: Lua's unpack refuses
--       more than about 8,000 values.

local removed = 0
for from = 1, #ARGV, 1000 do
  local ids = {}
  for i = from, math.min(from + 999, #ARGV) do
    ids[#ids + 1] = '0-' .. ARGV[i]
  end
  removed = removed + redis.call('XDEL', KEYS[1], unpack(ids))
end
return removed
