//! Postgres through sqlx: migrations, the operation log and board rows.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use crate::board::BoardId;
use crate::engine::LoggedOp;
use crate::error::{Error, Result};

/// The Postgres store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    expected: super::identity::Expected,
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(format!("store: {e}"))
}

/// The SELECT that turns [`Columns`], bound as $1 to $11, into rows of the operation columns.
macro_rules! unnested {
    () => {
        "SELECT b, s, o, r, m, v, e, a,
        CASE WHEN c IS NULL THEN NULL WHEN c = '' THEN '{}'::text[] ELSE string_to_array(c, ' ') END,
        p, x
 FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::float8[], $7::text[],
             $8::bigint[], $9::text[], $10::text[], $11::text[])
      AS t(b, s, o, r, m, v, e, a, c, p, x)"
    };
}

/// Live boards with their highest stored sequence number (rows of (board, seq)), from the number
/// the triggers of migrations/postgres/20261207120000_board_last_seq.sql keep on each board row
/// after every statement that stores or deletes operations: the checks that run it at start-up and
/// every ten seconds read one small table, whatever the stored history.
const LIVE_BOARDS: &str =
    "SELECT board, last_seq FROM rankd_boards WHERE deleted = FALSE ORDER BY board";

/// The highest stored sequence number of live board `$1`, as [`LIVE_BOARDS`] reads it: one row of
/// (seq), or none when no live board of this id is stored.
const BOARD_SEQ: &str = "SELECT last_seq FROM rankd_boards WHERE board = $1 AND deleted = FALSE";

/// Snapshots a merge of parked operations disqualifies as rebuild bases: those taken at or after
/// the first number Redis gave again ($2), which hold Redis' diverged history, not the store's.
const MERGED_SNAPSHOTS: &str = "UPDATE rankd_snapshots SET run_id = NULL, base = FALSE
     WHERE board = $1 AND seq >= $2 AND run_id IS NOT NULL";

/// Inserts or updates board `$1`'s row with definition `$2` of version `$3`, stored at sequence
/// number `$4`, unless a later definition is stored.
const UPSERT_BOARD: &str =
    "INSERT INTO rankd_boards (board, definition, version) VALUES ($1, $2, $3)
     ON CONFLICT (board) DO UPDATE SET definition = EXCLUDED.definition, version = EXCLUDED.version,
         deleted = FALSE, updated_at = now()
     WHERE NOT EXISTS (SELECT 1 FROM rankd_ops WHERE board = $1 AND op = 'd' AND seq > $4)";

/// What [`PgStore::purge`] deletes of a deleted board `$1`, in order: its parked and stored
/// operations, and its snapshots (entries first: they hold no foreign key), so that a board created
/// again under the same name starts without history, and a rebuild can never start from the
/// snapshot of another board. Then its board row.
const PURGE: [&str; 5] = [
    "DELETE FROM rankd_parked WHERE board = $1 AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = $1 AND NOT deleted)",
    "DELETE FROM rankd_ops WHERE board = $1 AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = $1 AND NOT deleted)",
    "DELETE FROM rankd_snapshot_entries WHERE snapshot_id IN (SELECT id FROM rankd_snapshots
       WHERE board = $1 AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = $1 AND NOT deleted))",
    "DELETE FROM rankd_snapshots WHERE board = $1
       AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = $1 AND NOT deleted)",
    "DELETE FROM rankd_boards WHERE board = $1 AND deleted",
];

