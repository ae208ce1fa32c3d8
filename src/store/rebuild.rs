//! Finding boards Redis lost, and rebuilding them from the store.

use std::sync::Arc;

use super::Store;
use crate::board::BoardId;
use crate::engine::{Engine, RedisState};
use crate::error::Result;

/// What [`check`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Boards rebuilt.
    pub rebuilt: Vec<BoardId>,
    /// Deleted boards whose keys were still in Redis, now removed.
    pub finished_deletes: Vec<BoardId>,
}

/// Rebuilds one board from the store if Redis lost it (wholly, or some acknowledged operations).
/// Returns whether it rebuilt.
///
/// # Errors
/// When Redis or Postgres cannot be reached, or the stored log does not replay.
pub async fn rebuild(engine: &Engine, store: &dyn Store, board: &BoardId) -> Result<bool> {
    // Never from another store than the one Redis was built from (see super::identity).
    store.check_identity().await?;
    let Some(stored_seq) = store.board_seq(board).await? else {
        return Ok(false);
    };
    // Operations Redis numbered again after losing others (see super::diverging): Redis holds
    // a history the store does not, and the store one that Redis does not.
    let diverged = store.diverged(board).await?;
    match engine.redis_state(board).await? {
        RedisState::Live(seq) if seq >= stored_seq && !diverged => return Ok(false),
        RedisState::Live(seq) => {
            if diverged {
                tracing::warn!(%board, redis_seq = seq, stored_seq, "Redis numbered operations again after losing others; resynchronising");
            } else {
                tracing::warn!(%board, redis_seq = seq, stored_seq, "Redis lost acknowledged operations; rebuilding");
            }
            // Writes stop first (they answer 503 until the board is handed back). What its log
            // holds then is history too (writes answered before the store had them, or answered
            // 503 unconfirmed): stored, or the discard would lose it.
            let Some(seized) = engine.seize(board).await? else {
                return Ok(false);
            };
            engine
                .while_seized(board, &seized, save_log(engine, store, board))
                .await?;
            if !engine.discard_held(board, Some(seized.token())).await? {
                return Ok(false);
            }
        }
        RedisState::Rebuilding(started)
            if engine.now_ms() - started < engine.rebuild_lease_ms() =>
        {
            return Ok(false)
        }
        RedisState::Rebuilding(_) => {
            tracing::warn!(%board, "a rebuild was abandoned; starting again");
            // Abandoned after it took a live board and before it saved the log, the log still
            // holds answered writes.
            let Some(token) = engine
                .held_by(board)
                .await?
                .filter(|v| v.starts_with(crate::engine::REBUILD_PREFIX))
            else {
                return Ok(false);
            };
            save_log(engine, store, board).await?;
            // Another instance may take the same abandoned board over at the same time: whichever
            // removes the definition first goes on, and the other's discard stops there.
            if !engine.discard_held(board, Some(&token)).await? {
                return Ok(false);
            }
        }
        // The embedded engine keeps its boards in the process: at each start it loads them from
        // its own store, which is normal, not a loss.
        RedisState::Missing if store.single_server() => {
            tracing::info!(%board, "loading the board from the store");
        }
        RedisState::Missing => tracing::warn!(%board, "Redis lost the board; rebuilding"),
    }
    // The operations Redis numbered again follow the store's own, in the order Redis gave them.
    let merged = store.merge_parked(board).await?;
    let stored_seq = if merged > 0 {
        tracing::info!(%board, merged, "appended the operations Redis numbered again");
        metrics::counter!(crate::metrics::STORE_MERGED).increment(merged);
        store.board_seq(board).await?.unwrap_or(stored_seq)
    } else {
        stored_seq
    };
    // From the latest rebuild base when there is one (a snapshot taken at one point of the log and
    // found to hold what the log implies there, see snapshot::make_base; writing each member once),
    // else from the first operation.
    let dedupe_since = engine.now_ms() - engine.dedupe_window_ms();
    let rebuilt = match store.restore_base(board, stored_seq, dedupe_since).await? {
        Some(base) => {
            tracing::info!(%board, snapshot_seq = base.seq, tail = stored_seq.saturating_sub(base.seq), "rebuilding from a snapshot");
            let tail = store.op_pages(board, base.seq, u64::MAX);
            engine.restore(board, base, tail).await?
        }
        None => {
            let mut ops = store.op_pages(board, 0, u64::MAX);
            // Redis numbers a board's operations from 1, its definition first: a log that starts
            // later lost its beginning, and would rebuild a board that never was.
            let first = ops
                .first()
                .await?
                .map(|o| (o.seq, matches!(o.op, crate::engine::Op::Define { .. })));
            if first != Some((1, true)) {
                tracing::error!(%board, first = ?first.map(|(seq, _)| seq), "the store lacks the start of this board's history; not rebuilding it");
                return Err(crate::error::Error::Unavailable(format!(
                    "store: it lacks the start of board {board}'s history"
                )));
            }
            engine.replay(board, ops).await?
        }
    };
    if rebuilt {
        metrics::counter!(crate::metrics::STORE_REBUILDS).increment(1);
    }
    Ok(rebuilt)
}

/// Copies every entry of `board`'s Redis log into the store, however young (parked, when Redis
/// numbered them again).
async fn save_log(engine: &Engine, store: &dyn Store, board: &BoardId) -> Result<()> {
    loop {
        let pending = engine.log_pending(board, 1000).await?;
        if pending.is_empty() {
            return Ok(());
        }
        store.insert_ops(&pending).await?;
        engine.log_confirm(&pending).await?;
    }
}

/// Checks every stored board against Redis: rebuilds what Redis lost, finishes deletions a crash
/// interrupted. Run at start-up and periodically.
///
/// # Errors
/// When Redis or Postgres cannot be reached.
pub async fn check(engine: &Arc<Engine>, store: &dyn Store) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    for board in store.tombstones().await? {
        if engine.redis_state(&board).await? != RedisState::Missing {
            engine.discard(&board).await?;
            report.finished_deletes.push(board.clone());
        }
        store.purge(&board).await?;
    }
    for (board, _) in store.boards().await? {
        if rebuild(engine, store, &board).await? {
            report.rebuilt.push(board);
        }
    }
    Ok(report)
}
