-- discard.lua: removes keys of a board whose Redis copy is being replaced by a rebuild.
--
-- KEYS  [1] definition hash  [2..] other keys to remove (all of one board: they share its hash tag)
-- ARGV  [1] the version the board must still carry ('' : any)  [2] 1 to remove the definition too
-- Reply the number of keys removed.
-- Errors RANKD_STALE <version|''> when the board no longer carries ARGV[1] (nothing is removed).
-- Cost  O(K); memory is freed in the background (UNLINK).
--
-- The rebuild calls it, after the durable store showed that Redis lost acknowledged writes, in
-- chunks, the definition last: a discard of a board another instance has since taken over (its
-- definition gone or under another token) stops at its next chunk instead of removing the keys
-- that instance writes.

if ARGV[1] ~= '' then
  local v = redis.call('HGET', KEYS[1], 'v')
  if v ~= ARGV[1] then
    return fail('STALE', v or '')
  end
end
local removed = 0
for i = 2, #KEYS do
  removed = removed + redis.call('UNLINK', KEYS[i])
end
if ARGV[2] == '1' then
  removed = removed + redis.call('UNLINK', KEYS[1])
end
return removed
