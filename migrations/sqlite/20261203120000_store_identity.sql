-- A store's identity (see migrations/postgres/20261203120000_store_identity.sql).

CREATE TABLE IF NOT EXISTS rankd_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

INSERT OR IGNORE INTO rankd_meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));
