-- display_put.lua: sets (or clears) a member's display data, kept beside the board with no expiry.
--
-- KEYS  [1] definition hash  [2] display-name hash  [3] display-data hash  [4] operation sequence counter
--       [5] operation log stream
-- ARGV  [1] definition version  [2] member  [3] display name ('' clears it)  [4] data JSON ('' clears it)
--       [5] log 1|0 (fields o=p s=seq m d=name j=data n)  [6] now ms
-- Reply the sequence number (0 without log).
-- Errors RANKD_NOBOARD, RANKD_STALE <version>.
-- Cost  O(1).

local err = check_def(KEYS[1], ARGV[1])
if err then
  return err
end
local fields = { { KEYS[2], ARGV[3] }, { KEYS[3], ARGV[4] } }
for _, f in ipairs(fields) do
  if f[2] == '' then
    redis.call('HDEL', f[1], ARGV[2])
  else
    redis.call('HSET', f[1], ARGV[2], f[2])
  end
end
local seq = 0
if ARGV[5] == '1' then
  seq = redis.call('INCR', KEYS[4])
  redis.call('XADD', KEYS[5], '0-' .. seq, 'o', 'p', 's', seq, 'm', ARGV[2], 'd', ARGV[3], 'j', ARGV[4], 'n', ARGV[6])
end
return seq
