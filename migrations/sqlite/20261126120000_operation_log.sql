-- The embedded engine's durable store: the same operation log as Postgres keeps, in SQLite.
-- Replaying a board's operations by seq through the same Lua scripts rebuilds it exactly.

CREATE TABLE IF NOT EXISTS rankd_boards (
    board       TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,
    version     TEXT NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL DEFAULT (unixepoch()),
    updated_at  INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE IF NOT EXISTS rankd_ops (
    board     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    op        TEXT NOT NULL,              -- d define, e event, r remove member, p display data
    recv_ms   INTEGER NOT NULL,
    member    TEXT,
    value     REAL,
    event_id  TEXT,
    at_ms     INTEGER,
    scopes    TEXT,                       -- space-separated (scopes never contain spaces)
    payload   TEXT,
    extra     TEXT,
    PRIMARY KEY (board, seq)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS rankd_ops_member_at ON rankd_ops (member, at_ms) WHERE op = 'e';

CREATE TABLE IF NOT EXISTS rankd_snapshots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    board       TEXT NOT NULL,
    window_name TEXT NOT NULL,
    period      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    members     INTEGER NOT NULL,
    taken_at    INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE TABLE IF NOT EXISTS rankd_snapshot_entries (
    snapshot_id INTEGER NOT NULL REFERENCES rankd_snapshots (id) ON DELETE CASCADE,
    rank        INTEGER NOT NULL,
    member      TEXT NOT NULL,
    score       REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS rankd_snapshots_key ON rankd_snapshots (board, window_name, scope, period, taken_at DESC);
CREATE INDEX IF NOT EXISTS rankd_snapshot_entries_rank ON rankd_snapshot_entries (snapshot_id, rank);
CREATE INDEX IF NOT EXISTS rankd_snapshot_entries_member ON rankd_snapshot_entries (member, snapshot_id);
CREATE INDEX IF NOT EXISTS rankd_snapshots_taken ON rankd_snapshots (taken_at);
