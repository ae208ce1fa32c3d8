-- board_get.lua: reads a board definition.
--
-- KEYS  [1] definition hash
-- ARGV  none
-- Reply {version, definition JSON, created ms}, each nil when the board is not defined.
-- Cost  O(1).

return redis.call('HMGET', KEYS[1], 'v', 'json', 'created')
