-- Rebuild bases are verified snapshot runs (see migrations/postgres/20261202120000_verified_bases.sql):
-- only a run found equal to its log's replay up to its seq is a base; runs taken before this column
-- existed are not, until the next snapshot's run is verified.

ALTER TABLE rankd_snapshots ADD COLUMN base INTEGER NOT NULL DEFAULT 0;
