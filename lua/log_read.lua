-- log_read.lua: the oldest operations of a board's log that the durable store has not confirmed.
--
-- KEYS  [1] operation log stream (entry ids are 0-<sequence number>)
-- ARGV  [1] most entries to return  [2] optional: only entries after this sequence number
-- Reply the entries as XRANGE returns them: {{id, {field, value, ...}}, ...}, oldest first.
-- Cost  O(log N + count).

local from = '-'
if ARGV[2] and ARGV[2] ~= '0' then
  from = '0-' .. (tonumber(ARGV[2]) + 1)
end
return redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', ARGV[1])
