-- log_trim.lua: forgets operations the durable store has committed.
--
-- KEYS  [1] operation log stream
-- ARGV  [1..] sequence numbers committed
-- Reply the number of entries removed.
-- Cost  O(M log N) for M entries.

local ids = {}
for i = 1, #ARGV do
  ids[i] = '0-' .. ARGV[i]
end
if #ids == 0 then
  return 0
end
return redis.call('XDEL', KEYS[1], unpack(ids))
