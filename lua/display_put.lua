-- display_put.lua: sets (or clears) a member's display data, kept beside the board with no expiry.
--
-- KEYS  [1] definition hash  [2] display-name hash  [3] display-data hash
-- ARGV  [1] definition version  [2] member  [3] display name ('' clears it)  [4] data JSON ('' clears it)
-- Reply 1.
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
return 1
