-- A store's identity, made when the store is created. rankd pairs the Redis it feeds with it (the
-- key {prefix}store), so that a store lost and created again, which holds none of the history that
-- Redis was built from, is never taken for the store it replaced.

CREATE TABLE IF NOT EXISTS rankd_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

INSERT INTO rankd_meta (key, value)
VALUES ('store_id', md5(random()::text || clock_timestamp()::text))
ON CONFLICT (key) DO NOTHING;
