//! The persister: commits the engine's operations to Postgres in groups, and sweeps what a crash
//! or an outage left in the Redis logs.
//!
//! Writes reach Postgres two ways. The engine hands every operation it applied to [`Persister`]
//! (the local path): a writer task commits whatever has queued while the previous commit ran, in
//! one transaction, answers sync-mode waiters, then trims the committed entries from the Redis logs.
//! Anything the local path could not commit (Postgres down, the process killed) stays in the log
//! streams; the sweep, run by every instance, copies entries older than [`SWEEP_AGE_MS`]. Rows are
//! keyed by (board, seq) and inserted with ON CONFLICT DO NOTHING, so both paths may offer the same
//! operation.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::board::BoardId;
use crate::engine::{Durability, Engine, Journal, LoggedOp};
use crate::error::{Error, Result};
use crate::metrics as m;

/// Entries younger than this are left to the local path.
pub const SWEEP_AGE_MS: i64 = 2_000;
/// How long one commit may run before the sync-mode writes waiting on it answer 503: a store that
/// has not finished a commit in this long is taken for gone. A write queued behind commits that do
/// finish waits for its turn however long that is (back-pressure), never failing while the store
/// is merely busy.
pub const COMMIT_WAIT: Duration = Duration::from_secs(5);
/// What each operation of a commit adds to [`COMMIT_WAIT`]: a commit of a large group (a batch of
/// 10,000 events) on a loaded machine may take longer than a single event's and still be making
/// progress (1 ms an operation is about 20 times what a commit of one takes on an idle machine).
const COMMIT_WAIT_PER_OP: Duration = Duration::from_millis(1);
/// How often a sync-mode write waiting for its commit checks that the store is not stalled.
const STALL_CHECK: Duration = Duration::from_millis(200);
/// Most operations one group commit carries, so that a commit stays short even when a backlog
/// queued behind a slow one.
const GROUP_OPS: usize = 20_000;

struct Job {
    ops: Vec<LoggedOp>,
    done: Option<oneshot::Sender<std::result::Result<(), String>>>,
}

/// The [`Journal`] backed by Postgres.
pub struct Persister {
    store: Arc<dyn Store>,
    mode: Durability,
    tx: mpsc::Sender<Job>,
    engine: OnceLock<Weak<Engine>>,
    rebuilding: Mutex<HashSet<BoardId>>,
    /// Operations handed to the writer and not yet committed or failed: the sweep leaves them to
    /// it, rather than offering the same rows again and queueing behind it for the store.
    queued: Mutex<HashMap<BoardId, HashSet<u64>>>,
    /// When the writer's commit under way began (ms since the epoch), 0 while it waits for work.
    committing_since: AtomicI64,
    /// Operations the commit under way carries.
    committing_ops: AtomicUsize,
    /// Which store Redis was built from (see [`super::identity`]).
    pairing: super::identity::Pairing,
}

impl Persister {
    /// A persister writing to `store`; its writer task stops with `shutdown` once the queue is drained.
    pub fn start(
        store: Arc<dyn Store>,
        mode: Durability,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(16_384);
        let p = Arc::new(Self {
            store,
            mode,
            tx,
            engine: OnceLock::new(),
            rebuilding: Mutex::new(HashSet::new()),
            queued: Mutex::new(HashMap::new()),
            committing_since: AtomicI64::new(0),
            committing_ops: AtomicUsize::new(0),
            pairing: super::identity::Pairing::default(),
        });
        tokio::spawn(writer(Arc::downgrade(&p), rx, shutdown));
        p
    }

    /// Connects the persister to the engine it serves (for log trimming and rebuilds).
    pub fn attach(&self, engine: &Arc<Engine>) {
        let _ = self.engine.set(Arc::downgrade(engine));
    }

    fn engine(&self) -> Option<Arc<Engine>> {
        self.engine.get().and_then(Weak::upgrade)
    }

