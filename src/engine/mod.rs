//! The engine: every leaderboard operation as one atomic script call, or one pipeline of them.
//!
//! Board definitions are cached in-process. Every script is handed the version of the definition it
//! was planned with and checks it against Redis before touching anything, answering `STALE` when it
//! changed; the engine then refreshes the definition and plans again. So a cached definition can cost
//! a retry but never a wrong write or a wrong read, and an update or delete made through any instance
//! reaches every other at its next call on that board.

mod coalesce;
pub mod journal;
mod replay;
pub mod scripts;
mod snapshot;
mod types;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use journal::{Durability, Journal, LoggedOp, Op};
pub use replay::{
    Base, BaseKey, EntryChunks, RedisState, Seized, REBUILD_LEASE_MS, REBUILD_PREFIX,
};
pub use snapshot::{at_one_point, KeySnapshot, SnapChunk, SnapEntry, SnapshotKey};
pub use types::*;

use crate::backend::{Call, ExecError, Executor, Reply};
use crate::board::{BoardDef, BoardId, Display, Member, Policy, RankMode, Scope, Score, TieBreak};
use crate::error::{Error, Invalid, Result};
use crate::keys::{BoardKey, Keys};
use crate::window::{Period, Window};

/// Where the engine reads the time. Injectable, so tests can move it.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self(AtomicI64::new(now_ms))
    }

    /// Sets the time.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            dedupe_window: Duration::from_secs(24 * 3600),
            max_future: Duration::from_secs(300),
            batch_chunk: 500,
            rebuild_lease: Duration::from_millis(REBUILD_LEASE_MS as u64),
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

#[derive(Debug)]
struct CachedDef {
    version: String,
    def: BoardDef,
    created_ms: i64,
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
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("keys", &self.keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One board of a batch of several calls whose events add up (policy `incr`): what
/// [`Engine::refused_sums`] checks before the batch writes.
struct SumSpan {
    board: BoardId,
    def: Arc<CachedDef>,
    /// The board's leaderboard keys the batch touches, with their tick bits.
    keys: Vec<String>,
    bits: Vec<String>,
    seen: std::collections::HashSet<String>,
    /// Every |value| the batch adds to the board, summed.
    added: f64,
    /// The board's events, in batch order.
    events: Vec<usize>,
}

impl SumSpan {
    fn new(board: BoardId, def: Arc<CachedDef>) -> Self {
        Self {
            board,
            def,
            keys: Vec::new(),
            bits: Vec::new(),
            seen: std::collections::HashSet::new(),
            added: 0.0,
            events: Vec::new(),
        }
    }

    /// Adds one call's keys and events.
    fn add(&mut self, slots: &Slots, prepared: &[Prepared], idx: &[usize]) {
        for slot in &slots.keys {
            if self.seen.insert(slot.key.zset.clone()) {
                self.keys.push(slot.key.zset.clone());
                self.bits
                    .push(self.def.def.tick_bits(slot.window).to_string());
            }
        }
        self.added += prepared.iter().map(|p| p.value.get().abs()).sum::<f64>();
        self.events.extend_from_slice(idx);
    }
}

/// The error of a batch some of whose calls failed for good. When none wrote, it is the failure
/// itself (every refused event listed when those are the reason); otherwise a conflict naming the
/// events that were not applied, so that the client can resend exactly those.
fn partly_applied(wrote: usize, total: usize, left: Left, failure: Option<Error>) -> Error {
    let Left {
        mut unapplied,
        mut unknown,
        mut refused,
    } = left;
    refused.sort_by_key(|(i, _)| *i);
    unapplied.sort_unstable();
    if !unknown.is_empty() {
        // Resending these without their event ids could apply them twice: say so, not "resend".
        unknown.sort_unstable();
        let mut detail = format!(
            "the leaderboard backend did not answer in time for events {}",
            index_ranges(&unknown)
        );
        if !unapplied.is_empty() {
            detail.push_str(&format!(
                ", and events {} were not applied",
                index_ranges(&unapplied)
            ));
        }
        let cause = match failure {
            Some(Error::Unconfirmed { cause, .. }) => cause,
            Some(e) => e.to_string(),
            None => String::new(),
        };
        return Error::Unconfirmed { detail, cause };
    }
    if wrote == 0 {
        return match failure {
            Some(e) if refused.is_empty() => e,
            _ if !refused.is_empty() => Error::InvalidBatch(refused),
            _ => Error::Backend("a batch failed without a reason".into()),
        };
    }
    let why = match (refused.first(), &failure) {
        (Some((i, inv)), _) => format!(
            "a concurrent change to their boards came between this batch's check and its write \
             (events[{i}].{}: {})",
            inv.field, inv.message
        ),
        // What a client may read: no internal detail.
        (None, Some(Error::Unavailable(_))) => {
            "the batch was cut short: the leaderboard backend became unreachable".into()
        }
        (None, Some(Error::Backend(_))) => "the batch was cut short by an internal error".into(),
        (None, Some(e)) => format!("the batch was cut short: {e}"),
        (None, None) => "no reason given".into(),
    };
    Error::Conflict(format!(
        "{} of {total} events were not applied and the others were: {why}; resend events {}",
        unapplied.len(),
        index_ranges(&unapplied)
    ))
}

/// The events of a batch that an attempt left unapplied.
struct Left {
    /// Not applied: a failed call, or one never made.
    unapplied: Vec<usize>,
    /// Sent and not answered: applied or not, nobody can say.
    unknown: Vec<usize>,
    /// Refused, with the reason (also not applied).
    refused: Vec<(usize, Invalid)>,
}

/// A failed call whose failure leaves nothing written whether or not Redis answered (a read, a
/// replay step): out of reach is unavailable, an error reply a backend error.
pub(crate) fn unavailable(e: ExecError) -> Error {
    match e {
        ExecError::Unavailable(m) | ExecError::Unanswered(m) => Error::Unavailable(m),
        ExecError::Reply(m) => Error::Backend(m),
    }
}

/// A submit script's reason for refusing an event, `<field>: <detail>`, as the invalid input.
fn refusal(why: &str) -> Invalid {
    let (field, message) = why.split_once(": ").unwrap_or(("value", why));
    Invalid::new(field, message)
}

/// Sorted indexes as ranges: "0-4, 7, 9-10".
fn index_ranges(ix: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ix.len() {
        let mut j = i;
        while j + 1 < ix.len() && ix[j + 1] == ix[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        if j == i {
            out.push_str(&ix[i].to_string());
        } else {
            out.push_str(&format!("{}-{}", ix[i], ix[j]));
        }
        i = j + 1;
    }
    out
}

/// What a submit call answers (`ARGV[9]` of lua/submit.lua).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SubmitReply {
    /// One event's scores and ranks in every key it touched.
    Full,
    /// Counts and per-event flags.
    Count,
    /// Every event the call would refuse, writing nothing.
    Check,
    /// As `Count`, for a rebuild replaying the stored log: nothing is logged again (the sweep
    /// would offer those events back under the numbers Redis gave them during the replay).
    Replay,
}

impl SubmitReply {
    fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Count | Self::Replay => "count",
            Self::Check => "check",
        }
    }
}

/// How a failed script call is handled.
enum Next {
    Retry,
    Fail(Error),
}

const ATTEMPTS: usize = 5;

/// Most operations a duplicate's confirmation commits (see [`Engine::confirm_logged`]); a board
/// with more waiting for the store answers the duplicate 503 `unconfirmed`.
const CONFIRM_MAX: u64 = 50_000;

/// Members per coalesced standing read, at most: bounds how long one call holds Redis (~10 µs each
/// on a 1M-member key, so about a millisecond for a full call).
const STANDINGS_PER_CALL: usize = 128;

