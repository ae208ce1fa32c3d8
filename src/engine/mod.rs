//! The engine: every leaderboard operation as one atomic script call, or one pipeline of them.
//!
//! Board definitions are cached in-process. Every script is handed the version of the definition it
//! was planned with and checks it against Redis before touching anything, answering `STALE` when it
//! changed; the engine then refreshes the definition and plans again. So a cached definition can cost
//! a retry but never a wrong write or a wrong read, and an update or delete made through any instance
//! reaches every other at its next call on that board.
//!
//! One file per job: this one holds the [`Engine`] and its wiring; `defs` the definition cache
//! and the retry of a call planned from a stale one; `reply` the decoding of script replies;
//! `boards` board definitions; `submit` single writes; `batch` batches; `members` member
//! removal and display data; `reads` every read; `oplog` the operation log the store drains;
//! `rebuild` rebuilds and their leases; `snapshot` consistent reads for snapshots; `coalesce`
//! the sharing of one call by concurrent reads; `types` what the engine takes and answers.

mod batch;
mod boards;
mod coalesce;
mod defs;
pub mod journal;
mod members;
mod oplog;
mod pages;
mod reads;
mod rebuild;
mod reply;
pub mod scripts;
mod snapshot;
mod submit;
mod types;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use journal::{Durability, Journal, LoggedOp, Op};
pub use pages::{CacheStatus, PageForm, Served, MAX_CACHED_DEPTH};
pub use rebuild::{
    Base, BaseKey, EntryChunks, OpPages, RedisState, Seized, REBUILD_LEASE_MS, REBUILD_PREFIX,
};
pub use snapshot::{at_one_point, KeySnapshot, SnapChunk, SnapEntry, SnapshotKey};
pub use submit::event_print;
pub use types::*;

use crate::backend::{ExecError, Executor};
use crate::board::BoardId;
use crate::error::{Error, Result};
use crate::keys::Keys;
use defs::CachedDef;
use reads::{Pages, Standings, PAGE_READERS_PER_CALL, STANDINGS_PER_CALL};

/// Leaderboard keys one call of a member removal, a board deletion or a trim goes through: a
/// board may hold millions of keys (scopes times periods), and one call over all of them would hold
/// Redis for as long.
pub(crate) const KEY_CHUNK: usize = 500;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long an event id is remembered (default 24 h).
    pub dedupe_window: Duration,
    /// How far in the future an event's `at` may lie (default 5 min), for clock skew between clients.
    pub max_future: Duration,
    /// Events per script call in a batch (default 500): bounds how long one call holds Redis.
    pub batch_chunk: usize,
    /// How long a rebuild may go without renewing its hold on a board before another instance
    /// takes the board over (default [`REBUILD_LEASE_MS`]); a working rebuild renews it every
    /// quarter of this.
    pub rebuild_lease: Duration,
    /// Single score events of one board that one script call may carry when they arrive while
    /// another call for the board is in flight (default 64); 1 sends each alone. See
    /// [`Engine::submit_shared`].
    pub write_share: usize,
    /// The answer caches' TTLs and byte budget.
    pub cache: crate::cache::CacheSettings,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            dedupe_window: Duration::from_secs(24 * 3600),
            max_future: Duration::from_secs(300),
            batch_chunk: 500,
            rebuild_lease: Duration::from_millis(REBUILD_LEASE_MS as u64),
            write_share: 64,
            cache: crate::cache::CacheSettings::default(),
        }
    }
}

/// Hits and misses of the engine's caches.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Definition lookups answered from the in-process cache.
    pub definition_hits: AtomicU64,
    /// Definition lookups that went to Redis.
    pub definition_misses: AtomicU64,
    /// Calls planned again because the cached definition was stale (found by the script, or by a
    /// look at the current definition before answering a refusal).
    pub definition_stale: AtomicU64,
}

