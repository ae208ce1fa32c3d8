-- registry.lua: the set of defined board ids, so that boards can be listed.
--
-- KEYS  [1] registry set
-- ARGV  [1] add|remove|list  [2] board id (add, remove)
-- Reply add/remove: 1 if the set changed, else 0; list: the board ids.
-- Cost  O(1) for add and remove, O(B) for list.
--
-- The registry lives outside any board's hash slot, so it is kept by its own calls: after a definition
-- is created, before its keys are deleted. Readers drop ids whose definition is gone.

local op = ARGV[1]
if op == 'add' then
  return redis.call('SADD', KEYS[1], ARGV[2])
end
if op == 'remove' then
  return redis.call('SREM', KEYS[1], ARGV[2])
end
if op == 'list' then
  return redis.call('SMEMBERS', KEYS[1])
end
return fail('ARGS', 'unknown registry operation ' .. op)
