-- Each board's highest stored sequence number, kept on its board row.
--
-- The start-up check and the check every ten seconds compare each stored board's last number with
-- Redis' counter. Read from rankd_ops, that is a descent of its primary key per board per check,
-- whose pages grow with the stored history and compete for the buffer cache; read from here it is
-- one small table, whatever the history. Triggers keep it after every statement that inserts or
-- deletes operations, whoever runs it (rankd's commits, merges, new lives and purges, or rows
-- loaded by hand), so it cannot drift from the operations it summarises.

ALTER TABLE rankd_boards ADD COLUMN IF NOT EXISTS last_seq BIGINT NOT NULL DEFAULT 0;

-- The boards of the changed rows get their last number again (one descent each, on pages the
-- statement just touched); a board whose number did not move is left alone.
CREATE OR REPLACE FUNCTION rankd_ops_last_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rankd_boards b SET last_seq = m.seq
    FROM (SELECT c.board, COALESCE((SELECT o.seq FROM rankd_ops o WHERE o.board = c.board
                                    ORDER BY o.seq DESC LIMIT 1), 0) AS seq
          FROM (SELECT DISTINCT board FROM changed) AS c) AS m
    WHERE b.board = m.board AND b.last_seq <> m.seq;
    RETURN NULL;
END
$$;

-- A board row made after its operations were stored (its definition commits in the same
-- transaction as they do, after them) starts from them.
CREATE OR REPLACE FUNCTION rankd_boards_last_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_seq := COALESCE((SELECT o.seq FROM rankd_ops o WHERE o.board = NEW.board
                              ORDER BY o.seq DESC LIMIT 1), 0);
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS rankd_ops_inserted ON rankd_ops;
CREATE TRIGGER rankd_ops_inserted AFTER INSERT ON rankd_ops
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION rankd_ops_last_seq();
DROP TRIGGER IF EXISTS rankd_ops_deleted ON rankd_ops;
CREATE TRIGGER rankd_ops_deleted AFTER DELETE ON rankd_ops
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION rankd_ops_last_seq();
DROP TRIGGER IF EXISTS rankd_boards_created ON rankd_boards;
CREATE TRIGGER rankd_boards_created BEFORE INSERT ON rankd_boards
    FOR EACH ROW EXECUTE FUNCTION rankd_boards_last_seq();

UPDATE rankd_boards b SET last_seq = COALESCE((SELECT o.seq FROM rankd_ops o WHERE o.board = b.board
                                               ORDER BY o.seq DESC LIMIT 1), 0);
