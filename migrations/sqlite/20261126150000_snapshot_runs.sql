-- Snapshots as a base for rebuilds (see migrations/postgres/20261126150000_snapshot_runs.sql): a run
-- of a board is written in one transaction under one run_id; `stored` keeps the score as the sorted
-- set holds it where it differs from `score`; `expire_ms` is when the key expires (NULL: never);
-- `version` the board definition's version at seq.

ALTER TABLE rankd_snapshots ADD COLUMN run_id INTEGER;
ALTER TABLE rankd_snapshots ADD COLUMN version TEXT;
ALTER TABLE rankd_snapshots ADD COLUMN expire_ms INTEGER;
ALTER TABLE rankd_snapshot_entries ADD COLUMN stored REAL;

CREATE INDEX IF NOT EXISTS rankd_snapshots_run ON rankd_snapshots (board, run_id);
