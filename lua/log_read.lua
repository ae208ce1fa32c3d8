-- log_read.lua: the oldest operations of a board's log that the durable store has not confirmed.
--
-- KEYS  [1] operation log stream (entry ids are 0-<sequence number>)
-- ARGV  [1] most entries to return
-- Reply the entries as XRANGE returns them: {{id, {field, value, ...}}, ...}, oldest first.
-- Cost  O(log N + count).

return redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])
