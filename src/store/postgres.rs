//! Postgres through sqlx: migrations, the operation log and board rows.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use crate::board::BoardId;
use crate::engine::{LoggedOp, Op};
use crate::error::{Error, Result};

/// The Postgres store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(format!("store: {e}"))
}

impl PgStore {
    /// Connects (the URL must name its user: `postgres://user@host:port/db`). Connections are
    /// acquired with a short timeout so that writes fail fast while Postgres is down.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `database_url` when Postgres refuses the login or lacks the
    /// database, [`Error::Unavailable`] when Postgres cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(|e| match &e {
                // A refused login or a database that does not exist will not mend by waiting.
                sqlx::Error::Database(d)
                    if d.code()
                        .is_some_and(|c| c.starts_with("28") || c == "3D000") =>
                {
                    Error::Invalid(crate::error::Invalid::new("database_url", e.to_string()))
                }
                _ => unavailable(e),
            })?;
        Ok(Self { pool })
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
    /// # Errors
    /// [`Error::Unavailable`] when Postgres cannot be reached.
    pub async fn insert_ops(&self, ops: &[LoggedOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for (board, version) in ops.iter().filter_map(|o| match &o.op {
            Op::Define { version, .. } if o.seq == 1 => Some((&o.board, version)),
            _ => None,
        }) {
            sqlx::query(
                "DELETE FROM rankd_ops WHERE board = $1 AND NOT EXISTS (
                     SELECT 1 FROM rankd_ops WHERE board = $1 AND seq = 1 AND op = 'd' AND extra = $2)",
            )
            .bind(board.as_str())
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        let n = ops.len();
        let mut board = Vec::with_capacity(n);
        let mut seq = Vec::with_capacity(n);
        let mut kind = Vec::with_capacity(n);
        let mut recv = Vec::with_capacity(n);
        let mut member: Vec<Option<String>> = Vec::with_capacity(n);
        let mut value: Vec<Option<f64>> = Vec::with_capacity(n);
        let mut event_id: Vec<Option<String>> = Vec::with_capacity(n);
        let mut at: Vec<Option<i64>> = Vec::with_capacity(n);
        let mut scopes: Vec<Option<String>> = Vec::with_capacity(n);
        let mut payload: Vec<Option<String>> = Vec::with_capacity(n);
        let mut extra: Vec<Option<String>> = Vec::with_capacity(n);
        for o in ops {
            board.push(o.board.to_string());
            seq.push(o.seq as i64);
            recv.push(o.recv_ms);
            let row = super::OpRow::from_op(&o.op);
            let (k, m, v, e, a, s, p, x) = (
                row.kind,
                row.member,
                row.value,
                row.event_id,
                row.at_ms,
                row.scopes.map(|s| s.join(" ")),
                row.payload,
                row.extra,
            );
            kind.push(k);
            member.push(m);
            value.push(v);
            event_id.push(e);
            at.push(a);
            scopes.push(s);
            payload.push(p);
            extra.push(x);
        }
        // One statement for the whole group: arrays unnested into rows. Scopes travel space-joined
        // (scopes never contain spaces) because Postgres has no ragged arrays.
        sqlx::query(
            "INSERT INTO rankd_ops (board, seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra)
             SELECT b, s, o, r, m, v, e, a,
                    CASE WHEN c IS NULL THEN NULL WHEN c = '' THEN '{}'::text[] ELSE string_to_array(c, ' ') END,
                    p, x
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::float8[], $7::text[],
                         $8::bigint[], $9::text[], $10::text[], $11::text[])
                  AS t(b, s, o, r, m, v, e, a, c, p, x)
             ON CONFLICT (board, seq) DO NOTHING",
        )
        .bind(&board)
        .bind(&seq)
        .bind(&kind)
        .bind(&recv)
        .bind(&member)
        .bind(&value)
        .bind(&event_id)
        .bind(&at)
        .bind(&scopes)
        .bind(&payload)
        .bind(&extra)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        // The board row follows its latest definition.
        for o in ops {
            if let Op::Define { version, json } = &o.op {
                sqlx::query(
                    "INSERT INTO rankd_boards (board, definition, version) VALUES ($1, $2, $3)
                     ON CONFLICT (board) DO UPDATE SET definition = EXCLUDED.definition, version = EXCLUDED.version,
                         deleted = FALSE, updated_at = now()
                     WHERE NOT EXISTS (SELECT 1 FROM rankd_ops WHERE board = $1 AND op = 'd' AND seq > $4)",
                )
                .bind(o.board.as_str())
                .bind(json)
                .bind(version)
                .bind(o.seq as i64)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)
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
        sqlx::query("DELETE FROM rankd_ops WHERE board = $1 AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = $1 AND NOT deleted)")
            .bind(board.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // Its snapshots go too: a board created again under the same name starts without history,
        // and a rebuild can never start from the snapshot of another board.
        sqlx::query(
            "DELETE FROM rankd_snapshot_entries WHERE snapshot_id IN (SELECT id FROM rankd_snapshots
               WHERE board = $1 AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = $1 AND NOT deleted))",
        )
        .bind(board.as_str())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(
            "DELETE FROM rankd_snapshots WHERE board = $1
               AND NOT EXISTS (SELECT 1 FROM rankd_boards WHERE board = $1 AND NOT deleted)",
        )
        .bind(board.as_str())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query("DELETE FROM rankd_boards WHERE board = $1 AND deleted")
            .bind(board.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    /// Live boards (not deleted) with their highest stored sequence number.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn boards(&self) -> Result<Vec<(BoardId, u64)>> {
        let rows = sqlx::query_as(super::sql::LIVE_BOARDS)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        super::live_boards(rows)
    }

    /// Deleted boards whose deletion may not have reached Redis yet.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn tombstones(&self) -> Result<Vec<BoardId>> {
        let rows = sqlx::query_as(super::sql::TOMBSTONES)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(super::tombstones(rows))
    }

    /// Whether the store holds a live board of this id.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn has_board(&self, board: &BoardId) -> Result<bool> {
        let row = sqlx::query(super::sql::HAS_BOARD)
            .bind(board.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.is_some())
    }

    /// A board's operations in order.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Backend`] for a row that does not parse.
    pub async fn ops(&self, board: &BoardId) -> Result<Vec<LoggedOp>> {
        self.ops_after(board, 0).await
    }

    /// A board's operations after `seq`, in order.
    ///
    /// # Errors
    /// [`Error::Unavailable`]; [`Error::Backend`] for a row that does not decode.
    pub async fn ops_after(&self, board: &BoardId, seq: u64) -> Result<Vec<LoggedOp>> {
        let rows = sqlx::query(super::sql::OPS_AFTER)
            .bind(board.as_str())
            .bind(seq as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(|r| row_to_op(board, r)).collect()
    }

    /// See [`super::Store::restore_base`].
    ///
    /// # Errors
    /// [`Error::Unavailable`]; [`Error::Backend`] for a row that does not decode.
    pub async fn restore_base(
        &self,
        board: &BoardId,
        upto: u64,
        dedupe_since: i64,
    ) -> Result<Option<crate::engine::Base>> {
        super::restore_base!(&self.pool, board, upto, dedupe_since)
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
    let row = super::OpRow {
        kind: r.get::<String, _>("op").trim().to_owned(),
        member: r.get("member"),
        value: r.get("value"),
        event_id: r.get("event_id"),
        at_ms: r.get("at_ms"),
        scopes: r.get("scopes"),
        payload: r.get("payload"),
        extra: r.get("extra"),
    };
    Ok(LoggedOp {
        board: board.clone(),
        seq: r.get::<i64, _>("seq") as u64,
        recv_ms: r.get("recv_ms"),
        op: row.into_op(board)?,
    })
}

#[async_trait::async_trait]
impl super::Store for PgStore {
    async fn migrate(&self) -> Result<()> {
        PgStore::migrate(self).await
    }
    async fn insert_ops(&self, ops: &[LoggedOp]) -> Result<()> {
        PgStore::insert_ops(self, ops).await
    }
    async fn tombstone(&self, board: &BoardId) -> Result<()> {
        PgStore::tombstone(self, board).await
    }
    async fn purge(&self, board: &BoardId) -> Result<()> {
        PgStore::purge(self, board).await
    }
    async fn boards(&self) -> Result<Vec<(BoardId, u64)>> {
        PgStore::boards(self).await
    }
    async fn tombstones(&self) -> Result<Vec<BoardId>> {
        PgStore::tombstones(self).await
    }
    async fn has_board(&self, board: &BoardId) -> Result<bool> {
        PgStore::has_board(self, board).await
    }
    async fn ops(&self, board: &BoardId) -> Result<Vec<LoggedOp>> {
        PgStore::ops(self, board).await
    }
    async fn write_snapshots(
        &self,
        board: &BoardId,
        keys: &[crate::engine::KeySnapshot],
    ) -> Result<()> {
        PgStore::write_snapshots(self, board, keys).await
    }
    async fn restore_base(
        &self,
        board: &BoardId,
        upto: u64,
        dedupe_since: i64,
    ) -> Result<Option<crate::engine::Base>> {
        PgStore::restore_base(self, board, upto, dedupe_since).await
    }
    async fn snapshot_streamed(
        &self,
        engine: &crate::engine::Engine,
        board: &BoardId,
    ) -> Result<Option<super::snapshot::SnapshotReport>> {
        PgStore::snapshot_streamed(self, engine, board).await
    }
    async fn ops_after(&self, board: &BoardId, seq: u64) -> Result<Vec<LoggedOp>> {
        PgStore::ops_after(self, board, seq).await
    }
    async fn prune_snapshots(&self, keep_days: u32) -> Result<u64> {
        PgStore::prune_snapshots(self, keep_days).await
    }
    async fn try_lease(&self, name: &str, holder: &str, ms: i64) -> Result<bool> {
        let now = chrono::Utc::now().timestamp_millis();
        let row = sqlx::query(
            "INSERT INTO rankd_leases (name, holder, until_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms
             WHERE rankd_leases.until_ms < $4 OR rankd_leases.holder = EXCLUDED.holder
             RETURNING 1",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.is_some())
    }
}

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
