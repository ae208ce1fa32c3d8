-- cache_clears.lua: records clears of the answer caches, for every rankd instance to apply, and reads them.
--
-- KEYS  [1] the clears hash: '<cache type>' or '<cache type>|<board>' -> how many clears it has had
-- ARGV  the fields to count one more clear on (none: only read)
-- Reply the whole hash, flat {field, count, ...}.
-- Cost  O(F) for the F fields of the hash: one per cache type, and per (type, board) ever cleared alone.
--
-- Each instance reads the hash every quarter second and clears what it holds of every field whose count
-- moved since its last read (see src/engine/pages.rs).

for i = 1, #ARGV do
  redis.call('HINCRBY', KEYS[1], ARGV[i], 1)
end
return redis.call('HGETALL', KEYS[1])
