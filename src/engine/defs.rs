//! The definition cache: each board's definition as last read from Redis, refreshed when a script
//! finds it stale, and boards recently found undefined.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::rebuild::REBUILD_PREFIX;
use super::reply::{as_array, as_int, bad_reply, unavailable};
use super::{scripts, Engine};
use crate::backend::{Call, ExecError, Refusal, Reply};
use crate::board::{BoardDef, BoardId};
use crate::error::{Error, Result};

/// How a failed script call is handled.
pub(super) enum Next {
    Retry,
    Fail(Error),
}

pub(super) const ATTEMPTS: usize = 5;

#[derive(Debug)]
pub(super) struct CachedDef {
    pub(super) version: String,
    pub(super) def: BoardDef,
    pub(super) created_ms: i64,
}

/// How long a board found undefined is answered "not found" without asking again: a board
/// another instance defines meanwhile is seen this much later at most.
pub(super) const ABSENT_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Most boards remembered as undefined; past it the memory starts afresh (ids that clients make up
/// cannot grow it without bound).
const ABSENT_MAX: usize = 10_000;

/// The definition cache's hit counter, looked up once: every call on a board counts one.
static HITS: crate::metrics::Resolved<metrics::Counter> = crate::metrics::Resolved::new();

impl Engine {
    pub(super) fn new_version(&self) -> String {
        let n = self.versions.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:x}", self.version_seed, n)
    }

    fn remember(&self, board: &BoardId, def: &Arc<CachedDef>) {
        self.cache(board, Some(def));
    }

    pub(super) fn forget(&self, board: &BoardId) {
        self.cache(board, None);
    }

    /// Caches `def` as the board's definition, or drops the board's entry; either way the board
    /// is no longer remembered as undefined.
    fn cache(&self, board: &BoardId, def: Option<&Arc<CachedDef>>) {
        self.absent
            .lock()
            .expect("absent boards poisoned")
            .remove(board);
        let mut defs = self.defs.write().expect("definition cache poisoned");
        match def {
            Some(d) => defs.insert(board.clone(), d.clone()),
            None => defs.remove(board),
        };
    }

    /// Whether `board` was found undefined less than [`ABSENT_FOR`] ago.
    fn known_absent(&self, board: &BoardId) -> bool {
        self.absent
            .lock()
            .expect("absent boards poisoned")
            .get(board)
            .is_some_and(|at| at.elapsed() < ABSENT_FOR)
    }

    /// What to do about a failed call planned from the cached definition of `board`: plan again
    /// when the script found the definition changed (or the board's keys), else fail with the
    /// error the failure converts to.
    pub(super) fn on_error(&self, board: &BoardId, e: ExecError) -> Next {
        match e.refusal() {
            Some(Refusal::Stale(_)) => {
                self.stats.definition_stale.fetch_add(1, Ordering::Relaxed);
                self.forget(board);
                Next::Retry
            }
            Some(Refusal::NoBoard) => {
                self.forget(board);
                if self.journal.is_some() {
                    // Look again: the store may know the board Redis lost.
                    Next::Retry
                } else {
                    Next::Fail(Error::BoardNotFound(board.clone()))
                }
            }
            Some(Refusal::Retry | Refusal::Exists(_)) => Next::Retry,
            _ => Next::Fail(e.into()),
        }
    }

    pub(super) async fn fetch_def(&self, board: &BoardId) -> Result<Option<Arc<CachedDef>>> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::BOARD_GET,
                keys: vec![self.keys.definition(board)],
                args: vec![],
            })
            .await
            .map_err(unavailable)?;
        Self::parse_def(&reply)
    }

    pub(super) fn parse_def(reply: &Reply) -> Result<Option<Arc<CachedDef>>> {
        let a = as_array(reply).ok_or_else(|| bad_reply("board_get", reply))?;
        match a {
            [Reply::Nil, ..] => Ok(None),
            [Reply::Bulk(v), Reply::Bulk(json), created, ..] => {
                let def: BoardDef = serde_json::from_str(json).map_err(|e| {
                    Error::Backend(format!("stored definition does not parse: {e}"))
                })?;
                Ok(Some(Arc::new(CachedDef {
                    version: v.clone(),
                    def,
                    created_ms: as_int(created).unwrap_or(0),
                })))
            }
            _ => Err(bad_reply("board_get", reply)),
        }
    }

    pub(super) async fn definition(&self, board: &BoardId) -> Result<Arc<CachedDef>> {
        if let Some(d) = self
            .defs
            .read()
            .expect("definition cache poisoned")
            .get(board)
        {
            self.stats.definition_hits.fetch_add(1, Ordering::Relaxed);
            HITS.with(
                || metrics::counter!(crate::metrics::CACHE_HITS, "cache" => "definitions"),
                |c| c.increment(1),
            );
            return Ok(d.clone());
        }
        if self.known_absent(board) {
            return Err(Error::BoardNotFound(board.clone()));
        }
        self.stats.definition_misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::CACHE_MISSES, "cache" => "definitions").increment(1);
        let Some(d) = self.fetch_def(board).await? else {
            return Err(self.missing(board).await);
        };
        if d.version.starts_with(REBUILD_PREFIX) {
            return Err(Self::rebuilding(board));
        }
        self.remember(board, &d);
        Ok(d)
    }

    /// The board's definition as Redis holds it now, when its version is no longer `cached`'s (the
    /// cache then holds it too); `None` when `cached` is current. A refusal planned from a cached
    /// definition is checked this way once before it is answered: another instance may have
    /// changed the board since (raised its retention, say), and a call refused before it reaches
    /// Redis would never meet the script's check of the version.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`] (or a rebuild under way) when the board is gone.
    pub(super) async fn newer_def(
        &self,
        board: &BoardId,
        cached: &CachedDef,
    ) -> Result<Option<Arc<CachedDef>>> {
        match self.fetch_def(board).await? {
            Some(d) if d.version == cached.version => Ok(None),
            Some(d) if d.version.starts_with(REBUILD_PREFIX) => {
                self.forget(board);
                Err(Self::rebuilding(board))
            }
            Some(d) => {
                self.stats.definition_stale.fetch_add(1, Ordering::Relaxed);
                self.remember(board, &d);
                Ok(Some(d))
            }
            None => {
                self.forget(board);
                Err(self.missing(board).await)
            }
        }
    }

    pub(super) fn rebuilding(board: &BoardId) -> Error {
        Error::Rebuilding(board.clone())
    }

    /// The error for a board Redis does not hold: not found, unless the durable store holds it, in
    /// which case Redis lost it and a rebuild is under way.
    pub(super) async fn missing(&self, board: &BoardId) -> Error {
        let e = match &self.journal {
            Some(j) => match j.lost(board).await {
                Ok(true) => Self::rebuilding(board),
                Ok(false) => Error::BoardNotFound(board.clone()),
                // Not "not found" while the store cannot say: the board may well exist.
                Err(e) => e,
            },
            None => Error::BoardNotFound(board.clone()),
        };
        if matches!(e, Error::BoardNotFound(_)) {
            let mut absent = self.absent.lock().expect("absent boards poisoned");
            if absent.len() >= ABSENT_MAX {
                absent.clear();
            }
            absent.insert(board.clone(), std::time::Instant::now());
        }
        e
    }

    /// Runs a script planned from the board's current definition, planning again when the
    /// definition turns out to have changed: when the script finds another version, and when the
    /// cached definition refuses the call before it is made (see [`Engine::newer_def`]).
    pub(super) async fn call_board<C>(
        &self,
        board: &BoardId,
        mut plan: impl FnMut(&CachedDef) -> Result<(Call, C)>,
    ) -> Result<(Arc<CachedDef>, Reply, C)> {
        let mut checked = false;
        for _ in 0..ATTEMPTS {
            let def = self.definition(board).await?;
            let (call, ctx) = match plan(&def) {
                Ok(p) => p,
                Err(e @ Error::Invalid(_)) if !checked => {
                    checked = true;
                    if self.newer_def(board, &def).await?.is_some() {
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            match self.exec.eval(call).await {
                Ok(r) => return Ok((def, r, ctx)),
                Err(e) => match self.on_error(board, e) {
                    Next::Retry => continue,
                    Next::Fail(e) => return Err(e),
                },
            }
        }
        Err(Error::Conflict(format!(
            "board {board} kept changing under this request"
        )))
    }

    pub(super) async fn fetch_def_raw(
        &self,
        board: &BoardId,
    ) -> Result<Option<std::sync::Arc<CachedDef>>> {
        let reply = self
            .raw(Call {
                script: &scripts::BOARD_GET,
                keys: vec![self.keys.definition(board)],
                args: vec![],
            })
            .await?;
        Self::parse_def(&reply)
    }
}