/// Holds, until the transaction ends, the lock of each of `boards` (taken in the order of the
/// locks' keys, so that two commits never wait for each other). Whether an offered operation is stored or parked depends on what the
/// store holds and has parked of its board, and merging moves rows between the two: one
/// transaction at a time per board, or a commit that read "parked" before a merge committed parks
/// again an operation the merge appended, or stores one out of Redis' order.
async fn lock_boards(tx: &mut sqlx::PgConnection, boards: &[String]) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(7301, h)
         FROM (SELECT DISTINCT hashtext(b) AS h FROM UNNEST($1::text[]) AS b ORDER BY h OFFSET 0) AS s",
    )
    .bind(boards)
    .execute(tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// Inserts operations into rankd_ops, or into rankd_parked (`parked`) by the number Redis gave them,
/// in one statement (arrays unnested into rows; scopes travel space-joined, as scopes never contain
/// spaces, because Postgres has no ragged arrays), skipping any whose key is taken. Returns the
/// (board, number) of the rows it wrote.
async fn insert_rows(
    tx: &mut sqlx::PgConnection,
    parked: bool,
    ops: &[&LoggedOp],
) -> Result<HashSet<(String, u64)>> {
    let sql = if parked {
        concat!(
            "INSERT INTO rankd_parked (board, redis_seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra) ",
            unnested!(),
            " ON CONFLICT DO NOTHING RETURNING board, redis_seq"
        )
    } else {
        concat!(
            "INSERT INTO rankd_ops (board, seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra) ",
            unnested!(),
            " ON CONFLICT (board, seq) DO NOTHING RETURNING board, seq"
        )
    };
    let c = Columns::of(ops);
    Ok(sqlx::query_as::<_, (String, i64)>(sql)
        .bind(&c.board)
        .bind(&c.seq)
        .bind(&c.kind)
        .bind(&c.recv)
        .bind(&c.member)
        .bind(&c.value)
        .bind(&c.event_id)
        .bind(&c.at)
        .bind(&c.scopes)
        .bind(&c.payload)
        .bind(&c.extra)
        .fetch_all(tx)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|(b, s)| (b, s as u64))
        .collect())
}

/// A stored operation's place and identity: board, seq, op, recv_ms, member, extra.
type IdentRow = (String, i64, String, i64, Option<String>, Option<String>);

/// The identities of the stored operations `sql` finds (rows of [`IdentRow`]) at the offered
/// places: boards `$1` and numbers `$2`, pairwise.
async fn idents_at(
    tx: &mut sqlx::PgConnection,
    sql: &'static str,
    boards: &[String],
    seqs: &[i64],
) -> Result<Vec<((String, u64), super::Ident)>> {
    let rows: Vec<IdentRow> = sqlx::query_as(sql)
        .bind(boards)
        .bind(seqs)
        .fetch_all(tx)
        .await
        .map_err(unavailable)?;
    Ok(rows
        .into_iter()
        .map(|(b, s, kind, recv, member, extra)| {
            (
                (b, s as u64),
                super::Ident::stored(&kind, recv, member, extra),
            )
        })
        .collect())
}

/// Operations as columns, for `unnested!`.
#[derive(Default)]
struct Columns {
    board: Vec<String>,
    seq: Vec<i64>,
    kind: Vec<String>,
    recv: Vec<i64>,
    member: Vec<Option<String>>,
    value: Vec<Option<f64>>,
    event_id: Vec<Option<String>>,
    at: Vec<Option<i64>>,
    scopes: Vec<Option<String>>,
    payload: Vec<Option<String>>,
    extra: Vec<Option<String>>,
}

impl Columns {
    fn of(ops: &[&LoggedOp]) -> Self {
        let mut c = Self::default();
        for o in ops {
            let row = super::OpRow::from_op(&o.op);
            c.board.push(o.board.to_string());
            c.seq.push(o.seq as i64);
            c.recv.push(o.recv_ms);
            c.kind.push(row.kind);
            c.member.push(row.member);
            c.value.push(row.value);
            c.event_id.push(row.event_id);
            c.at.push(row.at_ms);
            c.scopes.push(row.scopes.map(|s| s.join(" ")));
            c.payload.push(row.payload);
            c.extra.push(row.extra);
        }
        c
    }
}

/// A failed connection: [`Error::Invalid`] naming `database_url` for what will not mend by waiting
/// (a refused login, a database that does not exist, a server certificate refused, a server with
/// no TLS when `sslmode` asks for it), else [`Error::Unavailable`].
fn refused_or_unavailable(e: sqlx::Error) -> Error {
    let invalid = |m: String| Error::Invalid(crate::error::Invalid::new("database_url", m));
    if let Some(refused) =
        crate::tls::handshake_refused(&format!("{e:?}"), "the system's and sslrootcert's")
    {
        return invalid(refused);
    }
    match &e {
        sqlx::Error::Database(d)
            if d.code()
                .is_some_and(|c| c.starts_with("28") || c == "3D000") =>
        {
            invalid(e.to_string())
        }
        sqlx::Error::Tls(m) => invalid(format!("TLS: {m}")),
        _ => unavailable(e),
    }
}

