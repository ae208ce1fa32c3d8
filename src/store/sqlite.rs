//! SQLite through sqlx: the embedded engine's durable store, a file in the data directory.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::sql::{BOARD_SEQ, LIVE_BOARDS};
use crate::board::BoardId;
use crate::engine::{KeySnapshot, LoggedOp};
use crate::error::{Error, Result};

/// The SQLite store.
///
/// SQLite lets one connection write at a time, and a connection that finds the write lock taken
/// waits only for its busy timeout, then fails with "database is locked". Every writer of this
/// process (the persister's group commits, the sweep, merges, snapshots) therefore queues for
/// [`SqliteStore::write`]'s gate first, in arrival order, and SQLite's own lock is never contended:
/// a busy store makes writers wait, it never fails them.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file.
    file: std::path::PathBuf,
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// When a write last moved (see [`super::Store::progress_ms`]): a writer took the gate, or a
    /// statement of the operations' inserts finished.
    progress: std::sync::Arc<std::sync::atomic::AtomicI64>,
    expected: super::identity::Expected,
}

/// The store's file in its data directory.
pub const FILE: &str = "rankd.sqlite3";

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(format!("store: {e}"))
}

/// Snapshot entries per INSERT (five parameters each, well under SQLite's limit).
const ENTRY_ROWS: usize = 1_000;

/// Inserts or updates board `?1`'s row with definition `?2` of version `?3`, stored at sequence
/// number `?4`, unless a later definition is stored.
const UPSERT_BOARD: &str =
    "INSERT INTO rankd_boards (board, definition, version) VALUES (?1, ?2, ?3)
     ON CONFLICT (board) DO UPDATE SET definition = excluded.definition, version = excluded.version,
         deleted = 0, updated_at = unixepoch()
     WHERE NOT EXISTS (SELECT 1 FROM rankd_ops WHERE board = ?1 AND op = 'd' AND seq > ?4)";

/// What [`SqliteStore::purge`] deletes of a deleted board `?1`, in order: its parked and stored
/// operations, and its snapshots (their entries by cascade), so that a board created again under
/// the same name starts without history, and never restores another board's snapshot. Then its
/// board row.
const PURGE: [&str; 4] = [
    "DELETE FROM rankd_parked WHERE board = ?1 AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = ?1 AND deleted = 0)",
    "DELETE FROM rankd_ops WHERE board = ?1 AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = ?1 AND deleted = 0)",
    "DELETE FROM rankd_snapshots WHERE board = ?1 AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = ?1 AND deleted = 0)",
    "DELETE FROM rankd_boards WHERE board = ?1 AND deleted = 1",
];

/// Entries sent at a time while a restore reads them.
const ENTRY_CHUNK: usize = 5_000;

fn row_to_op(board: &BoardId, r: &sqlx::sqlite::SqliteRow) -> Result<LoggedOp> {
    // Scopes are kept space-joined (scopes never contain spaces).
    let scopes = r.get::<Option<String>, _>("scopes").map(|s| {
        s.split(' ')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    });
    super::common::row_to_op(board, r, scopes)
}

/// Operations per INSERT: eleven parameters each, well under SQLite's 32,766.
const OP_ROWS: usize = 1_000;

