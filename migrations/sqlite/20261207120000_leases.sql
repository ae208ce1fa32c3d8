-- Leases: work one process at a time does. `rankd admin snapshot` runs beside the server that owns
-- the file, and a snapshot run is taken by one of them at a time.
CREATE TABLE IF NOT EXISTS rankd_leases (
    name      TEXT PRIMARY KEY,
    holder    TEXT NOT NULL,
    until_ms  BIGINT NOT NULL
);
