-- Rebuild bases are verified snapshot runs.
--
-- A run read at one point of its board's log holds what Redis held there, and Redis can hold what the
-- log does not imply (a score written into it by hand, a fault). Only a run found equal to its log's
-- replay up to its seq is a base (`base`); any other run is history only. Runs taken before this
-- column existed were never checked: they are not bases, and a rebuild replays the whole log until
-- the next snapshot's run is verified.

ALTER TABLE rankd_snapshots ADD COLUMN IF NOT EXISTS base BOOLEAN NOT NULL DEFAULT FALSE;