/// Inserts operations into rankd_ops, or into rankd_parked (`parked`) with the numbers Redis gave
/// them, many rows per statement, skipping any whose key is taken; returns the (board, number) of
/// the rows written into rankd_ops (none for `parked`).
///
/// Which rows a statement will write is worked out before it runs, from one range look-up per board
/// on the primary key (empty in the common case: new operations come after the stored ones), rather
/// than by RETURNING, which would hand every written row back through the driver.
async fn insert_rows(
    parked: bool,
    tx: &mut sqlx::SqliteConnection,
    ops: &[&LoggedOp],
    progress: &std::sync::atomic::AtomicI64,
) -> Result<HashSet<(String, u64)>> {
    let mut written = HashSet::with_capacity(ops.len());
    if ops.is_empty() {
        return Ok(written);
    }
    let head = if parked {
        "INSERT INTO rankd_parked (board, redis_seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra) "
    } else {
        // Numbers already stored, per board: by one range look-up when the numbers offered are
        // close together (the usual run of new operations), else by the numbers themselves.
        let mut offered: HashMap<&str, Vec<u64>> = HashMap::new();
        for o in ops {
            offered.entry(o.board.as_str()).or_default().push(o.seq);
        }
        let mut taken: HashSet<(String, u64)> = HashSet::new();
        for (board, seqs) in offered {
            let (lo, hi) = seqs
                .iter()
                .fold((u64::MAX, 0), |(lo, hi), &s| (lo.min(s), hi.max(s)));
            let found: Vec<i64> = if hi - lo < 2 * seqs.len() as u64 + 1_000 {
                sqlx::query_scalar(
                    "SELECT seq FROM rankd_ops WHERE board = ? AND seq BETWEEN ? AND ?",
                )
                .bind(board)
                .bind(lo as i64)
                .bind(hi as i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?
            } else {
                let mut found = Vec::new();
                for part in seqs.chunks(OP_ROWS) {
                    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                        "SELECT seq FROM rankd_ops WHERE board = ",
                    );
                    q.push_bind(board).push(" AND seq IN (");
                    let mut list = q.separated(", ");
                    for &s in part {
                        list.push_bind(s as i64);
                    }
                    q.push(")");
                    found.extend(
                        q.build_query_scalar::<i64>()
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(unavailable)?,
                    );
                }
                found
            };
            taken.extend(found.into_iter().map(|s| (board.to_owned(), s as u64)));
        }
        for o in ops {
            let key = (o.board.to_string(), o.seq);
            if !taken.contains(&key) {
                // The first of two offers of one number is the one written.
                written.insert(key.clone());
                taken.insert(key);
            }
        }
        "INSERT INTO rankd_ops (board, seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra) "
    };
    let mut rows = 0;
    for part in ops.chunks(OP_ROWS) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(head);
        q.push_values(part, |mut b, o| {
            let row = super::OpRow::from_op(&o.op);
            b.push_bind(o.board.as_str())
                .push_bind(o.seq as i64)
                .push_bind(row.kind)
                .push_bind(o.recv_ms)
                .push_bind(row.member)
                .push_bind(row.value)
                .push_bind(row.event_id)
                .push_bind(row.at_ms)
                .push_bind(row.scopes.map(|s| s.join(" ")))
                .push_bind(row.payload)
                .push_bind(row.extra);
        });
        q.push(" ON CONFLICT DO NOTHING");
        rows += q
            .build()
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
        moved(progress);
    }
    if !parked && rows != written.len() as u64 {
        return Err(Error::Backend(format!(
            "store: {rows} operations written where {} were expected",
            written.len()
        )));
    }
    Ok(written)
}

/// Records that a write moved now.
fn moved(progress: &std::sync::atomic::AtomicI64) {
    progress.store(
        chrono::Utc::now().timestamp_millis(),
        std::sync::atomic::Ordering::Release,
    );
}

/// Reads a snapshot's entries (member, stored score) in a task of its own, so that they are written
/// back while the rest is still being read.
fn stream_entries(pool: SqlitePool, id: i64) -> crate::engine::EntryChunks {
    use futures::TryStreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let mut rows = sqlx::query_as::<_, (String, f64)>(
            "SELECT member, COALESCE(stored, score) FROM rankd_snapshot_entries WHERE snapshot_id = ?",
        )
        .bind(id)
        .fetch(&pool);
        let mut chunk = Vec::with_capacity(ENTRY_CHUNK);
        loop {
            match rows.try_next().await {
                Ok(Some(row)) => {
                    chunk.push(row);
                    if chunk.len() == ENTRY_CHUNK
                        && tx.send(Ok(std::mem::take(&mut chunk))).await.is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(unavailable(e))).await;
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(Ok(chunk)).await;
        }
    });
    rx
}

impl SqliteStore {
    /// Opens (creating it if needed) `rankd.sqlite3` in `dir`. Write-ahead logging with a full sync
    /// on commit: a committed operation survives a crash of the process or the machine.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the file cannot be opened.
    pub async fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Unavailable(format!("data_dir {}: {e}", dir.display())))?;
        let file = dir.join(FILE);
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))
            .map_err(unavailable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        // One writer at a time is SQLite's model; readers share the WAL.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            pool,
            file,
            gate: std::sync::Arc::default(),
            progress: std::sync::Arc::default(),
            expected: super::identity::Expected::default(),
        })
    }

    /// A write transaction, holding the write lock from the start (a deferred transaction that
    /// reads first fails at its first write when another connection wrote meanwhile), taken once
    /// this process's earlier writers are done.
    async fn write(
        &self,
    ) -> Result<(
        tokio::sync::MutexGuard<'_, ()>,
        sqlx::Transaction<'static, sqlx::Sqlite>,
    )> {
        let gate = self.gate.lock().await;
        moved(&self.progress);
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        Ok((gate, tx))
    }
}