    /// Pairs Redis with the store, or checks that the store is the one it was paired with (see
    /// [`super::identity`]). Returns whether it is: when not, nothing is committed into the store
    /// or rebuilt from it.
    ///
    /// # Errors
    /// When Redis or the store cannot be reached.
    pub async fn paired(&self) -> Result<bool> {
        match self.engine() {
            Some(engine) => self.pairing.check(&engine, self.store.as_ref()).await,
            None => Ok(false),
        }
    }

    /// Marks operations as the writer's (`on`), or no longer.
    fn mark_queued(&self, ops: &[LoggedOp], on: bool) {
        let mut queued = self.queued.lock().expect("queue set poisoned");
        for o in ops {
            if on {
                match queued.get_mut(&o.board) {
                    Some(seqs) => {
                        seqs.insert(o.seq);
                    }
                    None => {
                        queued.insert(o.board.clone(), HashSet::from([o.seq]));
                    }
                }
            } else if let Some(seqs) = queued.get_mut(&o.board) {
                seqs.remove(&o.seq);
                if seqs.is_empty() {
                    queued.remove(&o.board);
                }
            }
        }
    }

    /// Whether the writer's commit under way has run longer than [`COMMIT_WAIT`], plus
    /// [`COMMIT_WAIT_PER_OP`] for each operation it carries.
    /// A store that tracks its progress ([`Store::progress_ms`]) is stalled only when its writes
    /// have not moved for [`COMMIT_WAIT`] either: a commit queued behind another writer's long one
    /// (a sweep, a snapshot) on a busy machine is waiting its turn, not lost.
    fn stalled(&self) -> bool {
        let since = self.committing_since.load(Ordering::Acquire);
        let ops = self.committing_ops.load(Ordering::Acquire) as u128;
        let limit = COMMIT_WAIT.as_millis() + ops * COMMIT_WAIT_PER_OP.as_millis();
        let now = chrono::Utc::now().timestamp_millis();
        let idle = (now - self.store.progress_ms()).max(0) as u128;
        since != 0 && (now - since).max(0) as u128 > limit && idle > COMMIT_WAIT.as_millis()
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Copies operations older than [`SWEEP_AGE_MS`] from every board's Redis log, and exports the
    /// lag (the age of the oldest operation not yet in the store). Returns how many it copied.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis or Postgres cannot be reached.
    pub async fn sweep(self: &Arc<Self>) -> Result<usize> {
        self.sweep_aged(SWEEP_AGE_MS).await
    }

    /// [`Persister::sweep`] of the entries at least `age_ms` old. The lag is exported even when the
    /// store cannot be reached: it is what the store-lag alert watches then.
    async fn sweep_aged(self: &Arc<Self>, age_ms: i64) -> Result<usize> {
        let Some(engine) = self.engine() else {
            return Ok(0);
        };
        let now = engine.now_ms();
        let mut copied = 0;
        let mut oldest: Option<i64> = None;
        let mut failed = None;
        for b in engine.boards().await? {
            if failed.is_some() {
                // The lag still counts every board's oldest entry.
                if let Some(first) = engine.log_pending(&b.board, 1).await?.first() {
                    oldest = Some(oldest.map_or(first.recv_ms, |o| o.min(first.recv_ms)));
                }
                continue;
            }
            // Pages of the log, each read once: `after` is the last sequence number read.
            let (mut seen, mut after) = (0, 0);
            loop {
                let pending = match engine.log_pending_after(&b.board, after, 1000).await {
                    Ok(p) => p,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                if seen == 0 {
                    if let Some(first) = pending.first() {
                        oldest = Some(oldest.map_or(first.recv_ms, |o| o.min(first.recv_ms)));
                    }
                }
                let more = pending.len() == 1000;
                after = pending.last().map_or(after, |o| o.seq);
                let young = pending.iter().any(|o| o.recv_ms > now - age_ms);
                let ripe: Vec<LoggedOp> = {
                    let queued = self.queued.lock().expect("queue set poisoned");
                    pending
                        .into_iter()
                        .filter(|o| {
                            o.recv_ms <= now - age_ms
                                && !queued.get(&o.board).is_some_and(|s| s.contains(&o.seq))
                        })
                        .collect()
                };
                if ripe.is_empty() {
                    // All the writer's: skip past them while more follows (a few pages at most).
                    // Young entries end the board: those after them are younger still.
                    if more && !young && seen < 10_000 {
                        seen += 1000;
                        continue;
                    }
                    break;
                }
                match self.store.insert_ops(&ripe).await {
                    Ok(diverged) => self.resync(diverged),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
                if let Err(e) = engine.log_confirm(&ripe).await {
                    failed = Some(e);
                    break;
                }
                copied += ripe.len();
            }
        }
        let lag = oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0);
        metrics::gauge!(m::STORE_LAG).set(lag);
        match failed {
            Some(e) => Err(e),
            None => Ok(copied),
        }
    }

    /// Starts resynchronising the boards whose Redis numbering diverged from the store's (their
    /// operations are parked: see [`super::diverging`]), rather than waiting for the next check.
    fn resync(self: &Arc<Self>, boards: Vec<BoardId>) {
        for board in boards {
            if !self
                .rebuilding
                .lock()
                .expect("rebuild set poisoned")
                .contains(&board)
            {
                tracing::warn!(%board, "Redis numbered operations again that the store holds others at (it lost acknowledged operations); resynchronising the board");
            }
            self.rebuild_in_background(board);
        }
    }

    /// Starts a rebuild of `board` unless one is running in this process.
    pub fn rebuild_in_background(self: &Arc<Self>, board: BoardId) {
        if !self
            .rebuilding
            .lock()
            .expect("rebuild set poisoned")
            .insert(board.clone())
        {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Some(engine) = me.engine() {
                match super::rebuild::rebuild(&engine, me.store.as_ref(), &board).await {
                    Ok(true) => tracing::info!(%board, "board rebuilt from the store"),
                    Ok(false) => tracing::debug!(%board, "board already present; no rebuild"),
                    Err(e) => tracing::error!(%board, error = %e, "rebuild failed"),
                }
            }
            me.rebuilding
                .lock()
                .expect("rebuild set poisoned")
                .remove(&board);
        });
    }

    /// The persister as a [`Journal`] that can start rebuilds.
    pub fn journal(self: &Arc<Self>) -> Arc<dyn Journal> {
        Arc::new(Handle(self.clone()))
    }
}

/// The engine's handle on the persister.
struct Handle(Arc<Persister>);

#[async_trait]
impl Journal for Handle {
    async fn record(&self, ops: Vec<LoggedOp>) -> Result<()> {
        let p = &self.0;
        match p.mode {
            Durability::Async => {
                // A full queue (the store slower than the writes) leaves the operations to the sweep.
                p.mark_queued(&ops, true);
                if let Err(e) = p.tx.try_send(Job { ops, done: None }) {
                    p.mark_queued(&e.into_inner().ops, false);
                }
                Ok(())
            }
            Durability::Sync => {
                // A place in the queue, however long that takes while commits finish.
                let place = loop {
                    match tokio::time::timeout(STALL_CHECK, p.tx.reserve()).await {
                        Ok(Ok(place)) => break place,
                        Ok(Err(_)) => {
                            return Err(Error::Unavailable("store: the persister stopped".into()))
                        }
                        Err(_) if p.stalled() => {
                            return Err(Error::Unavailable("store: commit timed out".into()))
                        }
                        Err(_) => {}
                    }
                };
                let (done, mut wait) = oneshot::channel();
                p.mark_queued(&ops, true);
                place.send(Job {
                    ops,
                    done: Some(done),
                });
                // However long the queue ahead is, while commits finish (back-pressure); 503 once
                // one commit has run past COMMIT_WAIT (the store is gone).
                loop {
                    match tokio::time::timeout(STALL_CHECK, &mut wait).await {
                        Ok(Ok(Ok(()))) => return Ok(()),
                        Ok(Ok(Err(e))) => return Err(Error::Unavailable(e)),
                        Ok(Err(_)) => {
                            return Err(Error::Unavailable("store: the persister stopped".into()))
                        }
                        Err(_) if p.stalled() => {
                            return Err(Error::Unavailable("store: commit timed out".into()))
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }

    fn confirms(&self) -> bool {
        self.0.mode == Durability::Sync
    }

    async fn board_deleting(&self, board: &BoardId) -> Result<bool> {
        let had = self.0.store.has_board(board).await?;
        self.0.store.tombstone(board).await?;
        Ok(had)
    }

    async fn board_deleted(&self, board: &BoardId) -> Result<()> {
        self.0.store.purge(board).await
    }

    async fn flush(&self) -> Result<()> {
        // The writer answers jobs in order: once this empty one is answered, everything handed
        // over before it was committed, or failed and is still in the log.
        let (done, wait) = oneshot::channel();
        let queued = self
            .0
            .tx
            .send(Job {
                ops: Vec::new(),
                done: Some(done),
            })
            .await;
        if queued.is_ok() {
            let _ = tokio::time::timeout(COMMIT_WAIT, wait).await;
        }
        // Whatever the log still holds, however young: the sweep would otherwise wait 2 s for it,
        // and the embedded engine's log does not outlive the process.
        self.0.sweep_aged(0).await.map(|_| ())
    }

    async fn lost(&self, board: &BoardId) -> Result<bool> {
        // Another store than the one Redis was built from knows nothing of its boards.
        self.0.store.check_identity().await?;
        let stored = self.0.store.has_board(board).await?;
        if stored {
            self.0.rebuild_in_background(board.clone());
        } else if self.0.store.has_ops(board).await? {
            // Operations without their board: the store lost the start of its history.
            tracing::error!(%board, "the store holds operations of this board but not its definition: it has lost history; not rebuilding the board from it");
            return Err(Error::Unavailable(format!(
                "store: it holds operations of board {board} but not its definition (it has lost history)"
            )));
        }
        Ok(stored)
    }
}

async fn writer(p: Weak<Persister>, mut rx: mpsc::Receiver<Job>, shutdown: CancellationToken) {
    loop {
        let first = tokio::select! {
            j = rx.recv() => match j { Some(j) => j, None => return },
            () = shutdown.cancelled() => {
                // Drain what is queued, then stop.
                rx.close();
                match rx.recv().await { Some(j) => j, None => return }
            }
        };
        // Group commit: what queued while the previous commit ran goes in this one, up to a size.
        let mut size = first.ops.len();
        let mut jobs = vec![first];
        while size < GROUP_OPS {
            match rx.try_recv() {
                Ok(j) => {
                    size += j.ops.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let Some(p) = p.upgrade() else { return };
        let ops: Vec<LoggedOp> = jobs
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.ops))
            .collect();
        p.committing_ops.store(ops.len(), Ordering::Release);
        p.committing_since.store(
            chrono::Utc::now().timestamp_millis().max(1),
            Ordering::Release,
        );
        let result = p.store.insert_ops(&ops).await;
        p.committing_since.store(0, Ordering::Release);
        let answer = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        if let Ok(diverged) = result {
            p.resync(diverged);
        }
        match &answer {
            Ok(()) => metrics::counter!(m::STORE_COMMITS, "outcome" => "ok").increment(1),
            Err(e) => {
                metrics::counter!(m::STORE_COMMITS, "outcome" => "error").increment(1);
                tracing::warn!(error = %e, ops = ops.len(), "store commit failed; the sweep will retry from the Redis log");
            }
        }
        for j in jobs {
            if let Some(done) = j.done {
                let _ = done.send(answer.clone());
            }
        }
        if answer.is_ok() {
            if let Some(engine) = p.engine() {
                if let Err(e) = engine.log_confirm(&ops).await {
                    tracing::debug!(error = %e, "log trim failed; the sweep will trim later");
                }
            }
        }
        // Trimmed, or (after a failure) left in the log for the sweep to copy.
        p.mark_queued(&ops, false);
    }
}
