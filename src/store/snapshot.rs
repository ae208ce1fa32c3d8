//! Snapshots: every key's standing, copied into Postgres for history and trends.

use std::fmt::Write;
use std::time::Instant;

use sqlx::postgres::PgPoolCopyExt;

use super::postgres::PgStore;
use super::Store;
use crate::board::BoardId;
use crate::engine::{Engine, KeySnapshot, SnapEntry};
use crate::error::{Error, Result};

/// What one snapshot run wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Keys snapshotted.
    pub keys: usize,
    /// Entries written.
    pub entries: usize,
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(format!("store: {e}"))
}

/// Bytes of COPY data sent at a time.
const COPY_BUFFER: usize = 256 * 1024;

/// COPY text format: backslash, tab, newline and carriage return escaped.
fn copy_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

impl PgStore {
    /// Writes a snapshot run of one board: a row per key, then every key's entries through one
    /// COPY, in one transaction (a run is whole or absent, so a rebuild can start from it).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn write_snapshots(&self, board: &BoardId, keys: &[KeySnapshot]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        let (run,): (i64,) =
            sqlx::query_as("SELECT nextval(pg_get_serial_sequence('rankd_snapshots', 'id'))")
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        let mut ids = Vec::with_capacity(keys.len());
        for snap in keys {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO rankd_snapshots
                   (board, window_name, period, scope, seq, members, run_id, version, expire_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(board.as_str())
            .bind(snap.window.as_str())
            .bind(&snap.period)
            .bind(snap.scope.as_deref().unwrap_or(""))
            .bind(snap.seq as i64)
            .bind(snap.entries.len() as i64)
            .bind(run)
            .bind(&snap.version)
            .bind(snap.expire_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
            ids.push(id.to_string());
        }
        let mut copy = tx
            .copy_in_raw(
                "COPY rankd_snapshot_entries (snapshot_id, rank, member, score, stored) FROM STDIN",
            )
            .await
            .map_err(unavailable)?;
        let mut buf = String::with_capacity(COPY_BUFFER + 1024);
        for (snap, id) in keys.iter().zip(&ids) {
            for e in &snap.entries {
                // Written straight into the buffer: no allocation per row.
                let _ = write!(buf, "{id}\t{}\t", e.rank);
                copy_text(&mut buf, &e.member);
                // `stored` only where it differs from the score: boards that break ties by time.
                if e.stored == e.score {
                    let _ = writeln!(buf, "\t{:?}\t\\N", e.score);
                } else {
                    let _ = writeln!(buf, "\t{:?}\t{:?}", e.score, e.stored);
                }
                if buf.len() > COPY_BUFFER {
                    copy.send(buf.as_bytes()).await.map_err(unavailable)?;
                    buf.clear();
                }
            }
        }
        if !buf.is_empty() {
            copy.send(buf.as_bytes()).await.map_err(unavailable)?;
        }
        copy.finish().await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    /// Deletes snapshots taken more than `keep_days` days ago.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn prune_snapshots(&self, keep_days: u32) -> Result<u64> {
        // Entries first, in the same transaction: they hold no foreign key (see migrations/).
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        sqlx::query(
            "DELETE FROM rankd_snapshot_entries WHERE snapshot_id IN
               (SELECT id FROM rankd_snapshots WHERE taken_at < now() - make_interval(days => $1))",
        )
        .bind(keep_days as i32)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let r = sqlx::query(
            "DELETE FROM rankd_snapshots WHERE taken_at < now() - make_interval(days => $1)",
        )
        .bind(keep_days as i32)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(r.rows_affected())
    }

    /// A raw COPY of rows shaped like snapshot entries, for the benchmark's twin.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn raw_copy(&self, table: &str, rows: &[SnapEntry]) -> Result<u64> {
        let mut copy = self
            .pool()
            .copy_in_raw(&format!(
                "COPY {table} (snapshot_id, rank, member, score) FROM STDIN"
            ))
            .await
            .map_err(unavailable)?;
        let mut buf = String::new();
        for e in rows {
            let _ = write!(buf, "0\t{}\t", e.rank);
            copy_text(&mut buf, &e.member);
            let _ = writeln!(buf, "\t{:?}", e.score);
            if buf.len() > COPY_BUFFER {
                copy.send(buf.as_bytes()).await.map_err(unavailable)?;
                buf.clear();
            }
        }
        copy.send(buf.as_bytes()).await.map_err(unavailable)?;
        copy.finish().await.map_err(unavailable)
    }
}

/// Snapshots every key of `board` (or of every board).
///
/// # Errors
/// When Redis or Postgres cannot be reached.
pub async fn snapshot(
    engine: &Engine,
    store: &dyn Store,
    board: Option<&BoardId>,
) -> Result<SnapshotReport> {
    let boards = match board {
        Some(b) => vec![b.clone()],
        None => engine
            .boards()
            .await?
            .into_iter()
            .map(|b| b.board)
            .collect(),
    };
    let mut report = SnapshotReport::default();
    for b in boards {
        let started = Instant::now();
        let keys = engine.snapshot_board(&b).await?;
        store.write_snapshots(&b, &keys).await?;
        report.keys += keys.len();
        report.entries += keys.iter().map(|k| k.entries.len()).sum::<usize>();
        tracing::info!(board = %b, keys = keys.len(), ms = started.elapsed().as_millis() as u64, "snapshot taken");
    }
    Ok(report)
}

/// A periodic snapshot, taken by whichever instance holds the snapshot lease.
///
/// # Errors
/// When Redis or the store cannot be reached.
pub async fn periodic(
    engine: &Engine,
    store: &dyn Store,
    holder: &str,
    keep_days: u32,
) -> Result<Option<SnapshotReport>> {
    // The lease outlives one run comfortably; the holder renews it at its next run.
    if !store.try_lease("snapshots", holder, 30 * 60 * 1000).await? {
        return Ok(None);
    }
    let r = snapshot(engine, store, None).await?;
    store.prune_snapshots(keep_days).await?;
    Ok(Some(r))
}
