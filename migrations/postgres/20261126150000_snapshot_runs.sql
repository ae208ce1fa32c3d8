-- Snapshots as a base for rebuilds, and cheaper to write.
--
-- A snapshot run writes every key of a board in one transaction, under one run_id. When all its keys
-- were read at the same point of the board's log (the same seq), the run plus the operations after
-- seq are exactly the board: a rebuild restores the run's keys and replays only those operations.
-- `stored` keeps the score as the sorted set holds it when it differs from `score` (boards that break
-- ties by who came first fold a tick into it), so a restore is exact; `expire_ms` is when the key
-- expires (NULL: never); `version` the board definition's version at seq.

ALTER TABLE rankd_snapshots ADD COLUMN IF NOT EXISTS run_id BIGINT;
ALTER TABLE rankd_snapshots ADD COLUMN IF NOT EXISTS version TEXT;
ALTER TABLE rankd_snapshots ADD COLUMN IF NOT EXISTS expire_ms BIGINT;
ALTER TABLE rankd_snapshot_entries ADD COLUMN IF NOT EXISTS stored DOUBLE PRECISION;

-- The latest restorable run of a board.
CREATE INDEX IF NOT EXISTS rankd_snapshots_run ON rankd_snapshots (board, run_id);

-- A foreign key checks every entry row as it is copied in (a snapshot writes millions); entries are
-- deleted with their snapshot explicitly, in the same transaction, instead.
ALTER TABLE rankd_snapshot_entries DROP CONSTRAINT IF EXISTS rankd_snapshot_entries_snapshot_id_fkey;

-- Rank history looks a member up by equality only: a hash index serves it at about half the cost of a
-- B-tree on every copied row.
DROP INDEX IF EXISTS rankd_snapshot_entries_member;
CREATE INDEX IF NOT EXISTS rankd_snapshot_entries_member_hash ON rankd_snapshot_entries USING hash (member);
