-- Leases: work one instance at a time does (periodic snapshots), claimed for a while and renewed.
CREATE TABLE IF NOT EXISTS rankd_leases (
    name      TEXT PRIMARY KEY,
    holder    TEXT NOT NULL,
    until_ms  BIGINT NOT NULL
);
