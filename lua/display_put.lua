-- display_put.lua: sets (or clears) a member's display data, kept beside the board with no expiry.
--
-- KEYS  [1] definition hash  [2] display-name hash  [3] display-data hash  [4] operation sequence counter
--       [5] operation log stream  [6] the board's cache hash (see pages_changed in lib.lua)
-- ARGV  [1] definition version  [2] member  [3] display name ('' clears it)  [4] data JSON ('' clears it)
--       [5] log 1|0 (fields o=p s=seq m d=name j=data n)  [6] now ms  [7] order desc|asc ('': leave cached
--       pages alone, as a rebuild's replay does: handing the board back changes them all)
-- Reply the sequence number (0 without log).
-- Errors RANKD_NOBOARD, RANKD_STALE <version>.
-- Cost  O(1); a name change of a board with cached pages, O(K log N) for the K keys cached.

local err, depth = check_def_depth(KEYS[1], ARGV[1])
if err then
  return err
end
local name = ARGV[3] ~= '' and ARGV[3] or false
if depth > 0 and ARGV[7] ~= '' and redis.call('HGET', KEYS[2], ARGV[2]) ~= name then
  -- Cached pages show display names: every one holding the member changed.
  local cached = redis.call('HGETALL', KEYS[6])
  for i = 1, #cached, 2 do
    local f = cached[i]
    if string.sub(f, 1, 2) == 'd:' then
      local key = string.sub(f, 3)
      local pos
      if ARGV[7] == 'desc' then
        pos = redis.call('ZREVRANK', key, ARGV[2])
      else
        pos = redis.call('ZRANK', key, ARGV[2])
      end
      if pos then
        pages_changed(KEYS[6], key, pos)
      end
    end
  end
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
