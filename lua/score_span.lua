-- score_span.lua: the largest |value| held in some leaderboard keys of one board.
--
-- KEYS  the leaderboard zsets
-- ARGV  tick bits per key
-- Reply the largest |value| found, as a string ('0' when the keys are empty or missing).
-- Cost  O(log N) per key: only each key's first and last entries are read.

local most = 0
for i = 1, #KEYS do
  local pow = 2 ^ tonumber(ARGV[i])
  for _, at in ipairs({ 0, -1 }) do
    local got = redis.call('ZRANGE', KEYS[i], at, at, 'WITHSCORES')
    if got[2] then
      local v = math.abs(decode(tonumber(got[2]), pow))
      if v > most then
        most = v
      end
    end
  end
end
return fmt(most)