impl PgStore {
    /// Connects, to a URL in any form libpq takes (user, password, host or Unix socket directory,
    /// port, sslmode and sslrootcert in the URL or as its parameters; without a user, `PGUSER`,
    /// then the operating-system user). Connections are
    /// acquired with a short timeout so that writes fail fast while Postgres is down.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `database_url` when Postgres refuses the login or lacks the
    /// database, or TLS fails for good (a certificate refused, no TLS where `sslmode` asks for it);
    /// [`Error::Unavailable`] when Postgres cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(refused_or_unavailable)?;
        Ok(Self {
            pool,
            expected: super::identity::Expected::default(),
        })
    }

    /// The pool, for administrative queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates or upgrades the tables and indexes (migrations/).
    ///
    /// # Errors
    /// [`Error::Backend`] when a migration fails.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| Error::Backend(format!("migrations: {e}")))
    }

    /// Commits operations (any boards, any order) in one transaction. Already-stored sequence numbers
    /// are skipped, so the same operation may be offered twice (by the writer and by the sweep).
    /// A definition with sequence number 1 starts a board's life: whatever an earlier board of the
    /// same id left is removed first, unless the stored sequence number 1 is this very definition
    /// (its version is unique), offered again: then what followed it is this life's, and stays.
    ///
    /// An operation offered at a sequence number the store holds another operation at shows that
    /// Redis numbered it again after losing operations: it and its board's later ones are parked
    /// (see [`super::diverging`]). Returns the boards with parked operations, which need
    /// [`PgStore::merge_parked`] and a rebuild.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Postgres cannot be reached.
    pub async fn insert_ops(&self, ops: &[LoggedOp]) -> Result<Vec<BoardId>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = ops.iter().map(|o| o.board.to_string()).collect();
        names.sort_unstable();
        names.dedup();
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        super::identity_check!(self.expected, &mut *tx);
        lock_boards(&mut tx, &names).await?;
        super::common::new_lives!(&mut *tx, ops);
        // Boards with parked operations: none of theirs is stored at the number Redis gave it.
        let diverged: HashSet<String> =
            sqlx::query_scalar("SELECT DISTINCT board FROM rankd_parked WHERE board = ANY($1)")
                .bind(&names)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?
                .into_iter()
                .collect();
        let plain: Vec<&LoggedOp> = ops
            .iter()
            .filter(|o| !diverged.contains(o.board.as_str()))
            .collect();
        let inserted = insert_rows(&mut tx, false, &plain).await?;
        // What the store holds wherever this commit did not write: the same operation offered
        // again, or another one (Redis numbered it again).
        let probe: Vec<&LoggedOp> = ops
            .iter()
            .filter(|o| {
                diverged.contains(o.board.as_str())
                    || !inserted.contains(&(o.board.to_string(), o.seq))
            })
            .collect();
        let (pb, ps): (Vec<String>, Vec<i64>) = probe
            .iter()
            .map(|o| (o.board.to_string(), o.seq as i64))
            .unzip();
        let mut stored = HashMap::new();
        if !probe.is_empty() {
            stored.extend(
                idents_at(
                    &mut tx,
                    "SELECT o.board, o.seq, o.op, o.recv_ms, o.member, o.extra FROM rankd_ops o
                     JOIN UNNEST($1::text[], $2::bigint[]) AS t(b, s) ON o.board = t.b AND o.seq = t.s",
                    &pb,
                    &ps,
                )
                .await?,
            );
        }
        let mut merged: HashMap<_, Vec<_>> = HashMap::new();
        if !stored.is_empty() {
            let found = idents_at(
                &mut tx,
                "SELECT o.board, o.redis_seq, o.op, o.recv_ms, o.member, o.extra FROM rankd_ops o
                 JOIN UNNEST($1::text[], $2::bigint[]) AS t(b, s) ON o.board = t.b AND o.redis_seq = t.s
                 WHERE o.redis_seq IS NOT NULL",
                &pb,
                &ps,
            )
            .await?;
            for (at, ident) in found {
                merged.entry(at).or_default().push(ident);
            }
        }
        let d = super::diverging(ops, &inserted, &stored, &merged, &diverged);
        if !d.unstore.is_empty() {
            let (ub, us): (Vec<String>, Vec<i64>) = d
                .unstore
                .iter()
                .map(|(b, s)| (b.to_string(), *s as i64))
                .unzip();
            sqlx::query(
                "DELETE FROM rankd_ops o USING UNNEST($1::text[], $2::bigint[]) AS t(b, s)
                 WHERE o.board = t.b AND o.seq = t.s",
            )
            .bind(&ub)
            .bind(&us)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        if !d.park.is_empty() {
            insert_rows(&mut tx, true, &d.park).await?;
        }
        // The board row follows its latest definition stored at its own number (a parked one
        // takes over when it is merged).
        super::common::upsert_boards!(UPSERT_BOARD, &mut *tx, ops, &d.park, &diverged);
        tx.commit().await.map_err(unavailable)?;
        Ok(d.boards)
    }

    /// Appends `board`'s parked operations after its stored log, in the order Redis numbered them,
    /// in one transaction; snapshots taken from Redis once its numbering diverged stop being
    /// rebuild bases. Returns how many it appended.
    ///
    /// # Errors
    /// [`Error::Unavailable`]; also when another instance appends at the same time (the rows'
    /// keys collide and nothing is written: the next check merges).
    pub async fn merge_parked(&self, board: &BoardId) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        lock_boards(&mut tx, &[board.to_string()]).await?;
        // One statement: rows parked after it began stay parked for the next merge.
        let (from, moved): (Option<i64>, i64) = sqlx::query_as(
            "WITH moved AS (DELETE FROM rankd_parked WHERE board = $1 RETURNING *),
                  top AS (SELECT COALESCE(MAX(seq), 0) AS top FROM rankd_ops WHERE board = $1),
                  ins AS (
                    INSERT INTO rankd_ops (board, seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra, redis_seq)
                    SELECT m.board, top.top + row_number() OVER (ORDER BY m.redis_seq, m.recv_ms),
                           m.op, m.recv_ms, m.member, m.value, m.event_id, m.at_ms, m.scopes, m.payload, m.extra,
                           m.redis_seq
                    FROM moved m CROSS JOIN top
                    RETURNING seq)
             SELECT (SELECT min(redis_seq) FROM moved), (SELECT count(*) FROM ins)",
        )
        .bind(board.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let Some(from) = from {
            sqlx::query(MERGED_SNAPSHOTS)
                .bind(board.as_str())
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            sqlx::query(
                "UPDATE rankd_boards SET definition = d.payload, version = d.extra, updated_at = now()
                 FROM (SELECT payload, extra FROM rankd_ops WHERE board = $1 AND op = 'd'
                       ORDER BY seq DESC LIMIT 1) AS d
                 WHERE rankd_boards.board = $1",
            )
            .bind(board.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(moved as u64)
    }

    /// Marks a board deleted (the deletion is then durable), before its Redis keys go.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn tombstone(&self, board: &BoardId) -> Result<()> {
        sqlx::query("UPDATE rankd_boards SET deleted = TRUE, updated_at = now() WHERE board = $1")
            .bind(board.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Removes a deleted board's rows.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn purge(&self, board: &BoardId) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        super::common::execute_each!(&mut *tx, PURGE, board.as_str());
        tx.commit().await.map_err(unavailable)
    }

    /// See [`super::Store::mark_base`].
    async fn mark_base(&self, board: &BoardId, run: i64) -> Result<()> {
        super::common::execute_one!(&self.pool, super::sql::MARK_BASE, board.as_str(), run)
    }

    /// See [`super::Store::try_lease`].
    async fn try_lease(&self, name: &str, holder: &str, ms: i64) -> Result<bool> {
        let now = chrono::Utc::now().timestamp_millis();
        super::common::try_lease!(&self.pool, name, holder, now, ms)
    }

    /// See [`super::Store::release_lease`].
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        super::common::execute_one!(&self.pool, super::sql::RELEASE_LEASE, name, holder)
    }

    /// See [`super::Store::describe`].
    async fn describe(&self) -> Result<Vec<String>> {
        let mut out = vec!["store: Postgres".to_owned()];
        for table in [
            "rankd_ops",
            "rankd_boards",
            "rankd_snapshots",
            "rankd_snapshot_entries",
        ] {
            let (total, idx): (i64, i64) = sqlx::query_as(
                "SELECT pg_total_relation_size($1::regclass), pg_indexes_size($1::regclass)",
            )
            .bind(table)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
            out.push(format!(
                "table {table}: {total} bytes, of which indexes {idx} bytes"
            ));
        }
        for (what, sql) in super::HISTORY_QUERIES {
            let plan = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            out.push(format!("plan of {what}:"));
            out.extend(plan.iter().map(|r| format!("  {}", r.get::<String, _>(0))));
        }
        Ok(out)
    }
}

