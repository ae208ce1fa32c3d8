-- board_get.lua: reads a board definition.
--
-- KEYS  [1] definition hash
-- ARGV  none
-- Reply {version, definition JSON, created ms, deletion token}, each nil when absent: a board being
--       deleted (lua/delete_board.lua) has only its deletion token.
-- Cost  O(1).

return redis.call('HMGET', KEYS[1], 'v', 'json', 'created', 'del')
