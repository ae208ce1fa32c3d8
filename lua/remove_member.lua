-- remove_member.lua: removes a member from every key of a board, with its display data, in bounded
-- steps: a start, chunks that each go through a page of the key index, and a finish.
--
-- KEYS  [1] definition hash  [2] key index zset  [3] removal hash (member -> data keys noted for it),
--       then by step:
--       start   nothing more
--       chunk   per data key s = 1..S, W keys starting at KEYS[3 + (s-1)*W + 1]: the leaderboard zset
--               and, on dense boards (W = 3), its distinct-value zset and count hash; last, the
--               board's cache hash (see pages_changed in lib.lua)
--       finish  [4] display-name hash  [5] display-data hash  [6] operation sequence counter
--               [7] operation log stream
-- ARGV  [1] step start|chunk|finish  [2] definition version  [3] now ms  [4] member  [5] rank mode
--       start   [6] most index entries to answer
--       chunk   [6] most index entries to answer (0: none)  [7] where the next page starts, counted
--               from the index's last key  [8..] tick bits per data key
--       finish  [6] log 1|0 (fields o=r s=seq m n)
-- Reply start   the first page of leaderboard zsets, from the key index's last (latest to expire)
--       chunk   {the number of leaderboard keys the member was removed from, then the next page}
--       finish  {0, then the keys written for the member since the start, or added to the key index:
--               go through them (chunks answering no page), and finish again}, or {1, sequence
--               number (0 without log)} once none is left: the removal is done.
-- Errors RANKD_NOBOARD, RANKD_STALE <version>, RANKD_RETRY (the removal's lease ended: begin again).
-- Cost  start O(log K + C); chunk O(S * log N + log K + C); finish O(L) for L keys noted.
--
-- While a removal is under way the definition's field rm holds a line '<lease end ms> <member>' for
-- it, which lua/submit.lua reads with the version (no call more): for such a member, and for every
-- key it adds to the key index, it notes the key in the removal hash. A walk of the index by
-- position from its end misses no key that holds the member when the finish finds nothing noted:
-- the index only loses keys from its other end (those that expired), a key the walk passed and then
-- written for the member is noted, and so is a key added or moved in the index. Each step renews the
-- lease (LEASE_MS); one that finds it over answers RETRY, since writes made after it ended were not
-- noted.

local LEASE_MS = 30000
local err = check_def(KEYS[1], ARGV[2])
if err then
  return err
end
local step, now, member = ARGV[1], tonumber(ARGV[3]), ARGV[4]

-- The removals under way, from the definition's field rm: {member = lease end}, those over dropped.
local function leases()
  local out = {}
  local text = redis.call('HGET', KEYS[1], 'rm')
  for line in string.gmatch(text or '', '[^\n]+') do
    local sp = string.find(line, ' ', 1, true)
    local until_ms = sp and tonumber(string.sub(line, 1, sp - 1))
    if until_ms and until_ms > now then
      out[string.sub(line, sp + 1)] = until_ms
    end
  end
  return out
end

local function save(list)
  local lines = {}
  for m, until_ms in pairs(list) do
    lines[#lines + 1] = fmt(until_ms) .. ' ' .. m
  end
  if #lines == 0 then
    redis.call('HDEL', KEYS[1], 'rm')
  else
    redis.call('HSET', KEYS[1], 'rm', table.concat(lines, '\n'))
  end
end

local function page(first, n)
  if n <= 0 then
    return {}
  end
  return redis.call('ZREVRANGE', KEYS[2], first, first + n - 1)
end

local list = leases()
if step == 'start' then
  list[member] = now + LEASE_MS
  save(list)
  redis.call('HDEL', KEYS[3], member)
  return page(0, tonumber(ARGV[6]))
end
if not list[member] then
  return fail('RETRY', 'the removal of the member lost its lease; begin it again')
end

if step == 'chunk' then
  list[member] = now + LEASE_MS
  save(list)
  local dense = ARGV[5] == 'dense'
  local width = dense and 3 or 1
  -- A dense board needs the score to count the member out of its distinct values; any other board
  -- only the ZREM, whose answer says whether the member was there.
  local removed = 0
  -- A key that loses the member changes its count, which every cached page of it shows.
  local depth = tonumber(redis.call('HGET', KEYS[1], 'cd')) or 0
  for s = 1, #ARGV - 7 do
    local base = 3 + (s - 1) * width
    if dense then
      local ctx = board_ctx(KEYS[base + 1], KEYS[base + 2], true, 'dense', tonumber(ARGV[7 + s]))
      local stored = tonumber(redis.call('ZSCORE', ctx.key, member))
      if stored then
        redis.call('ZREM', ctx.key, member)
        dense_count(ctx, KEYS[base + 3], stored, -1)
        removed = removed + 1
        if depth > 0 then
          pages_changed(KEYS[#KEYS], ctx.key, 0)
        end
      end
    elseif redis.call('ZREM', KEYS[base + 1], member) == 1 then
      removed = removed + 1
      if depth > 0 then
        pages_changed(KEYS[#KEYS], KEYS[base + 1], 0)
      end
    end
  end
  local out = page(tonumber(ARGV[7]), tonumber(ARGV[6]))
  table.insert(out, 1, removed)
  return out
end

local noted = redis.call('HGET', KEYS[3], member)
if noted then
  redis.call('HDEL', KEYS[3], member)
  list[member] = now + LEASE_MS
  save(list)
  local out = { 0 }
  for k in string.gmatch(noted, '%S+') do
    out[#out + 1] = k
  end
  return out
end
list[member] = nil
save(list)
redis.call('HDEL', KEYS[4], member)
redis.call('HDEL', KEYS[5], member)
local seq = 0
if ARGV[6] == '1' then
  seq = redis.call('INCR', KEYS[6])
  redis.call('XADD', KEYS[7], '0-' .. seq, 'o', 'r', 's', seq, 'm', member, 'n', ARGV[3])
end
return { 1, seq }