/// Entries read back from the store for a restore.
const ENTRY_CHUNK: usize = 5_000;

/// Reads a snapshot's entries (member, stored score) in a task of its own, so that they are written
/// to Redis while the rest is still being read. COPY TO STDOUT streams them at the rate Postgres
/// reads them, with none of a query's per-row decoding.
fn stream_entries(pool: sqlx::PgPool, id: i64) -> crate::engine::EntryChunks {
    use futures::TryStreamExt;
    use sqlx::postgres::PgPoolCopyExt;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        // `id` is an integer: nothing to quote.
        let sql = format!(
            "COPY (SELECT member, COALESCE(stored, score) FROM rankd_snapshot_entries
                   WHERE snapshot_id = {id}) TO STDOUT"
        );
        let mut data = match pool.copy_out_raw(&sql).await {
            Ok(d) => d,
            Err(e) => {
                let _ = tx.send(Err(unavailable(e))).await;
                return;
            }
        };
        let mut lines = CopyLines::default();
        loop {
            let bytes = match data.try_next().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(unavailable(e))).await;
                    return;
                }
            };
            match lines.push(&bytes) {
                Ok(()) if lines.rows.len() >= ENTRY_CHUNK => {
                    if tx.send(Ok(std::mem::take(&mut lines.rows))).await.is_err() {
                        return;
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        if !lines.partial.is_empty() {
            let _ = tx
                .send(Err(Error::Backend(format!(
                    "snapshot {id}: COPY ended inside a row"
                ))))
                .await;
            return;
        }
        if !lines.rows.is_empty() {
            let _ = tx.send(Ok(lines.rows)).await;
        }
    });
    rx
}