super::common::sql_store!(SqliteStore, "./migrations/sqlite", {
    fn single_server(&self) -> bool {
        true
    }

    fn progress_ms(&self) -> i64 {
        self.progress.load(std::sync::atomic::Ordering::Acquire)
    }
});

impl SqliteStore {
    async fn migrate(&self) -> Result<()> {
        let _gate = self.gate.lock().await;
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| Error::Backend(format!("migrations: {e}")))
    }

    async fn insert_ops(&self, ops: &[LoggedOp]) -> Result<Vec<BoardId>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (_gate, mut tx) = self.write().await?;
        super::identity_check!(self.expected, &mut *tx);
        // A new life of the board, unless this very definition (by its unique version) is offered
        // again: see PgStore::insert_ops.
        super::common::new_lives!(&mut *tx, ops);
        // Boards with parked operations: none of theirs is stored at the number Redis gave it.
        let mut diverged = HashSet::new();
        let names: HashSet<&str> = ops.iter().map(|o| o.board.as_str()).collect();
        for name in names {
            if sqlx::query("SELECT 1 FROM rankd_parked WHERE board = ? LIMIT 1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?
                .is_some()
            {
                diverged.insert(name.to_owned());
            }
        }
        let plain: Vec<&LoggedOp> = ops
            .iter()
            .filter(|o| !diverged.contains(o.board.as_str()))
            .collect();
        let inserted = insert_rows(false, &mut tx, &plain, &self.progress).await?;
        // What the store holds wherever this commit did not write: the same operation offered
        // again, or another one (Redis numbered it again). Rare: one look-up each.
        let mut stored = HashMap::new();
        let mut merged = HashMap::new();
        for o in ops {
            let key = (o.board.to_string(), o.seq);
            if inserted.contains(&key) {
                continue;
            }
            let row: Option<(String, i64, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT op, recv_ms, member, extra FROM rankd_ops WHERE board = ? AND seq = ?",
            )
            .bind(o.board.as_str())
            .bind(o.seq as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            let Some((kind, recv, member, extra)) = row else {
                continue;
            };
            stored.insert(
                key.clone(),
                super::Ident::stored(&kind, recv, member, extra),
            );
            let rows: Vec<(String, i64, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT op, recv_ms, member, extra FROM rankd_ops WHERE board = ? AND redis_seq = ?",
            )
            .bind(o.board.as_str())
            .bind(o.seq as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            merged.insert(
                key,
                rows.into_iter()
                    .map(|(kind, recv, member, extra)| {
                        super::Ident::stored(&kind, recv, member, extra)
                    })
                    .collect(),
            );
        }
        let d = super::diverging(ops, &inserted, &stored, &merged, &diverged);
        for (board, seq) in &d.unstore {
            sqlx::query("DELETE FROM rankd_ops WHERE board = ? AND seq = ?")
                .bind(board.as_str())
                .bind(*seq as i64)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        insert_rows(true, &mut tx, &d.park, &self.progress).await?;
        // The board row follows its latest definition stored at its own number.
        super::common::upsert_boards!(UPSERT_BOARD, &mut *tx, ops, &d.park, &diverged);
        tx.commit().await.map_err(unavailable)?;
        Ok(d.boards)
    }

    async fn merge_parked(&self, board: &BoardId) -> Result<u64> {
        // Nothing parks while this runs.
        let (_gate, mut tx) = self.write().await?;
        let from: Option<i64> =
            sqlx::query_scalar("SELECT min(redis_seq) FROM rankd_parked WHERE board = ?")
                .bind(board.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        let Some(from) = from else {
            return Ok(0);
        };
        let moved = sqlx::query(
            "INSERT INTO rankd_ops (board, seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra, redis_seq)
             SELECT m.board,
                    (SELECT COALESCE(MAX(seq), 0) FROM rankd_ops WHERE board = ?1)
                      + row_number() OVER (ORDER BY m.redis_seq, m.recv_ms),
                    m.op, m.recv_ms, m.member, m.value, m.event_id, m.at_ms, m.scopes, m.payload, m.extra,
                    m.redis_seq
             FROM rankd_parked m WHERE m.board = ?1",
        )
        .bind(board.as_str())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        super::common::execute_each!(
            &mut *tx,
            [
                "DELETE FROM rankd_parked WHERE board = ?1",
                "UPDATE rankd_snapshots SET run_id = NULL, base = FALSE
                 WHERE board = ?1 AND seq >= ?2 AND run_id IS NOT NULL",
                "UPDATE rankd_boards SET definition = d.payload, version = d.extra, updated_at = unixepoch()
                 FROM (SELECT payload, extra FROM rankd_ops WHERE board = ?1 AND op = 'd'
                       ORDER BY seq DESC LIMIT 1) AS d
                 WHERE rankd_boards.board = ?1",
            ],
            board.as_str(),
            from
        );
        tx.commit().await.map_err(unavailable)?;
        Ok(moved)
    }

    async fn tombstone(&self, board: &BoardId) -> Result<()> {
        let (_gate, mut tx) = self.write().await?;
        sqlx::query(
            "UPDATE rankd_boards SET deleted = 1, updated_at = unixepoch() WHERE board = ?",
        )
        .bind(board.as_str())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn purge(&self, board: &BoardId) -> Result<()> {
        let (_gate, mut tx) = self.write().await?;
        super::common::execute_each!(&mut *tx, PURGE, board.as_str());
        tx.commit().await.map_err(unavailable)
    }

    async fn mark_base(&self, board: &BoardId, run: i64) -> Result<()> {
        let (_gate, mut tx) = self.write().await?;
        super::common::execute_one!(&mut *tx, super::sql::MARK_BASE, board.as_str(), run)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn write_snapshots(&self, board: &BoardId, keys: &[KeySnapshot]) -> Result<Option<i64>> {
        let (_gate, mut tx) = self.write().await?;
        // The run is named after its first snapshot row.
        let mut run: Option<i64> = None;
        for snap in keys {
            let id = super::insert_key_row!(
                "INSERT INTO rankd_snapshots
                   (id, board, window_name, period, scope, seq, members, run_id, version, expire_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                &mut *tx,
                None::<i64>,
                board,
                &snap.key,
                run
            )?;
            if run.is_none() {
                run = Some(id);
                sqlx::query("UPDATE rankd_snapshots SET run_id = ?1 WHERE id = ?1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            // Many rows per statement: a statement per row is most of the cost otherwise.
            for part in snap.entries.chunks(ENTRY_ROWS) {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO rankd_snapshot_entries (snapshot_id, rank, member, score, stored) ",
                );
                q.push_values(part, |mut row, e| {
                    row.push_bind(id)
                        .push_bind(e.rank as i64)
                        .push_bind(&e.member)
                        .push_bind(e.score)
                        .push_bind((e.stored != e.score).then_some(e.stored));
                });
                q.build().execute(&mut *tx).await.map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(run)
    }

    async fn prune_snapshots(&self, keep_days: u32) -> Result<u64> {
        let (_gate, mut tx) = self.write().await?;
        let r = sqlx::query("DELETE FROM rankd_snapshots WHERE taken_at < unixepoch() - ? * 86400")
            .bind(i64::from(keep_days))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(r.rows_affected())
    }

    async fn last_snapshot_age_secs(&self) -> Result<Option<i64>> {
        let (age,): (Option<i64>,) =
            sqlx::query_as("SELECT unixepoch() - max(taken_at) FROM rankd_snapshots")
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(age)
    }

    async fn try_lease(&self, name: &str, holder: &str, ms: i64) -> Result<bool> {
        // `rankd admin` opens the file beside the server that owns it: the lease is a row, as in
        // Postgres.
        let now = chrono::Utc::now().timestamp_millis();
        let (_gate, mut tx) = self.write().await?;
        let claimed = super::common::try_lease!(&mut *tx, name, holder, now, ms)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(claimed)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (_gate, mut tx) = self.write().await?;
        super::common::execute_one!(&mut *tx, super::sql::RELEASE_LEASE, name, holder)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn describe(&self) -> Result<Vec<String>> {
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = self.file.with_extension("sqlite3-wal");
        let mut out = vec![format!(
            "store: SQLite, {} ({} bytes, and {} bytes of write-ahead log)",
            self.file.display(),
            size(&self.file),
            size(&wal)
        )];
        for table in [
            "rankd_ops",
            "rankd_boards",
            "rankd_snapshots",
            "rankd_snapshot_entries",
        ] {
            let (rows,): (i64,) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)?;
            out.push(format!("table {table}: {rows} rows"));
        }
        for (what, sql) in super::HISTORY_QUERIES {
            let plan = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            out.push(format!("plan of {what}:"));
            out.extend(
                plan.iter()
                    .map(|r| format!("  {}", r.get::<String, _>("detail"))),
            );
        }
        Ok(out)
    }
}
