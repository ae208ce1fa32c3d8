//! migrate, snapshot, warm and pair-store: the commands that bring the store and Redis up to date.

use super::{Admin, Failure};
use crate::board::BoardId;
use crate::engine::{Engine, LoggedOp, Op, RedisState};
use crate::error::Error;
use crate::store::{rebuild, snapshot, Store};

/// A board's state in Redis, in words.
pub(super) fn state_in_words(state: &RedisState) -> String {
    match state {
        RedisState::Missing => "missing from Redis".into(),
        RedisState::Rebuilding(since) => {
            let at = chrono::DateTime::from_timestamp_millis(*since)
                .map_or_else(|| since.to_string(), |t| t.to_rfc3339());
            format!("being rebuilt since {at}")
        }
        RedisState::Live(seq) => format!("in Redis at seq {seq}"),
    }
}

/// Rebuilds `board` on `engine` (this process's own) from the store, up to its operation `upto`,
/// as rankd serve's embedded engine does at start: from its latest rebuild base and the operations
/// after it, or its whole log. Returns the base's sequence number, if one was used.
pub(super) async fn rebuild_here(
    engine: &Engine,
    store: &dyn Store,
    board: &BoardId,
    upto: u64,
) -> Result<Option<u64>, Failure> {
    // No event ids: an admin process answers no writes.
    if let Some(base) = store.restore_base(board, upto, i64::MAX).await? {
        let seq = base.seq;
        engine
            .restore(board, base, store.op_pages(board, seq, upto))
            .await?;
        return Ok(Some(seq));
    }
    let mut ops = store.op_pages(board, 0, upto);
    if let Some(missing) = history_start_missing(board, ops.first().await?) {
        return Err(Failure::Engine(Error::Unavailable(format!(
            "store: {missing}"
        ))));
    }
    engine.replay(board, ops).await?;
    Ok(None)
}

/// Why a board's stored log does not replay, when its `first` operation is not the board's
/// definition (Redis numbers it 1): one that starts later lost its beginning, and would replay into
/// a board that never was.
pub(super) fn history_start_missing(board: &BoardId, first: Option<&LoggedOp>) -> Option<String> {
    match first {
        Some(o) if o.seq == 1 && matches!(o.op, Op::Define { .. }) => None,
        first => Some(format!(
            "the store lacks the start of board {board}'s history (its stored log starts at {})",
            first.map_or("nothing".to_owned(), |o| format!("seq {}", o.seq))
        )),
    }
}

impl Admin {
    /// Creates or upgrades the store's tables and indexes; a dry run lists the pending migrations.
    ///
    /// # Errors
    /// When the store cannot be reached or a migration fails.
    pub async fn migrate(&self, dry_run: bool) -> Result<(), Failure> {
        let store = self.store()?;
        let pending = store.pending_migrations().await?;
        if !dry_run {
            store.migrate().await?;
        }
        let verb = if dry_run { "pending" } else { "applied" };
        for m in &pending {
            self.report.line(format!("migration {verb}: {m}"));
        }
        if pending.is_empty() {
            self.report.line("the store is up to date");
        }
        Ok(())
    }

