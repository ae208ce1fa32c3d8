-- log_seq.lua: reads a board's operation sequence counter, or raises it after a rebuild.
--
-- KEYS  [1] operation sequence counter
-- ARGV  [1] '' to read, or the value the counter must reach (never lowered)
-- Reply the counter (0 when absent).
-- Cost  O(1).

local cur = tonumber(redis.call('GET', KEYS[1])) or 0
if ARGV[1] ~= '' and tonumber(ARGV[1]) > cur then
  cur = tonumber(ARGV[1])
  redis.call('SET', KEYS[1], cur)
end
return cur