/// How long a board found undefined is answered "not found" without asking again: a board
/// another instance defines meanwhile is seen this much later at most.
const ABSENT_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Most boards remembered as undefined; past it the memory starts afresh (ids that clients make up
/// cannot grow it without bound).
const ABSENT_MAX: usize = 10_000;

/// Members per call of a lookup: at about 14 µs each on a 1M-member key, a millisecond a call.
const LOOKUP_PER_CALL: usize = 64;

/// What an event id stands for: a digest of the event's member, value and set of scopes (their
/// order and repetition aside), 16 hex digits. A retry of the event has the same print; another
/// event under the same id has another, and is refused (see lua/submit.lua).
pub fn event_print<'a>(member: &str, value: f64, scopes: impl Iterator<Item = &'a str>) -> String {
    use sha2::Digest;
    let mut scopes: Vec<&str> = scopes.filter(|s| !s.is_empty()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let mut h = sha2::Sha256::new();
    h.update(member.as_bytes());
    h.update(b"\n");
    h.update(fmt_num(value).as_bytes());
    for s in scopes {
        h.update(b"\n");
        h.update(s.as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn fmt_num(x: f64) -> String {
    // Debug keeps exponents short ("1e300") and round-trips exactly through Lua's tonumber.
    format!("{x:?}")
}

fn decode_stored(stored: f64, bits: u32) -> f64 {
    if bits == 0 {
        stored
    } else {
        (stored / 2f64.powi(bits as i32)).floor()
    }
}

fn bad_reply(what: &str, r: &Reply) -> Error {
    Error::Backend(format!("unexpected {what} reply: {r:?}"))
}

fn as_int(r: &Reply) -> Option<i64> {
    match r {
        Reply::Int(i) => Some(*i),
        Reply::Bulk(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_u64(r: &Reply) -> Option<u64> {
    as_int(r).and_then(|i| u64::try_from(i).ok())
}

fn as_f64(r: &Reply) -> Option<f64> {
    match r {
        Reply::Bulk(s) => s.parse().ok(),
        Reply::Int(i) => Some(*i as f64),
        _ => None,
    }
}

fn as_str(r: &Reply) -> Option<&str> {
    match r {
        Reply::Bulk(s) => Some(s),
        _ => None,
    }
}

fn as_array(r: &Reply) -> Option<&[Reply]> {
    match r {
        Reply::Array(a) => Some(a),
        _ => None,
    }
}

/// Single-member reads per (board, view), coalesced; each answers the key's total and its row.
type Standings = coalesce::Coalescer<(BoardId, View), Member, Result<(u64, Option<MemberRow>)>>;

/// Identical page reads, coalesced: every reader of one call gets a copy of its one answer.
type Pages = coalesce::Coalescer<PageKey, (), Result<Option<Page>>>;

/// What makes two page reads identical.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PageKey {
    board: BoardId,
    view: View,
    kind: &'static str,
    extra: Vec<String>,
    limit: Option<u32>,
}

/// Readers handed one page read's answer, at most: each gets a copy of the page, so this bounds the
/// copying one call's return does, not Redis' work.
const PAGE_READERS_PER_CALL: usize = 1024;

/// One member's row of a `read_members` reply.
struct MemberRow {
    stored: f64,
    score: f64,
    rank: u64,
    worse: u64,
    display_name: Option<String>,
    data: Option<String>,
}

/// One event, checked against its board and placed in its periods.
struct Prepared {
    member: Member,
    value: Score,
    event_id: Option<String>,
    at: i64,
    scopes: String,
    /// When the event was received (the call's time, or the logged time in a replay).
    now: i64,
    /// (slot, tick) per key the event touches.
    touch: Vec<(usize, u64)>,
}

/// One leaderboard key a chunk of events touches.
struct Slot {
    key: BoardKey,
    window: Window,
    /// `None` for the all-time window.
    period: Option<Period>,
    scope: Option<Scope>,
    /// When the key expires, Unix ms (0: never).
    expire: i64,
}

/// Boards whose cached definitions refused events of one batch, each once, with that definition.
#[derive(Default)]
struct Refusing<'a> {
    boards: Vec<(&'a BoardId, Arc<CachedDef>)>,
    seen: HashSet<&'a BoardId>,
}

impl<'a> Refusing<'a> {
    fn add(&mut self, board: &'a BoardId, def: &Arc<CachedDef>) {
        if self.seen.insert(board) {
            self.boards.push((board, def.clone()));
        }
    }

    fn is_empty(&self) -> bool {
        self.boards.is_empty()
    }
}

/// The keys a chunk of events touches.
#[derive(Default)]
struct Slots {
    keys: Vec<Slot>,
    /// Slots by period and scope, which name exactly one key (a period's id is unique within its
    /// window, and the all-time window has one period): most events of a chunk share their keys,
    /// and naming a key (several strings) costs more than finding it here.
    by_period: HashMap<Period, PeriodSlots>,
}

/// The slots of one period: the global board's and each scope's.
#[derive(Default)]
struct PeriodSlots {
    global: Option<usize>,
    scoped: HashMap<Scope, usize>,
}

impl Slots {
    /// The slot of the leaderboard of `board` for `period` and `scope`, added when new.
    fn slot(
        &mut self,
        keys: &Keys,
        board: &BoardId,
        period: Period,
        scope: Option<&Scope>,
        expire: i64,
    ) -> usize {
        let known = self.by_period.get(&period).and_then(|p| match scope {
            None => p.global,
            Some(s) => p.scoped.get(s).copied(),
        });
        if let Some(i) = known {
            return i;
        }
        let i = self.keys.len();
        let window = period.window();
        self.keys.push(Slot {
            key: keys.leaderboard(board, &period, scope),
            window,
            period: (window != Window::All).then_some(period),
            scope: scope.cloned(),
            expire,
        });
        let p = self.by_period.entry(period).or_default();
        match scope {
            None => p.global = Some(i),
            Some(s) => {
                p.scoped.insert(s.clone(), i);
            }
        }
        i
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

    fn log_flag(&self) -> String {
        if self.journal.is_some() { "1" } else { "0" }.into()
    }

    /// Hands operations Redis applied to the journal. In sync mode a store that cannot commit them
    /// fails the request, yet Redis holds them and its log keeps them for the sweep to store: the
    /// answer must not say they were not applied.
    async fn journal(&self, ops: Vec<LoggedOp>) -> Result<()> {
        match &self.journal {
            Some(j) if !ops.is_empty() => j.record(ops).await.map_err(|e| Error::Unconfirmed {
                detail: "the write was applied, but the durable store did not confirm it; it is \
                         stored once the store is back"
                    .into(),
                cause: e.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Before a duplicate is answered in sync mode: makes sure the operation it repeats is
    /// committed. The first acceptance of an event id may have been answered 503 `unconfirmed`
    /// (the store out of reach) and still be only in the board's Redis log, which keeps every
    /// operation until the store has it; a 200 for its retry must mean it is stored. Everything the
    /// log holds up to the board's current number is committed (offering stored operations again is
    /// harmless); an empty log, the usual case, costs one read.
    ///
    /// # Errors
    /// [`Error::Unconfirmed`] when that cannot be committed (or read) now.
    async fn confirm_logged(&self, board: &BoardId) -> Result<()> {
        match &self.journal {
            Some(j) if j.confirms() => {}
            _ => return Ok(()),
        }
        let unconfirmed = |cause: String| Error::Unconfirmed {
            detail: "the event was applied before, but the durable store has not confirmed it \
                     yet; resend it with the same event_id"
                .into(),
            cause,
        };
        let head = self
            .log_pending(board, 1)
            .await
            .map_err(|e| unconfirmed(e.to_string()))?;
        let Some(first) = head.first() else {
            return Ok(());
        };
        let upto = match self.redis_state(board).await {
            Ok(RedisState::Live(seq)) => seq,
            Ok(_) => return Err(unconfirmed("the board is being rebuilt".into())),
            Err(e) => return Err(unconfirmed(e.to_string())),
        };
        let span = upto.saturating_sub(first.seq) + 1;
        if span > CONFIRM_MAX {
            return Err(unconfirmed(format!(
                "{span} operations of the board wait for the store"
            )));
        }
        let mut ops = self
            .log_pending(board, span as usize)
            .await
            .map_err(|e| unconfirmed(e.to_string()))?;
        ops.retain(|o| o.seq <= upto);
        self.journal(ops).await
    }

    /// Stores what the journal still holds of answered writes; called at shutdown.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached.
    pub async fn flush_journal(&self) -> Result<()> {
        match &self.journal {
            Some(j) => j.flush().await,
            None => Ok(()),
        }
    }

    /// The executor the engine runs its scripts on.
    pub fn executor(&self) -> Arc<dyn Executor> {
        self.exec.clone()
    }

    /// The key formatter.
    pub fn keys(&self) -> &Keys {
        &self.keys
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
        let down = |e: ExecError| Error::Unavailable(e.to_string());
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
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// The backend's slowest recent commands.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it cannot be asked.
    pub async fn slowlog(&self) -> Result<Vec<String>> {
        self.exec
            .slowlog()
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    fn new_version(&self) -> String {
        let n = self.versions.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:x}", self.version_seed, n)
    }

    fn remember(&self, board: &BoardId, def: &Arc<CachedDef>) {
        self.absent
            .lock()
            .expect("absent boards poisoned")
            .remove(board);
        self.defs
            .write()
            .expect("definition cache poisoned")
            .insert(board.clone(), def.clone());
    }

    fn forget(&self, board: &BoardId) {
        self.absent
            .lock()
            .expect("absent boards poisoned")
            .remove(board);
        self.defs
            .write()
            .expect("definition cache poisoned")
            .remove(board);
    }

    /// Whether `board` was found undefined less than [`ABSENT_FOR`] ago.
    fn known_absent(&self, board: &BoardId) -> bool {
        self.absent
            .lock()
            .expect("absent boards poisoned")
            .get(board)
            .is_some_and(|at| at.elapsed() < ABSENT_FOR)
    }

    fn on_error(&self, board: &BoardId, e: ExecError) -> Next {
        let m = match e {
            ExecError::Unavailable(m) => return Next::Fail(Error::Unavailable(m)),
            ExecError::Unanswered(m) => return Next::Fail(Error::unanswered(m)),
            ExecError::Reply(m) => m,
        };
        if m.contains("RANKD_STALE") {
            self.stats.definition_stale.fetch_add(1, Ordering::Relaxed);
            self.forget(board);
            Next::Retry
        } else if m.contains("RANKD_NOBOARD") {
            self.forget(board);
            if self.journal.is_some() {
                // Look again: the store may know the board Redis lost.
                Next::Retry
            } else {
                Next::Fail(Error::BoardNotFound(board.clone()))
            }
        } else if m.contains("RANKD_RETRY") || m.contains("RANKD_EXISTS") {
            Next::Retry
        } else if let Some(rest) = m.split("RANKD_REUSED ").nth(1) {
            // "<event index> <event id>"
            let id = rest.split_once(' ').map_or("", |(_, id)| id);
            Next::Fail(Error::EventIdReused {
                field: "event_id".into(),
                event_id: id.trim_end().to_owned(),
            })
        } else if let Some(rest) = m.split("RANKD_RANGE ").nth(1) {
            // "<event index> <field>: <detail>"
            let detail = rest.split_once(' ').map_or(rest, |(_, d)| d);
            Next::Fail(Error::Invalid(refusal(detail)))
        } else {
            Next::Fail(Error::Backend(m))
        }
    }

    async fn fetch_def(&self, board: &BoardId) -> Result<Option<Arc<CachedDef>>> {
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

    fn parse_def(reply: &Reply) -> Result<Option<Arc<CachedDef>>> {
        let a = as_array(reply).ok_or_else(|| bad_reply("board_get", reply))?;
        match a {
            [Reply::Nil, ..] => Ok(None),
            [Reply::Bulk(v), Reply::Bulk(json), created] => {
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

    async fn definition(&self, board: &BoardId) -> Result<Arc<CachedDef>> {
        if let Some(d) = self
            .defs
            .read()
            .expect("definition cache poisoned")
            .get(board)
        {
            self.stats.definition_hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::CACHE_HITS, "cache" => "definitions").increment(1);
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
    async fn newer_def(
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

    fn rebuilding(board: &BoardId) -> Error {
        Error::Unavailable(format!(
            "board {board} is being rebuilt from the durable store"
        ))
    }

    /// The error for a board Redis does not hold: not found, unless the durable store holds it, in
    /// which case Redis lost it and a rebuild is under way.
    async fn missing(&self, board: &BoardId) -> Error {
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
    async fn call_board<C>(
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

    // ---- boards ------------------------------------------------------------------------------

    /// Creates a board, or updates it where that is safe (see [`BoardDef::check_update`]).
    /// Returns true when the board was created.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad definition or a refused change.
    pub async fn put_board(&self, board: &BoardId, def: BoardDef) -> Result<bool> {
        let def = def.validated()?;
        let json = serde_json::to_string(&def).map_err(|e| Error::Backend(e.to_string()))?;
        for _ in 0..ATTEMPTS {
            let current = self.fetch_def(board).await?;
            if current.is_none() && self.journal.is_some() {
                if let err @ Error::Unavailable(_) = self.missing(board).await {
                    return Err(err);
                }
            }
            if current
                .as_ref()
                .is_some_and(|c| c.version.starts_with(REBUILD_PREFIX))
            {
                return Err(Self::rebuilding(board));
            }
            let expected = match &current {
                Some(cur) => {
                    cur.def.check_update(&def)?;
                    cur.version.clone()
                }
                None => String::new(),
            };
            let version = self.new_version();
            let now = self.now_ms();
            let call = self.put_def_call(board, &expected, &version, &json, &self.log_flag(), now);
            match self.exec.eval(call).await {
                Ok(reply) => {
                    self.forget(board);
                    self.registry("add", board).await?;
                    let seq = as_array(&reply)
                        .and_then(|a| a.get(1))
                        .and_then(as_u64)
                        .unwrap_or(0);
                    if seq > 0 {
                        self.journal(vec![LoggedOp {
                            board: board.clone(),
                            seq,
                            recv_ms: now,
                            op: Op::Define {
                                version,
                                json: json.clone(),
                            },
                        }])
                        .await?;
                    }
                    return Ok(current.is_none());
                }
                Err(e) => match self.on_error(board, e) {
                    Next::Retry => continue,
                    Next::Fail(e) => return Err(e),
                },
            }
        }
        Err(Error::Conflict(format!("board {board} kept changing")))
    }

    /// The id of the durable store this Redis feeds; pairs it with `store` first when it feeds
    /// none (`None`: only reads), or whatever it feeds with `replace`. `None` when it is paired
    /// with none.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn store_pairing(
        &self,
        store: Option<&str>,
        replace: bool,
    ) -> Result<Option<String>> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::STORE_PAIR,
                keys: vec![self.keys.store_pairing()],
                args: vec![
                    store.unwrap_or_default().to_owned(),
                    if replace { "1" } else { "0" }.to_owned(),
                ],
            })
            .await
            .map_err(unavailable)?;
        Ok(as_str(&reply)
            .filter(|id| !id.is_empty())
            .map(str::to_owned))
    }

    async fn registry(&self, op: &str, board: &BoardId) -> Result<Reply> {
        self.exec
            .eval(Call {
                script: &scripts::REGISTRY,
                keys: vec![self.keys.registry()],
                args: vec![op.to_owned(), board.to_string()],
            })
            .await
            .map_err(|e| match e {
                ExecError::Unavailable(m) => Error::Unavailable(m),
                ExecError::Unanswered(m) => Error::unanswered(m),
                ExecError::Reply(m) => Error::Backend(m),
            })
    }

    /// A board's definition, read from Redis (not from the cache).
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn board(&self, board: &BoardId) -> Result<BoardInfo> {
        let d = self
            .fetch_def(board)
            .await?
            .ok_or_else(|| Error::BoardNotFound(board.clone()))?;
        Ok(BoardInfo {
            board: board.clone(),
            definition: d.def.clone(),
            created_at_ms: d.created_ms,
        })
    }

    /// Every defined board, by id.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn boards(&self) -> Result<Vec<BoardInfo>> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::REGISTRY,
                keys: vec![self.keys.registry()],
                args: vec!["list".into()],
            })
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let mut ids: Vec<BoardId> = as_array(&reply)
            .ok_or_else(|| bad_reply("registry", &reply))?
            .iter()
            .filter_map(|r| as_str(r).and_then(|s| BoardId::parse(s).ok()))
            .collect();
        ids.sort();
        let calls = ids
            .iter()
            .map(|b| Call {
                script: &scripts::BOARD_GET,
                keys: vec![self.keys.definition(b)],
                args: vec![],
            })
            .collect();
        let replies = self
            .exec
            .eval_many(calls)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let mut out = Vec::with_capacity(ids.len());
        for (board, r) in ids.into_iter().zip(replies) {
            let r = r.map_err(|e| Error::Backend(e.to_string()))?;
            // A board deleted while it was listed: its id may linger in the registry for a moment.
            if let Some(d) = Self::parse_def(&r)? {
                out.push(BoardInfo {
                    board,
                    definition: d.def.clone(),
                    created_at_ms: d.created_ms,
                });
            }
        }
        Ok(out)
    }

    /// Bytes a board's keys take in the backend (Redis samples big sorted sets), or `None` where the
    /// backend cannot say.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn board_memory(&self, board: &BoardId) -> Result<Option<u64>> {
        let zsets = self.live_zsets(board, self.now_ms()).await?;
        self.exec
            .memory_usage(&self.every_key(board, &zsets))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// Every key a board owns, given its live leaderboard sets: its own keys first (definition,
    /// dedupe, key index, display data, event prints, sequence, log), then each leaderboard with its
    /// dense indexes.
    fn every_key(&self, board: &BoardId, zsets: &[String]) -> Vec<String> {
        let mut keys = vec![
            self.keys.definition(board),
            self.keys.dedupe(board),
            self.keys.index(board),
            self.keys.display_names(board),
            self.keys.display_data(board),
            self.keys.event_prints(board),
            self.keys.sequence(board),
            self.keys.log(board),
        ];
        for z in zsets {
            if let Some((k, _)) = self.keys.from_zset(board, z) {
                keys.extend([k.zset, k.distinct_values, k.distinct_counts]);
            }
        }
        keys
    }

    async fn live_zsets(&self, board: &BoardId, now: i64) -> Result<Vec<String>> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::KEY_INDEX,
                keys: vec![self.keys.index(board)],
                args: vec![now.to_string()],
            })
            .await
            .map_err(|e| match e {
                ExecError::Unavailable(m) => Error::Unavailable(m),
                ExecError::Unanswered(m) => Error::unanswered(m),
                ExecError::Reply(m) => Error::Backend(m),
            })?;
        Ok(as_array(&reply)
            .ok_or_else(|| bad_reply("key_index", &reply))?
            .iter()
            .filter_map(|r| as_str(r).map(str::to_owned))
            .collect())
    }

    /// Deletes a board: its definition and every key it owns.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn delete_board(&self, board: &BoardId) -> Result<()> {
        for _ in 0..ATTEMPTS {
            let Some(def) = self.fetch_def(board).await? else {
                // Redis may have lost a board the store still holds: deleting it is still a delete.
                if let Some(j) = &self.journal {
                    if j.board_deleting(board).await? {
                        j.board_deleted(board).await?;
                        return Ok(());
                    }
                }
                return Err(Error::BoardNotFound(board.clone()));
            };
            if def.version.starts_with(REBUILD_PREFIX) {
                return Err(Self::rebuilding(board));
            }
            if let Some(j) = &self.journal {
                // The tombstone makes the deletion durable before any key goes: from here on the
                // board is deleted, whatever the script meets (see `finish_delete`).
                j.board_deleting(board).await?;
            }
            let now = self.now_ms();
            let zsets = self.live_zsets(board, now).await?;
            let keys = self.every_key(board, &zsets);
            let mut args = vec![def.version.clone(), now.to_string()];
            args.extend(zsets);
            match self
                .exec
                .eval(Call {
                    script: &scripts::DELETE_BOARD,
                    keys,
                    args,
                })
                .await
            {
                Ok(_) => {
                    self.forget(board);
                    if let Some(j) = &self.journal {
                        j.board_deleted(board).await?;
                    }
                    self.registry("remove", board).await?;
                    // Defined again meanwhile by someone else: keep it listed.
                    if self.fetch_def(board).await?.is_some() {
                        self.registry("add", board).await?;
                    }
                    return Ok(());
                }
                Err(e) => match self.on_error(board, e) {
                    Next::Retry => continue,
                    Next::Fail(_) if self.journal.is_some() => {
                        return self.finish_delete(board).await
                    }
                    Next::Fail(e) => return Err(e),
                },
            }
        }
        if self.journal.is_some() {
            return self.finish_delete(board).await;
        }
        Err(Error::Conflict(format!("board {board} kept changing")))
    }

    /// Ends a deletion the store has recorded (its tombstone is committed) when the script could
    /// not: the board is deleted either way, since the store's check would finish it within
    /// seconds, so the keys go now, as that check removes them, rather than answer that nothing
    /// happened while writes acknowledged meanwhile are about to vanish.
    ///
    /// # Errors
    /// [`Error::Unconfirmed`] when Redis cannot be reached: the deletion completes once it can.
    async fn finish_delete(&self, board: &BoardId) -> Result<()> {
        let done = async {
            self.discard(board).await?;
            if let Some(j) = &self.journal {
                j.board_deleted(board).await?;
            }
            self.registry("remove", board).await?;
            Ok::<_, Error>(())
        };
        done.await.map_err(|e| Error::Unconfirmed {
            detail: "the board's deletion is recorded, and completes once the leaderboard \
                     backend answers"
                .into(),
            cause: e.to_string(),
        })
    }

    // ---- writes ------------------------------------------------------------------------------

    fn prepare(
        &self,
        board: &BoardId,
        def: &BoardDef,
        ev: &Submit,
        now: i64,
        slots: &mut Slots,
    ) -> Result<Prepared, Invalid> {
        def.check_value("value", ev.value)?;
        let at = ev.at_ms.unwrap_or(now);
        let max_future = self.config.max_future.as_millis() as i64;
        if at > now + max_future {
            return Err(Invalid::new(
                "at",
                format!(
                    "must not lie more than {} s in the future",
                    max_future / 1000
                ),
            ));
        }
        let mut touch = Vec::with_capacity(def.windows.len() * (1 + ev.scopes.len()));
        for &window in &def.windows {
            let period =
                Period::containing(window, at).map_err(|e| Invalid::from(e).renamed("at"))?;
            let expire = period.expires_at_ms(def.retention_periods).unwrap_or(0);
            if window != Window::All && expire <= now {
                return Err(Invalid::new(
                    "at",
                    format!(
                        "falls in the {window} period {} whose keys expired (the board keeps {} closed periods)",
                        period.id(),
                        def.retention_periods
                    ),
                ));
            }
            let tick = if def.tie_break == TieBreak::First {
                period
                    .tick(at)
                    .map_err(|e| Invalid::from(e).renamed("at"))?
            } else {
                0
            };
            for scope in std::iter::once(None).chain(ev.scopes.iter().map(Some)) {
                touch.push((slots.slot(&self.keys, board, period, scope, expire), tick));
            }
        }
        Ok(Prepared {
            member: ev.member.clone(),
            value: ev.value,
            event_id: ev.event_id.as_ref().map(|e| e.to_string()),
            at,
            now,
            scopes: ev
                .scopes
                .iter()
                .map(Scope::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            touch,
        })
    }

    fn submit_call(
        &self,
        board: &BoardId,
        d: &CachedDef,
        slots: &Slots,
        events: &[Prepared],
        reply: SubmitReply,
        now: i64,
    ) -> Call {
        let def = &d.def;
        let dense = def.rank_mode == RankMode::Dense;
        let mut keys = vec![
            self.keys.definition(board),
            self.keys.dedupe(board),
            self.keys.index(board),
            self.keys.sequence(board),
            self.keys.log(board),
        ];
        let mut args = vec![
            d.version.clone(),
            now.to_string(),
            self.config.dedupe_window.as_millis().to_string(),
            def.policy.as_str().into(),
            def.order.as_str().into(),
            def.rank_mode.as_str().into(),
            def.score_bound().map_or_else(|| "0".into(), fmt_num),
            def.max_members.unwrap_or(0).to_string(),
            reply.as_str().into(),
            if reply == SubmitReply::Replay {
                "0".into()
            } else {
                self.log_flag()
            },
            slots.keys.len().to_string(),
        ];
        for slot in &slots.keys {
            keys.push(slot.key.zset.clone());
            if dense {
                keys.push(slot.key.distinct_values.clone());
                keys.push(slot.key.distinct_counts.clone());
            }
            args.push(slot.expire.to_string());
            args.push(def.tick_bits(slot.window).to_string());
        }
        args.push(events.len().to_string());
        for ev in events {
            args.push(ev.member.to_string());
            args.push(fmt_num(ev.value.get()));
            args.push(ev.event_id.clone().unwrap_or_default());
            args.push(ev.at.to_string());
            args.push(ev.scopes.clone());
            args.push(ev.now.to_string());
            args.push(ev.touch.len().to_string());
            for (slot, tick) in &ev.touch {
                args.push((slot + 1).to_string());
                args.push(tick.to_string());
            }
            args.push(match &ev.event_id {
                Some(_) => event_print(ev.member.as_str(), ev.value.get(), ev.scopes.split(' ')),
                None => String::new(),
            });
        }
        keys.push(self.keys.event_prints(board));
        Call {
            script: &scripts::SUBMIT,
            keys,
            args,
        }
    }

    /// Applies one score event to every (window × scope) key of its board in one atomic call.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a value or time the board cannot take, [`Error::BoardNotFound`].
    #[tracing::instrument(skip_all, fields(board = %ev.board))]
    pub async fn submit(&self, ev: &Submit) -> Result<Submitted> {
        let now = self.now_ms();
        let (d, reply, slots) = self
            .call_board(&ev.board, |d| {
                let mut slots = Slots::default();
                let p = self.prepare(&ev.board, &d.def, ev, now, &mut slots)?;
                let call = self.submit_call(
                    &ev.board,
                    d,
                    &slots,
                    std::slice::from_ref(&p),
                    SubmitReply::Full,
                    now,
                );
                Ok((call, slots))
            })
            .await?;
        let bad = || bad_reply("submit", &reply);
        let a = as_array(&reply).ok_or_else(bad)?;
        let (duplicate, rows, seq) = match a {
            [dup, Reply::Array(rows), seq] => {
                (as_int(dup) == Some(1), rows, as_u64(seq).unwrap_or(0))
            }
            _ => return Err(bad()),
        };
        if rows.len() != slots.keys.len() {
            return Err(bad());
        }
        let mut results = Vec::with_capacity(rows.len());
        for (row, slot) in rows.iter().zip(&slots.keys) {
            let cells = as_array(row).ok_or_else(bad)?;
            let [score, rank, prev] = cells else {
                return Err(bad());
            };
            results.push(KeyResult {
                window: slot.window,
                period: slot.period.map(|p| p.id()),
                scope: slot.scope.clone(),
                score: as_f64(score).map(|s| decode_stored(s, d.def.tick_bits(slot.window))),
                rank: as_u64(rank),
                previous_rank: as_u64(prev),
            });
        }
        if seq > 0 {
            self.journal(vec![LoggedOp {
                board: ev.board.clone(),
                seq,
                recv_ms: now,
                op: ev.logged(now),
            }])
            .await?;
        }
        if duplicate {
            self.confirm_logged(&ev.board).await?;
        }
        Ok(Submitted {
            member: ev.member.clone(),
            duplicate,
            results,
        })
    }

    /// Checks events of a batch against their boards without writing anything: every event that
    /// names an undefined board, a value its board cannot hold or a time outside its periods, with
    /// the index it was given. Events refused by a cached definition are judged again should
    /// another instance have changed the board since (see [`Engine::newer_def`]).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when definitions cannot be read.
    pub async fn check_batch(&self, events: &[(usize, Submit)]) -> Result<Vec<(usize, Invalid)>> {
        let now = self.now_ms();
        let mut rechecked = false;
        loop {
            let mut defs: HashMap<&BoardId, Option<Arc<CachedDef>>> = HashMap::new();
            let mut out = Vec::new();
            let mut refusing = Refusing::default();
            for (i, ev) in events {
                if !defs.contains_key(&ev.board) {
                    let d = match self.definition(&ev.board).await {
                        Ok(d) => Some(d),
                        Err(Error::BoardNotFound(_)) => None,
                        Err(e) => return Err(e),
                    };
                    defs.insert(&ev.board, d);
                }
                match &defs[&ev.board] {
                    None => out.push((
                        *i,
                        Invalid::new("board", format!("board {} is not defined", ev.board)),
                    )),
                    Some(d) => {
                        if let Err(e) =
                            self.prepare(&ev.board, &d.def, ev, now, &mut Slots::default())
                        {
                            out.push((*i, e));
                            refusing.add(&ev.board, d);
                        }
                    }
                }
            }
            if rechecked || refusing.is_empty() || !self.changed_since_cached(refusing).await? {
                return Ok(out);
            }
            rechecked = true;
        }
    }

    /// Whether any board whose cached definition refused an event has another definition now
    /// (then cached, or forgotten when the board is gone).
    async fn changed_since_cached(&self, refusing: Refusing<'_>) -> Result<bool> {
        let mut changed = false;
        for (board, cached) in refusing.boards {
            match self.newer_def(board, &cached).await {
                Ok(Some(_)) | Err(Error::BoardNotFound(_)) => changed = true,
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// Applies many events, possibly of many boards, as if submitted one by one in the order given,
    /// in one pipeline of script calls (each a chunk of one board's events).
    ///
    /// The whole batch is checked before anything is written: any invalid event fails it with
    /// [`Error::InvalidBatch`], listing every one. That includes sums that would leave a board's
    /// exact range, which only the current scores tell: a batch of several calls has them checked
    /// first (see [`Engine::refused_sums`]), since each call is atomic but the pipeline is not.
    /// Should a concurrent write still make a call fail after others were written, what was
    /// written is journaled and the answer is a [`Error::Conflict`] naming the events not applied.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`], [`Error::Invalid`] naming `events` when there are too many,
    /// [`Error::Conflict`] for a batch only partly applied.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn submit_batch(&self, events: &[Submit]) -> Result<BatchOutcome> {
        if events.len() > MAX_BATCH {
            return Err(Invalid::new(
                "events",
                format!("at most {MAX_BATCH} events per batch, got {}", events.len()),
            )
            .into());
        }
        let now = self.now_ms();
        // Events by board, in order.
        let mut order: Vec<BoardId> = Vec::new();
        let mut by_board: HashMap<BoardId, Vec<usize>> = HashMap::new();
        for (i, ev) in events.iter().enumerate() {
            by_board
                .entry(ev.board.clone())
                .or_insert_with(|| {
                    order.push(ev.board.clone());
                    Vec::new()
                })
                .push(i);
        }
        let mut pending: Vec<(BoardId, Vec<usize>)> = Vec::new();
        for b in &order {
            for chunk in by_board[b].chunks(self.config.batch_chunk.max(1)) {
                pending.push((b.clone(), chunk.to_vec()));
            }
        }
        let mut outcome = BatchOutcome::default();
        let mut logged: Vec<LoggedOp> = Vec::new();
        // Boards where events were answered as duplicates: see Engine::confirm_logged.
        let mut repeated: Vec<BoardId> = Vec::new();
        // Calls that wrote, over every attempt.
        let mut wrote = 0usize;
        let mut rechecked = false;
        for _ in 0..ATTEMPTS {
            let mut defs: HashMap<BoardId, Arc<CachedDef>> = HashMap::new();
            let mut invalid: Vec<(usize, Invalid)> = Vec::new();
            for (b, idx) in &pending {
                if !defs.contains_key(b) {
                    match self.definition(b).await {
                        Ok(d) => {
                            defs.insert(b.clone(), d);
                        }
                        Err(Error::BoardNotFound(_)) => {}
                        Err(e) => {
                            return Err(self
                                .cut_short(e, wrote, events.len(), &pending, logged)
                                .await)
                        }
                    }
                }
                if !defs.contains_key(b) {
                    let why = || Invalid::new("board", format!("board {b} is not defined"));
                    invalid.extend(idx.iter().map(|&i| (i, why())));
                }
            }
            let mut calls = Vec::with_capacity(pending.len());
            // Per board whose events add up: the keys its calls touch, and what its events add.
            let mut sums: Vec<SumSpan> = Vec::new();
            // Checked while nothing is written yet: the whole batch is still to come.
            let several = wrote == 0 && pending.len() > 1;
            let mut refusing = Refusing::default();
            for (b, idx) in &pending {
                let Some(d) = defs.get(b) else { continue };
                let mut slots = Slots::default();
                let mut prepared = Vec::with_capacity(idx.len());
                for &i in idx {
                    match self.prepare(b, &d.def, &events[i], now, &mut slots) {
                        Ok(p) => prepared.push(p),
                        Err(e) => {
                            invalid.push((i, e));
                            refusing.add(b, d);
                        }
                    }
                }
                if several && d.def.policy == Policy::Incr {
                    let span = match sums.iter_mut().position(|s| &s.board == b) {
                        Some(at) => &mut sums[at],
                        None => {
                            sums.push(SumSpan::new(b.clone(), d.clone()));
                            sums.last_mut().expect("just pushed")
                        }
                    };
                    span.add(&slots, &prepared, idx);
                }
                calls.push(self.submit_call(b, d, &slots, &prepared, SubmitReply::Count, now));
            }
            if !invalid.is_empty() && !rechecked && !refusing.is_empty() {
                rechecked = true;
                match self.changed_since_cached(refusing).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        return Err(self
                            .cut_short(e, wrote, events.len(), &pending, logged)
                            .await)
                    }
                }
            }
            if !invalid.is_empty() {
                invalid.sort_by_key(|(i, _)| *i);
                let e = Error::InvalidBatch(invalid);
                return Err(self
                    .cut_short(e, wrote, events.len(), &pending, logged)
                    .await);
            }
            if several {
                if let Some(e) = self.reused_ids(events, &pending, now).await? {
                    return Err(e);
                }
                let refused = self.refused_sums(sums, events, now).await?;
                if !refused.is_empty() {
                    return Err(Error::InvalidBatch(refused));
                }
            }
            let results = match self.exec.eval_many(calls).await {
                Ok(r) => r,
                // A backend that cannot say which calls ran: each may have.
                Err(ExecError::Unanswered(m)) => {
                    self.journal(logged).await?;
                    let unknown = pending
                        .iter()
                        .flat_map(|(_, i)| i.iter().copied())
                        .collect();
                    return Err(partly_applied(
                        wrote,
                        events.len(),
                        Left {
                            unapplied: Vec::new(),
                            unknown,
                            refused: Vec::new(),
                        },
                        Some(Error::Unavailable(m)),
                    ));
                }
                Err(e) => {
                    let e = Error::Unavailable(e.to_string());
                    return Err(self
                        .cut_short(e, wrote, events.len(), &pending, logged)
                        .await);
                }
            };
            let mut retry = Vec::new();
            // Calls that failed for good: the events they held, and the first reason.
            let mut unapplied: Vec<usize> = Vec::new();
            let mut refused: Vec<(usize, Invalid)> = Vec::new();
            let mut failure: Option<Error> = None;
            // Calls sent and not answered: the events they held may or may not have been applied.
            let mut unknown: Vec<usize> = Vec::new();
            for ((b, idx), r) in pending.into_iter().zip(results) {
                match r {
                    Ok(reply) => match as_array(&reply) {
                        Some([acc, dup, first, flags]) => {
                            wrote += 1;
                            outcome.accepted += as_u64(acc).unwrap_or(0);
                            let dups = as_u64(dup).unwrap_or(0);
                            outcome.duplicates += dups;
                            if dups > 0 && !repeated.contains(&b) {
                                repeated.push(b.clone());
                            }
                            let first = as_u64(first).unwrap_or(0);
                            if first > 0 {
                                let flags = as_str(flags).unwrap_or_default().as_bytes();
                                let accepted = idx.iter().zip(flags).filter(|(_, f)| **f == b'1');
                                for (n, (&i, _)) in accepted.enumerate() {
                                    let ev = &events[i];
                                    logged.push(LoggedOp {
                                        board: b.clone(),
                                        seq: first + n as u64,
                                        recv_ms: now,
                                        op: ev.logged(now),
                                    });
                                }
                            }
                        }
                        _ => {
                            failure.get_or_insert_with(|| bad_reply("submit", &reply));
                            unapplied.extend(&idx);
                        }
                    },
                    Err(e) => match self.on_error(&b, e.clone()) {
                        Next::Retry => retry.push((b, idx)),
                        Next::Fail(Error::Invalid(inv)) => {
                            // The script names the event by its index within the chunk.
                            let local = match &e {
                                ExecError::Reply(m) => m
                                    .split("RANKD_RANGE ")
                                    .nth(1)
                                    .and_then(|r| r.split(' ').next())
                                    .and_then(|n| n.parse::<usize>().ok())
                                    .unwrap_or(0),
                                ExecError::Unavailable(_) | ExecError::Unanswered(_) => 0,
                            };
                            refused.push((idx.get(local).copied().unwrap_or(idx[0]), inv));
                            unapplied.extend(&idx);
                        }
                        Next::Fail(e @ Error::Unconfirmed { .. }) => {
                            failure = Some(e);
                            unknown.extend(&idx);
                        }
                        Next::Fail(Error::EventIdReused { event_id, .. }) => {
                            // The script names the event by its index within the chunk.
                            let local = match &e {
                                ExecError::Reply(m) => m
                                    .split("RANKD_REUSED ")
                                    .nth(1)
                                    .and_then(|r| r.split(' ').next())
                                    .and_then(|n| n.parse::<usize>().ok())
                                    .unwrap_or(0),
                                ExecError::Unavailable(_) | ExecError::Unanswered(_) => 0,
                            };
                            let i = idx.get(local).copied().unwrap_or(idx[0]);
                            failure.get_or_insert(Error::EventIdReused {
                                field: format!("events[{i}].event_id"),
                                event_id,
                            });
                            unapplied.extend(&idx);
                        }
                        Next::Fail(e) => {
                            failure.get_or_insert(e);
                            unapplied.extend(&idx);
                        }
                    },
                }
            }
            if failure.is_none() && refused.is_empty() && retry.is_empty() {
                self.journal(logged).await?;
                for b in &repeated {
                    self.confirm_logged(b).await?;
                }
                return Ok(outcome);
            }
            if failure.is_some() || !refused.is_empty() {
                // Whatever was written stays written, and the durable log must hold it too.
                self.journal(logged).await?;
                unapplied.extend(retry.into_iter().flat_map(|(_, idx)| idx));
                return Err(partly_applied(
                    wrote,
                    events.len(),
                    Left {
                        unapplied,
                        unknown,
                        refused,
                    },
                    failure,
                ));
            }
            pending = retry;
        }
        self.journal(logged).await?;
        Err(Error::Conflict(format!(
            "boards of this batch kept changing; {}",
            if wrote == 0 {
                "nothing was written".to_owned()
            } else {
                format!(
                    "{} of {} events were applied",
                    outcome.accepted + outcome.duplicates,
                    events.len()
                )
            }
        )))
    }

    /// Ends a batch that stopped with `e` on an attempt after earlier attempts wrote `wrote`
    /// calls: what was written is journaled, and the answer names the events of `pending` as not
    /// applied rather than claim that nothing was. With nothing written, `e` is the answer.
    async fn cut_short(
        &self,
        e: Error,
        wrote: usize,
        total: usize,
        pending: &[(BoardId, Vec<usize>)],
        logged: Vec<LoggedOp>,
    ) -> Error {
        if wrote == 0 {
            return e;
        }
        if let Err(j) = self.journal(logged).await {
            return j;
        }
        let unapplied = pending.iter().flat_map(|(_, idx)| idx.clone()).collect();
        let (refused, failure) = match e {
            Error::InvalidBatch(list) => (list, None),
            e => (Vec::new(), Some(e)),
        };
        partly_applied(
            wrote,
            total,
            Left {
                unapplied,
                unknown: Vec::new(),
                refused,
            },
            failure,
        )
    }

    /// Finds, before anything is written, the events of a batch of several calls whose sums would
    /// leave their board's exact range: [`Engine::submit_batch`] must not write some calls and
    /// then have another refused. A board's events are cleared at once when the largest |value|
    /// its keys hold plus every |value| the batch adds stays in range (one cheap read per board,
    /// lua/score_span.lua); otherwise all of its events are checked in one call that writes
    /// nothing (lua/submit.lua in check mode), each as if the ones before it were applied.
    /// Finds, before anything is written, the first event of a batch of several calls whose id
    /// stands for another event: one its board remembers with another print, or an earlier event of
    /// the batch carries with another (see [`event_print`]). Each call checks its own events as it
    /// runs, but a later call's refusal would come after earlier calls wrote.
    async fn reused_ids(
        &self,
        events: &[Submit],
        pending: &[(BoardId, Vec<usize>)],
        now: i64,
    ) -> Result<Option<Error>> {
        // Per board, each id's first print in the batch, in order of first use.
        let mut claims: Vec<(&BoardId, Vec<(&str, String)>)> = Vec::new();
        // Where each (board, id) stands in `claims`: found in constant time, as a batch may carry
        // thousands of ids.
        let mut claimed: HashMap<(&BoardId, &str), (usize, usize)> = HashMap::new();
        let mut first: Option<(usize, &str)> = None;
        for (b, idx) in pending {
            let at = match claims.iter().position(|(cb, _)| *cb == b) {
                Some(at) => at,
                None => {
                    claims.push((b, Vec::new()));
                    claims.len() - 1
                }
            };
            for &i in idx {
                let ev = &events[i];
                let Some(id) = ev.event_id.as_ref().map(|id| id.as_str()) else {
                    continue;
                };
                let print = event_print(
                    ev.member.as_str(),
                    ev.value.get(),
                    ev.scopes.iter().map(Scope::as_str),
                );
                match claimed.get(&(b, id)) {
                    Some(&(a, n)) if claims[a].1[n].1 != print => {
                        if first.is_none_or(|(f, _)| i < f) {
                            first = Some((i, id));
                        }
                    }
                    Some(_) => {}
                    None => {
                        claimed.insert((b, id), (at, claims[at].1.len()));
                        claims[at].1.push((id, print));
                    }
                }
            }
        }
        claims.retain(|(_, ids)| !ids.is_empty());
        let calls = claims
            .iter()
            .map(|(b, ids)| Call {
                script: &scripts::DEDUPE_GET,
                keys: vec![self.keys.dedupe(b), self.keys.event_prints(b)],
                args: std::iter::once(now.to_string())
                    .chain(ids.iter().map(|(id, _)| (*id).to_owned()))
                    .collect(),
            })
            .collect();
        let replies = self.exec.eval_many(calls).await.map_err(unavailable)?;
        for ((b, ids), r) in claims.iter().zip(replies) {
            // A read: nothing was written either way.
            let reply = r.map_err(unavailable)?;
            let known = as_array(&reply).ok_or_else(|| bad_reply("dedupe_get", &reply))?;
            for ((id, print), theirs) in ids.iter().zip(known) {
                let theirs = as_str(theirs).unwrap_or_default();
                if theirs.is_empty() || theirs == print {
                    continue;
                }
                // The first event of the board carrying the id is refused.
                let i = pending
                    .iter()
                    .filter(|(pb, _)| pb == *b)
                    .flat_map(|(_, idx)| idx.iter().copied())
                    .find(|&i| {
                        events[i]
                            .event_id
                            .as_ref()
                            .is_some_and(|e| e.as_str() == *id)
                    })
                    .unwrap_or(0);
                if first.is_none_or(|(f, _)| i < f) {
                    first = Some((i, id));
                }
            }
        }
        Ok(first.map(|(i, id)| Error::EventIdReused {
            field: format!("events[{i}].event_id"),
            event_id: id.to_owned(),
        }))
    }

    async fn refused_sums(
        &self,
        sums: Vec<SumSpan>,
        events: &[Submit],
        now: i64,
    ) -> Result<Vec<(usize, Invalid)>> {
        if sums.is_empty() {
            return Ok(Vec::new());
        }
        let spans = sums
            .iter()
            .map(|s| Call {
                script: &scripts::SCORE_SPAN,
                keys: s.keys.clone(),
                args: s.bits.clone(),
            })
            .collect();
        let held = self
            .exec
            .eval_many(spans)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let mut checks = Vec::new();
        let mut checked = Vec::new();
        for (s, r) in sums.into_iter().zip(held) {
            let most = match r {
                Ok(reply) => as_f64(&reply).ok_or_else(|| bad_reply("score_span", &reply))?,
                // A read: nothing was written either way.
                Err(ExecError::Unavailable(m) | ExecError::Unanswered(m)) => {
                    return Err(Error::Unavailable(m))
                }
                Err(ExecError::Reply(m)) => return Err(Error::Backend(m)),
            };
            let bound = s.def.def.score_bound().unwrap_or(f64::MAX);
            let reach = most + s.added;
            if reach.is_finite() && reach <= bound {
                continue;
            }
            let mut slots = Slots::default();
            let mut prepared = Vec::with_capacity(s.events.len());
            for &i in &s.events {
                prepared.push(self.prepare(&s.board, &s.def.def, &events[i], now, &mut slots)?);
            }
            checks.push(self.submit_call(
                &s.board,
                &s.def,
                &slots,
                &prepared,
                SubmitReply::Check,
                now,
            ));
            checked.push(s.events);
        }
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self
            .exec
            .eval_many(checks)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let mut refused = Vec::new();
        for (idx, r) in checked.into_iter().zip(replies) {
            let reply = match r {
                Ok(reply) => reply,
                // Check mode writes nothing, answered or not.
                Err(ExecError::Unavailable(m) | ExecError::Unanswered(m)) => {
                    return Err(Error::Unavailable(m))
                }
                // A definition changed meanwhile: the writes will find out and retry.
                Err(ExecError::Reply(_)) => continue,
            };
            let list = as_array(&reply).ok_or_else(|| bad_reply("submit check", &reply))?;
            for pair in list.chunks(2) {
                let [at, why] = pair else {
                    return Err(bad_reply("submit check", &reply));
                };
                let local = as_u64(at).ok_or_else(|| bad_reply("submit check", &reply))?;
                let why = refusal(as_str(why).unwrap_or_default());
                let i = idx
                    .get(local as usize)
                    .copied()
                    .ok_or_else(|| bad_reply("submit check", &reply))?;
                refused.push((i, why));
            }
        }
        refused.sort_by_key(|(i, _)| *i);
        Ok(refused)
    }

    /// The call that removes `member` from every live key of a board, as of `now`.
    async fn remove_call(
        &self,
        board: &BoardId,
        d: &CachedDef,
        member: &Member,
        now: i64,
        log: &str,
    ) -> Result<Call> {
        let zsets = self.live_zsets(board, now).await?;
        let dense = d.def.rank_mode == RankMode::Dense;
        let mut keys = vec![
            self.keys.definition(board),
            self.keys.index(board),
            self.keys.display_names(board),
            self.keys.display_data(board),
            self.keys.sequence(board),
            self.keys.log(board),
        ];
        let mut args = vec![
            d.version.clone(),
            now.to_string(),
            d.def.rank_mode.as_str().into(),
            member.to_string(),
            log.to_owned(),
        ];
        for z in &zsets {
            let (k, window) = self
                .keys
                .from_zset(board, z)
                .ok_or_else(|| Error::Backend(format!("key index holds a foreign key {z}")))?;
            keys.push(k.zset);
            if dense {
                keys.push(k.distinct_values);
                keys.push(k.distinct_counts);
            }
            args.push(d.def.tick_bits(window).to_string());
        }
        Ok(Call {
            script: &scripts::REMOVE_MEMBER,
            keys,
            args,
        })
    }

    /// Removes a member from every key of a board, with its display data. Returns how many
    /// leaderboard keys held the member.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn remove_member(&self, board: &BoardId, member: &Member) -> Result<u64> {
        for _ in 0..ATTEMPTS {
            let d = self.definition(board).await?;
            let now = self.now_ms();
            let call = self
                .remove_call(board, &d, member, now, &self.log_flag())
                .await?;
            match self.exec.eval(call).await {
                Ok(r) => {
                    let (removed, seq) = match as_array(&r) {
                        Some([n, seq]) => (as_u64(n), as_u64(seq).unwrap_or(0)),
                        _ => (None, 0),
                    };
                    let removed = removed.ok_or_else(|| bad_reply("remove_member", &r))?;
                    if seq > 0 {
                        self.journal(vec![LoggedOp {
                            board: board.clone(),
                            seq,
                            recv_ms: now,
                            op: Op::Remove {
                                member: member.to_string(),
                            },
                        }])
                        .await?;
                    }
                    return Ok(removed);
                }
                Err(e) => match self.on_error(board, e) {
                    Next::Retry => continue,
                    Next::Fail(e) => return Err(e),
                },
            }
        }
        Err(Error::Conflict(format!("board {board} kept changing")))
    }

    /// Sets a member's display data (replacing what was there; absent fields are cleared).
    ///
    /// # Errors
    /// [`Error::Invalid`] for data over the limits, [`Error::BoardNotFound`].
    pub async fn put_display(
        &self,
        board: &BoardId,
        member: &Member,
        display: Display,
    ) -> Result<()> {
        let display = display.validated()?;
        let data = match &display.data {
            Some(d) => serde_json::to_string(d).map_err(|e| Error::Backend(e.to_string()))?,
            None => String::new(),
        };
        let now = self.now_ms();
        let (_, reply, ()) = self
            .call_board(board, |d| {
                Ok((
                    self.display_call(
                        board,
                        &d.version,
                        member.as_str(),
                        display.display_name.as_deref(),
                        Some(data.as_str()),
                        &self.log_flag(),
                        now,
                    ),
                    (),
                ))
            })
            .await?;
        let seq = as_u64(&reply).unwrap_or(0);
        if seq > 0 {
            self.journal(vec![LoggedOp {
                board: board.clone(),
                seq,
                recv_ms: now,
                op: Op::Display {
                    member: member.to_string(),
                    name: display.display_name.clone(),
                    data: (!data.is_empty()).then_some(data),
                },
            }])
            .await?;
        }
        Ok(())
    }

    // ---- reads -------------------------------------------------------------------------------

    /// Resolves a view against a board: its period (checked to be readable) and keys.
    fn resolve(
        &self,
        board: &BoardId,
        def: &BoardDef,
        view: &View,
        now: i64,
    ) -> Result<(Period, BoardKey), Invalid> {
        if !def.windows.contains(&view.window) {
            return Err(Invalid::new(
                "window",
                format!(
                    "board {board} keeps no {} window (it keeps {})",
                    view.window,
                    def.windows
                        .iter()
                        .map(|w| w.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let period = match view.period {
            Some(p) => {
                if p.start_ms() > now {
                    return Err(Invalid::new(
                        "period",
                        format!("{} has not started yet", p.id()),
                    ));
                }
                if let Some(exp) = p.expires_at_ms(def.retention_periods) {
                    if exp <= now {
                        return Err(Invalid::new(
                            "period",
                            format!(
                                "{} has expired: the board keeps {} closed {} periods",
                                p.id(),
                                def.retention_periods,
                                view.window
                            ),
                        ));
                    }
                }
                p
            }
            None => Period::containing(view.window, now)?,
        };
        let key = self.keys.leaderboard(board, &period, view.scope.as_ref());
        Ok((period, key))
    }

    /// Runs a read script on the key a view names. A view the cached definition refuses (a window
    /// it lacks, a period past its retention) is judged again by the current definition first, in
    /// case the board was just changed (see [`Engine::call_board`]).
    async fn read<C>(
        &self,
        board: &BoardId,
        view: &View,
        build: impl Fn(&CachedDef, &BoardKey) -> (Call, C),
    ) -> Result<(Arc<CachedDef>, Period, Reply, C)> {
        let now = self.now_ms();
        let res = self
            .call_board(board, |d| {
                let (period, key) = self.resolve(board, &d.def, view, now)?;
                let (call, c) = build(d, &key);
                Ok((call, (period, c)))
            })
            .await;
        match res {
            Ok((d, reply, (period, c))) => Ok((d, period, reply, c)),
            // A read that was not answered wrote nothing: Redis is plainly unavailable.
            Err(Error::Unconfirmed { cause, .. }) => Err(Error::Unavailable(cause)),
            Err(e) => Err(e),
        }
    }

    fn page_call(
        &self,
        board: &BoardId,
        d: &CachedDef,
        key: &BoardKey,
        window: Window,
        kind: &str,
        extra: Vec<String>,
    ) -> Call {
        let mut args = vec![
            d.version.clone(),
            d.def.order.as_str().into(),
            d.def.rank_mode.as_str().into(),
            d.def.tick_bits(window).to_string(),
            kind.into(),
        ];
        args.extend(extra);
        Call {
            script: &scripts::READ_PAGE,
            keys: vec![
                self.keys.definition(board),
                key.zset.clone(),
                key.distinct_values.clone(),
                self.keys.display_names(board),
            ],
            args,
        }
    }

    /// A page read, shared by the identical reads in flight with it. As for member reads (see
    /// coalesce.rs), a read never shares a call sent before it arrived, so it sees every write that
    /// completed before it began; a top 20 polled by many dashboards at once costs Redis one call
    /// per round trip instead of one per dashboard.
    async fn page_read(
        &self,
        board: &BoardId,
        view: &View,
        kind: &'static str,
        extra: Vec<String>,
        limit: Option<u32>,
    ) -> Result<Option<Page>> {
        let key = PageKey {
            board: board.clone(),
            view: view.clone(),
            kind,
            extra,
            limit,
        };
        self.pages
            .run(&key, (), |readers| {
                let key = &key;
                async move {
                    let out = self
                        .page_read_once(board, view, kind, &key.extra, limit)
                        .await;
                    vec![out; readers.len()]
                }
            })
            .await
    }

    async fn page_read_once(
        &self,
        board: &BoardId,
        view: &View,
        kind: &str,
        extra: &[String],
        limit: Option<u32>,
    ) -> Result<Option<Page>> {
        let (d, period, reply, ()) = self
            .read(board, view, |d, key| {
                (
                    self.page_call(board, d, key, view.window, kind, extra.to_vec()),
                    (),
                )
            })
            .await?;
        let bad = || bad_reply("read_page", &reply);
        let (total, flat) = match as_array(&reply).ok_or_else(bad)? {
            [total, Reply::Array(flat)] => (as_u64(total).ok_or_else(bad)?, flat),
            [_, Reply::Nil] => return Ok(None),
            _ => return Err(bad()),
        };
        let bits = d.def.tick_bits(view.window);
        let mut entries = Vec::with_capacity(flat.len() / 4);
        let mut last = None;
        for e in flat.chunks(4) {
            let [m, s, r, name] = e else {
                return Err(bad());
            };
            let member = as_str(m).ok_or_else(bad)?.to_owned();
            let stored = as_f64(s).ok_or_else(bad)?;
            last = Some(Cursor {
                stored,
                member: member.clone(),
            });
            entries.push(Entry {
                rank: as_u64(r).ok_or_else(bad)?,
                member,
                score: decode_stored(stored, bits),
                display_name: as_str(name).map(str::to_owned),
            });
        }
        let next = match limit {
            Some(l) if entries.len() as u64 == u64::from(l) => last,
            _ => None,
        };
        Ok(Some(Page {
            board: board.clone(),
            window: view.window,
            period: (view.window != Window::All).then(|| period.id()),
            scope: view.scope.clone(),
            total,
            entries,
            next,
        }))
    }

    /// The best `limit` entries.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`], [`Error::Invalid`] for a view the board cannot serve.
    pub async fn top(&self, board: &BoardId, view: &View, limit: Limit) -> Result<Page> {
        self.page(board, view, Offset::new(0)?, limit).await
    }

    /// Entries at 0-based positions `[offset, offset + limit)`, with a cursor to the next page.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`], [`Error::Invalid`] for a view the board cannot serve.
    pub async fn page(
        &self,
        board: &BoardId,
        view: &View,
        offset: Offset,
        limit: Limit,
    ) -> Result<Page> {
        self.page_read(
            board,
            view,
            "range",
            vec![offset.get().to_string(), limit.get().to_string()],
            Some(limit.get()),
        )
        .await?
        .ok_or_else(|| Error::Backend("range read answered no page".into()))
    }

    /// The `limit` entries after a cursor.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`], [`Error::Invalid`] for a view the board cannot serve.
    pub async fn after(
        &self,
        board: &BoardId,
        view: &View,
        cursor: &Cursor,
        limit: Limit,
    ) -> Result<Page> {
        self.page_read(
            board,
            view,
            "after",
            vec![
                fmt_num(cursor.stored),
                cursor.member.clone(),
                limit.get().to_string(),
            ],
            Some(limit.get()),
        )
        .await?
        .ok_or_else(|| Error::Backend("cursor read answered no page".into()))
    }

    /// The member and `radius` entries on each side; at the borders the window shifts so that it
    /// always holds `2 * radius + 1` entries when the board has that many.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`], [`Error::BoardNotFound`].
    pub async fn around(
        &self,
        board: &BoardId,
        view: &View,
        member: &Member,
        radius: Radius,
    ) -> Result<Page> {
        self.page_read(
            board,
            view,
            "around",
            vec![member.to_string(), radius.get().to_string()],
            None,
        )
        .await?
        .ok_or_else(|| Error::MemberNotFound {
            board: board.clone(),
            member: member.clone(),
        })
    }

    /// Entries whose score lies in `[min, max]`, best first, at most `limit`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `min` when `min > max`, [`Error::BoardNotFound`].
    pub async fn score_range(
        &self,
        board: &BoardId,
        view: &View,
        min: Score,
        max: Score,
        limit: Limit,
    ) -> Result<Page> {
        if min.get() > max.get() {
            return Err(Invalid::new(
                "min",
                format!("must not exceed max ({} > {})", min.get(), max.get()),
            )
            .into());
        }
        self.page_read(
            board,
            view,
            "score",
            vec![
                fmt_num(min.get()),
                fmt_num(max.get()),
                limit.get().to_string(),
            ],
            None,
        )
        .await?
        .ok_or_else(|| Error::Backend("score read answered no page".into()))
    }

    /// Members in the key a view names.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn count(&self, board: &BoardId, view: &View) -> Result<u64> {
        let page = self
            .page_read(board, view, "range", vec!["0".into(), "0".into()], None)
            .await?
            .ok_or_else(|| Error::Backend("count answered no page".into()))?;
        Ok(page.total)
    }

    async fn members_read(
        &self,
        board: &BoardId,
        view: &View,
        members: &[Member],
        with_data: bool,
    ) -> Result<(Arc<CachedDef>, u64, Vec<Option<MemberRow>>)> {
        let (d, _, reply, ()) = self
            .read(board, view, |d, key| {
                let mut args = vec![
                    d.version.clone(),
                    d.def.order.as_str().into(),
                    d.def.rank_mode.as_str().into(),
                    d.def.tick_bits(view.window).to_string(),
                    if with_data { "1" } else { "0" }.into(),
                ];
                args.extend(members.iter().map(|m| m.to_string()));
                (
                    Call {
                        script: &scripts::READ_MEMBERS,
                        keys: vec![
                            self.keys.definition(board),
                            key.zset.clone(),
                            key.distinct_values.clone(),
                            self.keys.display_names(board),
                            self.keys.display_data(board),
                        ],
                        args,
                    },
                    (),
                )
            })
            .await?;
        let bad = || bad_reply("read_members", &reply);
        let [total, Reply::Array(rows)] = as_array(&reply).ok_or_else(bad)? else {
            return Err(bad());
        };
        let total = as_u64(total).ok_or_else(bad)?;
        let bits = d.def.tick_bits(view.window);
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Reply::Nil => out.push(None),
                Reply::Array(cells) => {
                    let [s, r, w, name, data] = cells.as_slice() else {
                        return Err(bad());
                    };
                    let stored = as_f64(s).ok_or_else(bad)?;
                    out.push(Some(MemberRow {
                        stored,
                        score: decode_stored(stored, bits),
                        rank: as_u64(r).ok_or_else(bad)?,
                        worse: as_u64(w).ok_or_else(bad)?,
                        display_name: as_str(name).map(str::to_owned),
                        data: as_str(data).map(str::to_owned),
                    }));
                }
                _ => return Err(bad()),
            }
        }
        if out.len() != members.len() {
            return Err(bad());
        }
        Ok((d, total, out))
    }

    /// A member's score, rank, percentile and the total.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`], [`Error::BoardNotFound`].
    pub async fn standing(
        &self,
        board: &BoardId,
        view: &View,
        member: &Member,
    ) -> Result<Standing> {
        // Concurrent reads of the same key share one call (see coalesce.rs): under load that is
        // one script call per round trip rather than one per request.
        let key = (board.clone(), view.clone());
        let (total, row) = self
            .standings
            .run(&key, member.clone(), |members| async move {
                let n = members.len();
                match self.members_read(board, view, &members, true).await {
                    Ok((_, total, rows)) if rows.len() == n => {
                        rows.into_iter().map(|r| Ok((total, r))).collect()
                    }
                    Ok((_, _, rows)) => {
                        let e = Error::Backend(format!(
                            "read_members answered {} rows for {n} members",
                            rows.len()
                        ));
                        (0..n).map(|_| Err(e.clone())).collect()
                    }
                    Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
                }
            })
            .await?;
        let Some(row) = row else {
            return Err(Error::MemberNotFound {
                board: board.clone(),
                member: member.clone(),
            });
        };
        Ok(Standing {
            member: member.clone(),
            score: row.score,
            rank: row.rank,
            percentile: if total == 0 {
                0.0
            } else {
                row.worse as f64 * 100.0 / total as f64
            },
            total,
            display_name: row.display_name,
            data: row.data.and_then(|d| serde_json::from_str(&d).ok()),
        })
    }

    /// Ranks for a list of members (at most [`MAX_LOOKUP`]), in rank order, with the missing ones.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `members` when the list is empty or too long, [`Error::BoardNotFound`].
    pub async fn lookup(&self, board: &BoardId, view: &View, members: &[Member]) -> Result<Lookup> {
        if members.is_empty() || members.len() > MAX_LOOKUP {
            return Err(Invalid::new(
                "members",
                format!("must name 1 to {MAX_LOOKUP} members, got {}", members.len()),
            )
            .into());
        }
        let mut unique: Vec<Member> = Vec::with_capacity(members.len());
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        for m in members {
            if seen.insert(m) {
                unique.push(m.clone());
            }
        }
        // In calls of a bounded size, each holding Redis about a millisecond at most: one call for
        // a thousand members of a big key held it ~14 ms, stalling every other client. Each call is
        // consistent in itself; writes may land between them, and the total is the last call's.
        let mut rows = Vec::with_capacity(unique.len());
        let mut read = None;
        for part in unique.chunks(LOOKUP_PER_CALL) {
            let (d, total, part_rows) = self.members_read(board, view, part, false).await?;
            rows.extend(part_rows);
            read = Some((d, total));
        }
        let (d, total) = read.expect("at least one member");
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for (m, row) in unique.into_iter().zip(rows) {
            match row {
                Some(row) => found.push((row, m)),
                None => missing.push(m),
            }
        }
        // Rank order; among equal ranks, the board's own order: stored score (which holds the
        // tie-break tick), then member bytes as Redis orders them (reversed on desc boards).
        let desc = d.def.order == crate::board::Order::Desc;
        found.sort_by(|(a, am), (b, bm)| {
            a.rank.cmp(&b.rank).then_with(|| {
                let by_score = a.stored.total_cmp(&b.stored);
                let by_member = am.as_str().as_bytes().cmp(bm.as_str().as_bytes());
                if desc {
                    by_score.reverse().then(by_member.reverse())
                } else {
                    by_score.then(by_member)
                }
            })
        });
        let entries = found
            .into_iter()
            .map(|(row, m)| Entry {
                rank: row.rank,
                member: m.to_string(),
                score: row.score,
                display_name: row.display_name,
            })
            .collect();
        Ok(Lookup {
            total,
            entries,
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_ranges_join_runs() {
        assert_eq!(index_ranges(&[]), "");
        assert_eq!(index_ranges(&[4]), "4");
        assert_eq!(index_ranges(&[0, 1, 2, 3, 4, 7, 9, 10]), "0-4, 7, 9-10");
    }

    fn left(unapplied: Vec<usize>, unknown: Vec<usize>, refused: Vec<(usize, Invalid)>) -> Left {
        Left {
            unapplied,
            unknown,
            refused,
        }
    }

    #[test]
    fn a_batch_partly_applied_names_what_to_resend() {
        let refused = || vec![(7, Invalid::new("value", "too big"))];
        // Nothing written: the refusals themselves, as an invalid batch.
        let e = partly_applied(0, 10, left(vec![5, 6, 7], vec![], refused()), None);
        assert!(
            matches!(&e, Error::InvalidBatch(l) if l.len() == 1 && l[0].0 == 7),
            "{e}"
        );
        // Nothing written and no refusal: the failure as it is.
        let gone = || Some(Error::Unavailable("gone".into()));
        let e = partly_applied(0, 10, left(vec![0], vec![], vec![]), gone());
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        // Some calls wrote: a conflict naming the events not applied and why.
        let e = partly_applied(2, 10, left(vec![7, 5, 6, 9], vec![], refused()), None);
        let Error::Conflict(m) = &e else {
            panic!("{e}")
        };
        assert!(m.starts_with("4 of 10 events were not applied"), "{m}");
        assert!(m.contains("events[7].value: too big"), "{m}");
        assert!(m.ends_with("resend events 5-7, 9"), "{m}");
        // Cut short by Redis going away: said so, without its internal message.
        let e = partly_applied(2, 10, left(vec![8, 9], vec![], vec![]), gone());
        let Error::Conflict(m) = &e else {
            panic!("{e}")
        };
        assert!(m.contains("became unreachable"), "{m}");
        assert!(!m.contains("gone"), "{m}");
        assert!(m.ends_with("resend events 8-9"), "{m}");
    }

    #[test]
    fn a_batch_call_not_answered_is_not_offered_for_resending() {
        let e = partly_applied(
            1,
            10,
            left(vec![9], vec![5, 6, 7, 8], vec![]),
            Some(Error::unanswered("Request timed out.".into())),
        );
        let Error::Unconfirmed { detail, cause } = &e else {
            panic!("{e}")
        };
        assert_eq!(
            detail,
            "the leaderboard backend did not answer in time for events 5-8, and events 9 were not applied"
        );
        assert_eq!(cause, "Request timed out.");
    }
}
