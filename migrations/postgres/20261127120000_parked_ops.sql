-- Operations Redis numbered again.
--
-- When Redis loses operations the store already holds (a failover to a replica that had not
-- received them, a restart from an older file) but keeps the board, its sequence counter hands
-- those numbers out again, to new operations, which were answered too. The store keeps both: an
-- operation offered at a number the store holds another operation at waits here, by the number
-- Redis gave it, with every later one of its board, until the board is resynchronised: they are
-- then appended after the store's own log, in Redis' order, and Redis is rebuilt from the log.

CREATE TABLE IF NOT EXISTS rankd_parked (
    board     TEXT NOT NULL,
    redis_seq BIGINT NOT NULL,            -- the number Redis gave it
    op        CHAR(1) NOT NULL,
    recv_ms   BIGINT NOT NULL,
    member    TEXT,
    value     DOUBLE PRECISION,
    event_id  TEXT,
    at_ms     BIGINT,
    scopes    TEXT[],
    payload   TEXT,
    extra     TEXT,
    PRIMARY KEY (board, redis_seq, recv_ms)
);

-- A merged operation keeps the number Redis gave it, so that the same operation offered again
-- later (a sweep that read it before the merge) is known and not appended twice.
ALTER TABLE rankd_ops ADD COLUMN IF NOT EXISTS redis_seq BIGINT;
CREATE INDEX IF NOT EXISTS rankd_ops_merged ON rankd_ops (board, redis_seq) WHERE redis_seq IS NOT NULL;
