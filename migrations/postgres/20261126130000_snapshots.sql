-- Snapshots: the standing of every leaderboard key at a point of its board's log, kept for history.
-- A key's snapshot is consistent at `seq`: the board's operations up to and including seq, no more.

CREATE TABLE IF NOT EXISTS rankd_snapshots (
    id        BIGSERIAL PRIMARY KEY,
    board     TEXT NOT NULL,
    window_name TEXT NOT NULL,            -- all, daily, weekly, monthly
    period    TEXT NOT NULL,              -- 'all' or the period id (2026-W48)
    scope     TEXT NOT NULL,              -- '' for the global board
    seq       BIGINT NOT NULL,
    members   BIGINT NOT NULL,
    taken_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS rankd_snapshot_entries (
    snapshot_id BIGINT NOT NULL REFERENCES rankd_snapshots (id) ON DELETE CASCADE,
    rank        BIGINT NOT NULL,
    member      TEXT NOT NULL,
    score       DOUBLE PRECISION NOT NULL
);

-- Leaderboard lookups by (board type, scope, rank): the latest snapshot of a key, then its ranks.
CREATE INDEX IF NOT EXISTS rankd_snapshots_key ON rankd_snapshots (board, window_name, scope, period, taken_at DESC);
CREATE INDEX IF NOT EXISTS rankd_snapshot_entries_rank ON rankd_snapshot_entries (snapshot_id, rank);
-- Rank history and trends of one member: every snapshot that holds them, by time.
CREATE INDEX IF NOT EXISTS rankd_snapshot_entries_member ON rankd_snapshot_entries (member, snapshot_id);
-- Retention deletes by age.
CREATE INDEX IF NOT EXISTS rankd_snapshots_taken ON rankd_snapshots (taken_at);
