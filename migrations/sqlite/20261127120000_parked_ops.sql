-- Operations Redis numbered again: see the Postgres migration of the same name.

CREATE TABLE IF NOT EXISTS rankd_parked (
    board     TEXT NOT NULL,
    redis_seq INTEGER NOT NULL,
    op        TEXT NOT NULL,
    recv_ms   INTEGER NOT NULL,
    member    TEXT,
    value     REAL,
    event_id  TEXT,
    at_ms     INTEGER,
    scopes    TEXT,
    payload   TEXT,
    extra     TEXT,
    PRIMARY KEY (board, redis_seq, recv_ms)
) WITHOUT ROWID;

ALTER TABLE rankd_ops ADD COLUMN redis_seq INTEGER;
CREATE INDEX IF NOT EXISTS rankd_ops_merged ON rankd_ops (board, redis_seq) WHERE redis_seq IS NOT NULL;