/// (member, score) rows of COPY text, from data that may split a row anywhere.
#[derive(Default)]
struct CopyLines {
    partial: Vec<u8>,
    rows: Vec<(String, f64)>,
}

impl CopyLines {
    fn push(&mut self, mut data: &[u8]) -> Result<()> {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.rows.push(copy_row(&data[..end])?);
            } else {
                self.partial.extend_from_slice(&data[..end]);
                let line = std::mem::take(&mut self.partial);
                self.rows.push(copy_row(&line)?);
            }
            data = &data[end + 1..];
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }
}

/// One `member<TAB>score` line of COPY text, with COPY's backslash escapes undone.
fn copy_row(line: &[u8]) -> Result<(String, f64)> {
    let bad = || {
        Error::Backend(format!(
            "unexpected snapshot row: {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let tab = line.iter().rposition(|&b| b == b'\t').ok_or_else(bad)?;
    let (member, score) = (&line[..tab], &line[tab + 1..]);
    let score: f64 = std::str::from_utf8(score)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let member = if member.contains(&b'\\') {
        let mut out = Vec::with_capacity(member.len());
        let mut it = member.iter();
        while let Some(&b) = it.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            out.push(match it.next().ok_or_else(bad)? {
                b't' => b'\t',
                b'n' => b'\n',
                b'r' => b'\r',
                b'b' => 8,
                b'f' => 12,
                b'v' => 11,
                &other => other,
            });
        }
        String::from_utf8(out).map_err(|_| bad())?
    } else {
        std::str::from_utf8(member).map_err(|_| bad())?.to_owned()
    };
    Ok((member, score))
}

fn row_to_op(board: &BoardId, r: &sqlx::postgres::PgRow) -> Result<LoggedOp> {
    super::common::row_to_op(board, r, r.get("scopes"))
}

super::common::sql_store!(PgStore, "./migrations/postgres", {
    async fn snapshot_streamed(
        &self,
        engine: &crate::engine::Engine,
        board: &BoardId,
    ) -> Result<Option<super::Written>> {
        PgStore::snapshot_streamed(self, engine, board).await
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_rows_are_read_across_any_split_with_escapes_undone() {
        let text = b"u1\t10\nback\\\\slash\\ttab\t-0\nbig\t1e+21\n".to_vec();
        for split in 0..text.len() {
            let mut lines = CopyLines::default();
            lines.push(&text[..split]).unwrap();
            lines.push(&text[split..]).unwrap();
            assert!(lines.partial.is_empty());
            assert_eq!(
                lines.rows,
                vec![
                    ("u1".to_owned(), 10.0),
                    ("back\\slash\ttab".to_owned(), -0.0),
                    ("big".to_owned(), 1e21),
                ],
                "split at {split}"
            );
        }
        assert!(copy_row(b"no tab").is_err());
        assert!(copy_row(b"m\tnot-a-number").is_err());
    }
}
