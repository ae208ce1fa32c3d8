-- The durable store: board definitions and every operation of every board's log, in order.
-- Replaying a board's operations by seq through the same Lua scripts rebuilds it exactly.

CREATE TABLE IF NOT EXISTS rankd_boards (
    board       TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,            -- the definition JSON as the board holds it
    version     TEXT NOT NULL,            -- its version token
    deleted     BOOLEAN NOT NULL DEFAULT FALSE, -- tombstone: deletion committed, keys may still await removal
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS rankd_ops (
    board     TEXT NOT NULL,
    seq       BIGINT NOT NULL,            -- order within the board, from 1
    op        CHAR(1) NOT NULL,           -- d define, e event, r remove member, p display data
    recv_ms   BIGINT NOT NULL,            -- when rankd applied it (Unix ms); replays use it as "now"
    member    TEXT,
    value     DOUBLE PRECISION,
    event_id  TEXT,
    at_ms     BIGINT,                     -- when the event happened (Unix ms)
    scopes    TEXT[],
    payload   TEXT,                       -- d: definition JSON; p: display data JSON
    extra     TEXT,                       -- d: definition version; p: display name
    PRIMARY KEY (board, seq)
);

-- Activity by (member, time): "what did u42 do this week", trends per member.
CREATE INDEX IF NOT EXISTS rankd_ops_member_at ON rankd_ops (member, at_ms) WHERE op = 'e';
