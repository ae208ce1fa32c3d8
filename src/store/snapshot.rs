//! Snapshots: every key's standing, copied into Postgres for history and trends.

use std::fmt::Write;
use std::time::Instant;

use sqlx::postgres::PgPoolCopyExt;

use super::postgres::PgStore;
use super::Store;
use crate::board::BoardId;
use crate::engine::{Engine, KeySnapshot};
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
    /// Writes one key's snapshot: its row, then its entries through COPY, in one transaction.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn write_snapshot(&self, board: &BoardId, snap: &KeySnapshot) -> Result<()> {
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO rankd_snapshots (board, window_name, period, scope, seq, members)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(board.as_str())
        .bind(snap.window.as_str())
        .bind(&snap.period)
        .bind(snap.scope.as_deref().unwrap_or(""))
        .bind(snap.seq as i64)
        .bind(snap.entries.len() as i64)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut copy = tx
            .copy_in_raw(
                "COPY rankd_snapshot_entries (snapshot_id, rank, member, score) FROM STDIN",
            )
            .await
            .map_err(unavailable)?;
        let mut buf = String::with_capacity(64 * 1024);
        let id = id.to_string();
        for (rank, member, score) in &snap.entries {
            // Written straight into the buffer: no allocation per row.
            let _ = write!(buf, "{id}\t{rank}\t");
            copy_text(&mut buf, member);
            let _ = writeln!(buf, "\t{score:?}");
            if buf.len() > 60 * 1024 {
                copy.send(buf.as_bytes()).await.map_err(unavailable)?;
                buf.clear();
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
        let r = sqlx::query(
            "DELETE FROM rankd_snapshots WHERE taken_at < now() - make_interval(days => $1)",
        )
        .bind(keep_days as i32)
        .execute(self.pool())
        .await
        .map_err(unavailable)?;
        Ok(r.rows_affected())
    }

    /// A raw COPY of rows shaped like snapshot entries, for the benchmark's twin.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn raw_copy(&self, table: &str, rows: &[(u64, String, f64)]) -> Result<u64> {
        let mut copy = self
            .pool()
            .copy_in_raw(&format!("COPY {table} (rank, member, score) FROM STDIN"))
            .await
            .map_err(unavailable)?;
        let mut buf = String::new();
        for (rank, member, score) in rows {
            let _ = write!(buf, "{rank}\t");
            copy_text(&mut buf, member);
            let _ = writeln!(buf, "\t{score:?}");
            if buf.len() > 60 * 1024 {
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
        for k in &keys {
            store.write_snapshot(&b, k).await?;
            report.keys += 1;
            report.entries += k.entries.len();
        }
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
