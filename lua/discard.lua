-- discard.lua: removes keys of a board whose Redis copy is being replaced by a rebuild.
--
-- KEYS  every key to remove (all of one board: they share its hash tag)
-- ARGV  none
-- Reply the number of keys removed.
-- Cost  O(K); memory is freed in the background (UNLINK).
--
-- Only the rebuild calls it, after the durable store showed that Redis lost acknowledged writes.

local removed = 0
for i = 1, #KEYS do
  removed = removed + redis.call('UNLINK', KEYS[i])
end
return removed
