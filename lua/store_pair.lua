-- store_pair.lua: which durable store this Redis feeds, and pairs it with one when it has none.
--
-- KEYS  [1] the pairing key ({prefix}store)
-- ARGV  [1] the id of the store to pair with when there is none yet ('' : only read)  [2] '1' to pair
--       with it even when paired with another (an operator's decision)
-- Reply the id of the store this Redis is paired with ('' when none).
-- Cost  O(1).

local paired = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' and (not paired or ARGV[2] == '1') then
  redis.call('SET', KEYS[1], ARGV[1])
  paired = ARGV[1]
end
return paired or ''