/// The leaderboard engine. Cheap to share: wrap it in an `Arc`.
pub struct Engine {
    exec: Arc<dyn Executor>,
    keys: Keys,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    defs: RwLock<HashMap<BoardId, Arc<CachedDef>>>,
    /// Boards found undefined (in Redis and in the store), and when: asked again within
    /// [`ABSENT_FOR`], they are answered "not found" without a Redis call or a store query.
    absent: std::sync::Mutex<HashMap<BoardId, std::time::Instant>>,
    stats: CacheStats,
    versions: AtomicU64,
    version_seed: u64,
    journal: Option<Arc<dyn Journal>>,
    /// Concurrent single-member reads of one leaderboard key, made as one script call.
    standings: Standings,
    /// Concurrent identical page reads (top, range, cursor, around, scores), made as one call.
    pages: Pages,
    /// Concurrent single writes to one board, made as one call.
    writes: Arc<submit::Writes>,
    caches: crate::cache::Caches,
    /// Concurrent checks of cached pages, per board.
    checks: pages::Checks,
    /// Page reads in flight, for warming to stay out of a busy instance's way.
    page_reads: std::sync::atomic::AtomicUsize,
    /// The clears hash as this instance last read it (see [`Engine::apply_clears`]).
    clears_seen: std::sync::Mutex<HashMap<String, String>>,
    clears_read: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("keys", &self.keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over `exec`, loading every script first so that a broken one fails here.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be reached, [`Error::Backend`] when a script
    /// does not load.
    pub async fn new(
        exec: Arc<dyn Executor>,
        keys: Keys,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Result<Self> {
        exec.load(&scripts::all()).await.map_err(|e| match e {
            ExecError::Unavailable(m) | ExecError::Unanswered(m) => Error::Unavailable(m),
            ExecError::Reply(m) => Error::Backend(format!("loading scripts: {m}")),
        })?;
        let write_share = config.write_share;
        let caches = crate::cache::Caches::new(config.cache.clone());
        Ok(Self {
            exec,
            keys,
            clock,
            config,
            defs: RwLock::new(HashMap::new()),
            absent: std::sync::Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
            versions: AtomicU64::new(0),
            version_seed: RandomState::new().build_hasher().finish(),
            journal: None,
            standings: coalesce::Coalescer::new(STANDINGS_PER_CALL),
            pages: coalesce::Coalescer::new(PAGE_READERS_PER_CALL),
            writes: Arc::new(coalesce::Coalescer::new(write_share)),
            caches,
            checks: coalesce::Coalescer::new(pages::CHECKS_PER_CALL),
            page_reads: std::sync::atomic::AtomicUsize::new(0),
            clears_seen: std::sync::Mutex::new(HashMap::new()),
            clears_read: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// An engine of its own over an empty in-process keyspace (the embedded executor, running the
    /// same scripts), with this engine's keys, clock and settings and no journal: what a board's
    /// stored log implies can be worked out there without Redis storing or serving any of it.
    ///
    /// # Errors
    /// As [`Engine::new`].
    pub async fn scratch(&self) -> Result<Self> {
        let exec = crate::backend::embedded::EmbeddedExecutor::new(self.clock.clone());
        Self::new(
            Arc::new(exec),
            self.keys.clone(),
            self.clock.clone(),
            self.config.clone(),
        )
        .await
    }

    /// Hands every operation to `journal` from now on (before the engine is shared).
    #[must_use]
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// The executor the engine runs its scripts on.
    pub fn executor(&self) -> Arc<dyn Executor> {
        self.exec.clone()
    }

    /// The key formatter.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The answer caches.
    pub fn caches(&self) -> &crate::cache::Caches {
        &self.caches
    }

    /// Cache statistics.
    pub fn cache_stats(&self) -> &CacheStats {
        &self.stats
    }

    /// How long an event id stays a duplicate, in ms.
    pub fn dedupe_window_ms(&self) -> i64 {
        self.config.dedupe_window.as_millis() as i64
    }

    /// How long a rebuild may go without renewing its hold on a board (see
    /// [`EngineConfig::rebuild_lease`]), ms.
    pub fn rebuild_lease_ms(&self) -> i64 {
        self.config.rebuild_lease.as_millis() as i64
    }

    /// The engine's clock reading, Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Checks that the backend answers and holds every script, loading any it lost.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it does not answer or cannot load them.
    pub async fn ready(&self) -> Result<()> {
        let down = |e: ExecError| Error::Unavailable(e.detail().to_owned());
        self.exec.ping().await.map_err(down)?;
        self.exec
            .reload_missing(&scripts::all())
            .await
            .map_err(down)
    }

    /// What the backend reports about itself (memory, keys, script cache).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it cannot be asked.
    pub async fn backend_stats(&self) -> Result<crate::backend::BackendStats> {
        self.exec
            .stats()
            .await
            .map_err(|e| Error::Unavailable(e.detail().to_owned()))
    }

    /// The backend's slowest recent commands.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it cannot be asked.
    pub async fn slowlog(&self) -> Result<Vec<String>> {
        self.exec
            .slowlog()
            .await
            .map_err(|e| Error::Unavailable(e.detail().to_owned()))
    }
}