    /// Snapshots every key of one board, or of all, under the store's snapshot run lease. With
    /// Redis, the keys Redis holds; without, each board rebuilt here from the store (a new rebuild
    /// base, so that rankd serve's next start replays less). A dry run lists what it would take.
    ///
    /// # Errors
    /// [`Failure::UnknownBoard`]; [`Failure::Busy`] while another snapshot runs; unreachable
    /// services.
    pub async fn snapshot(&self, board: Option<&str>, dry_run: bool) -> Result<(), Failure> {
        let store = self.store()?;
        let boards = self.stored_boards(board).await?;
        if dry_run {
            for (b, seq) in &boards {
                match &self.redis {
                    Some(r) => {
                        for k in r.engine.snapshot_board(b).await? {
                            self.report.line(format!(
                                "would snapshot {b} {} {} {} ({} members)",
                                k.key.window,
                                k.key.period,
                                k.key.scope.as_deref().unwrap_or("-"),
                                k.entries.len()
                            ));
                        }
                    }
                    None => self.report.line(format!(
                        "would snapshot {b} at seq {seq}, rebuilt here from the store"
                    )),
                }
            }
            return Ok(());
        }
        self.claim_lease().await?;
        let work = async {
            self.report.begin(boards.len() as u64);
            for (b, seq) in &boards {
                self.report.working_on(format!("snapshot {b}"));
                let r = match &self.redis {
                    Some(r) => snapshot::snapshot(&r.engine, store, Some(b)).await?,
                    None => {
                        let local = self.local_engine().await?;
                        rebuild_here(&local, store, b, *seq).await?;
                        snapshot::snapshot(&local, store, Some(b)).await?
                    }
                };
                let base = match (r.keys, r.bases) {
                (0, _) => "",
                (_, 0) => {
                    ", history only (read while the board changed, ahead of the store, or not what \
                     the stored log implies)"
                }
                _ => ", a rebuild base",
            };
                self.report.line(format!(
                    "snapshot {b}: {} keys, {} entries{base}",
                    r.keys, r.entries
                ));
                self.renew_lease().await?;
                self.report.step();
            }
            self.report.end();
            Ok::<_, Failure>(())
        };
        let r = snapshot::renewing(store, &self.holder, work).await;
        self.release_lease().await;
        r
    }

    /// Rebuilds Redis from the store where it lost boards (or acknowledged operations). A dry run
    /// says which boards it would rebuild.
    ///
    /// # Errors
    /// [`Failure::UnknownBoard`]; unreachable services.
    pub async fn warm(&self, board: Option<&str>, dry_run: bool) -> Result<(), Failure> {
        let store = self.store()?;
        let engine = &self.redis()?.engine;
        let boards = self.stored_boards(board).await?;
        self.report.begin(boards.len() as u64);
        for (b, seq) in &boards {
            self.report.working_on(format!("warm {b}"));
            let state = engine.redis_state(b).await?;
            let needed = !matches!(state, RedisState::Live(s) if s >= *seq);
            let line = match (needed, dry_run) {
                (false, _) => format!("{b}: present in Redis (seq {seq}), nothing to do"),
                (true, true) => format!(
                    "{b}: would rebuild ({}, the store at seq {seq})",
                    state_in_words(&state)
                ),
                (true, false) => {
                    rebuild::rebuild(engine, store, b).await?;
                    format!("{b}: rebuilt to seq {seq}")
                }
            };
            self.report.line(line);
            self.report.step();
        }
        self.report.end();
        Ok(())
    }

    /// Pairs Redis with this store when it was built from another (see [`crate::store::identity`]):
    /// an operator's decision that the history this store lacks stays lost. Running servers follow
    /// within ten seconds: they store into it again, starting with what the Redis logs kept.
    ///
    /// # Errors
    /// When Redis or the store cannot be reached.
    pub async fn pair_store(&self, dry_run: bool) -> Result<(), Failure> {
        let store = self.store()?;
        let engine = &self.redis()?.engine;
        let id = store.store_id().await?;
        let paired = engine.store_pairing(None, false).await?;
        if paired.as_deref() == Some(id.as_str()) {
            self.report
                .line(format!("Redis is already paired with this store ({id})"));
            return Ok(());
        }
        let was = paired.unwrap_or_else(|| "none".into());
        if dry_run {
            self.report.line(format!(
                "would pair Redis with this store ({id}) instead of {was}"
            ));
            return Ok(());
        }
        engine.store_pairing(Some(&id), true).await?;
        self.report.line(format!(
            "Redis is now paired with this store ({id}) instead of {was}"
        ));
        self.report.line(
            "boards whose definition this store lacks cannot be rebuilt from it: Redis holds their \
             only whole copy",
        );
        Ok(())
    }
}
