//! The durable store: Postgres keeps every board's operation log, so Redis can always be rebuilt.
//!
//! - [`postgres`]: the tables (migrations/) and their queries
//! - [`persister`]: the [`crate::engine::Journal`] that commits operations in groups, and the sweep that
//!   copies what a crash left in the Redis logs
//! - [`rebuild`]: finds boards Redis lost and replays them from the store
//! - [`snapshot`]: every key's standing, copied into the store for history and trends, and as
//!   rebuild bases once checked against the log

mod common;
pub mod identity;
pub mod persister;
pub mod postgres;
pub mod rebuild;
pub mod snapshot;
pub mod sqlite;

pub use persister::Persister;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;

use crate::board::BoardId;
use crate::engine::{Base, BaseKey, KeySnapshot, LoggedOp};
use crate::error::Result;

/// One board's snapshot as a store wrote it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The run's id; `None` when the board had no live key and nothing was written.
    pub run: Option<i64>,
    /// The sequence number of the board's log every key was read at; `None` when the keys were
    /// read at different points (history, never a rebuild base).
    pub seq: Option<u64>,
    /// Keys written.
    pub keys: usize,
    /// Entries written.
    pub entries: usize,
}

/// What the persister, the rebuild and the snapshots need of a durable store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or upgrades the tables and indexes.
    async fn migrate(&self) -> Result<()>;
    /// Commits operations in one transaction; sequence numbers already stored are skipped. An
    /// operation at a number the store holds another operation at is parked, with its board's later
    /// ones (see [`diverging`]). Returns the boards with parked operations: each needs
    /// [`rebuild::rebuild`], which merges them ([`Store::merge_parked`]) and rebuilds Redis.
    async fn insert_ops(&self, ops: &[LoggedOp]) -> Result<Vec<BoardId>>;
    /// Whether `board` has parked operations.
    async fn diverged(&self, board: &BoardId) -> Result<bool>;
    /// Appends `board`'s parked operations after its stored log, in the order Redis numbered them;
    /// snapshots taken from the diverged Redis stop being rebuild bases. Returns how many it
    /// appended.
    async fn merge_parked(&self, board: &BoardId) -> Result<u64>;
    /// The store's identity, made when its tables were created (see [`identity`]).
    async fn store_id(&self) -> Result<String>;
    /// From now on, [`Store::insert_ops`] commits nothing, in the same transaction that would
    /// write, unless the store's identity is `id`: the store Redis was paired with.
    fn expect_id(&self, id: String);
    /// Whether the store is the one expected ([`Store::expect_id`]; any store while none is).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] naming both identities when it is another store.
    async fn check_identity(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the store holds any operation of `board`, live or not.
    async fn has_ops(&self, board: &BoardId) -> Result<bool>;
    /// Marks a board deleted, before its Redis keys go.
    async fn tombstone(&self, board: &BoardId) -> Result<()>;
    /// Removes a deleted board's rows.
    async fn purge(&self, board: &BoardId) -> Result<()>;
    /// Live boards with their highest stored sequence number.
    async fn boards(&self) -> Result<Vec<(BoardId, u64)>>;
    /// The highest stored sequence number of a live `board` (0 when it holds no operation); `None`
    /// when no live board of this id is stored.
    async fn board_seq(&self, board: &BoardId) -> Result<Option<u64>> {
        Ok(self
            .boards()
            .await?
            .into_iter()
            .find(|(b, _)| b == board)
            .map(|(_, s)| s))
    }
    /// Deleted boards whose deletion may not have reached Redis yet.
    async fn tombstones(&self) -> Result<Vec<BoardId>>;
    /// Whether a live board of this id is stored.
    async fn has_board(&self, board: &BoardId) -> Result<bool>;
    /// A board's operations in order, held whole (rebuilds and the admin tools read
    /// [`Store::op_pages`] instead).
    async fn ops(&self, board: &BoardId) -> Result<Vec<LoggedOp>>;
    /// Snapshots a board while reading it, where the store can write as it reads (see
    /// [`PgStore::snapshot_streamed`]); `None` when it cannot, or when the board changed during the
    /// read: the caller then reads the board whole and calls [`Store::write_snapshots`].
    async fn snapshot_streamed(
        &self,
        _engine: &crate::engine::Engine,
        _board: &BoardId,
    ) -> Result<Option<Written>> {
        Ok(None)
    }
    /// Writes a snapshot run of one board (every key), whole or not at all. Returns the run's id
    /// (`None` when there were no keys to write). The run is no rebuild base until
    /// [`Store::mark_base`].
    async fn write_snapshots(&self, board: &BoardId, keys: &[KeySnapshot]) -> Result<Option<i64>>;
    /// The keys of `board`'s snapshot run `run`, each with a reader of its entries (member, stored
    /// score): what a rebuild starting from the run would write back.
    async fn run_keys(&self, board: &BoardId, run: i64) -> Result<Vec<BaseKey>>;
    /// Makes `board`'s snapshot run `run` a rebuild base (see [`snapshot::make_base`]).
    async fn mark_base(&self, board: &BoardId, run: i64) -> Result<()>;
    /// The latest rebuild base of `board` (a snapshot run taken at one point of its log and found to
    /// hold what the log implies there, see [`snapshot::make_base`]) no later than `upto` (the last
    /// stored operation), with what a rebuild needs besides its keys; `None` when there is none (a
    /// rebuild then replays the whole log). Event ids are kept when received after `dedupe_since`.
    async fn restore_base(
        &self,
        _board: &BoardId,
        _upto: u64,
        _dedupe_since: i64,
    ) -> Result<Option<Base>> {
        Ok(None)
    }
    /// A board's operations after `after` up to `upto`, in order, read a page of [`OP_PAGE`] at a
    /// time while the caller works through the one before: what a rebuild replays, never held whole.
    fn op_pages(&self, board: &BoardId, after: u64, upto: u64) -> crate::engine::OpPages;
    /// How many operations of `board` the store holds after `after` up to `upto`: `upto - after`
    /// when none is missing.
    async fn ops_count(&self, board: &BoardId, after: u64, upto: u64) -> Result<u64>;
    /// Deletes snapshots older than `keep_days` days.
    async fn prune_snapshots(&self, keep_days: u32) -> Result<u64>;
    /// How many seconds ago the latest snapshot was taken; `None` when the store holds none.
    async fn last_snapshot_age_secs(&self) -> Result<Option<i64>>;
    /// Claims (or renews) the lease `name` for `holder` for `ms`; false when another holds it.
    async fn try_lease(&self, name: &str, holder: &str, ms: i64) -> Result<bool>;
    /// Gives the lease `name` up, when `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// When the store's writes last moved (ms since the epoch; 0: not tracked): a store that
    /// serialises its writers sets it as each one gets its turn and as its statements finish, so
    /// that a commit waiting behind another writer's long one is seen as busy, not stalled.
    fn progress_ms(&self) -> i64 {
        0
    }
    /// Whether one server owns the store (the embedded engine's SQLite file, which no second server
    /// shares): work that one instance at a time does needs no lease to pick that instance.
    fn single_server(&self) -> bool {
        false
    }
    /// The migrations not applied yet, each as `version description`.
    async fn pending_migrations(&self) -> Result<Vec<String>>;
    /// The sequence number of `board`'s latest rebuild base (see [`Store::restore_base`]); `None`
    /// when it has none, and a rebuild replays its whole log.
    async fn base_seq(&self, board: &BoardId) -> Result<Option<u64>>;
    /// What `rankd admin analyze` reports of the store itself, a line each: where it is, its
    /// tables' sizes and the plans of the history queries.
    async fn describe(&self) -> Result<Vec<String>>;
}

/// The durable store a configuration names, as `rankd serve` picks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Configured {
    /// `RANKD_DATABASE_URL`.
    Postgres(String),
    /// The embedded engine's file in `RANKD_DATA_DIR` (no `RANKD_REDIS_URL`, no database URL).
    Sqlite(std::path::PathBuf),
    /// Redis without a store: scores live in Redis only.
    RedisOnly,
    /// The embedded engine with an empty `RANKD_DATA_DIR`: scores live in memory only.
    MemoryOnly,
}

impl Configured {
    /// The store `config` names.
    pub fn of(config: &crate::config::Config) -> Self {
        match (&config.database_url, &config.redis_url, &config.data_dir) {
            (Some(url), _, _) => Self::Postgres(url.clone()),
            (None, None, Some(dir)) => Self::Sqlite(dir.clone()),
            (None, Some(_), _) => Self::RedisOnly,
            (None, None, None) => Self::MemoryOnly,
        }
    }

    /// Opens the store; `None` when the configuration names none.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when it cannot be reached or opened.
    pub async fn open(&self) -> Result<Option<std::sync::Arc<dyn Store>>> {
        Ok(match self {
            Self::Postgres(url) => Some(std::sync::Arc::new(PgStore::connect(url).await?)),
            Self::Sqlite(dir) => Some(std::sync::Arc::new(SqliteStore::open(dir).await?)),
            Self::RedisOnly | Self::MemoryOnly => None,
        })
    }
}

/// The queries of the history `rankd admin analyze` shows the plans of: (what, SQL both stores run).
pub(crate) const HISTORY_QUERIES: [(&str, &str); 3] = [
    (
        "latest ranks of a key",
        "SELECT e.rank, e.member, e.score FROM rankd_snapshot_entries e WHERE e.snapshot_id = \
         (SELECT id FROM rankd_snapshots WHERE board = 'x' AND window_name = 'all' AND scope = '' ORDER BY taken_at DESC LIMIT 1) \
         AND e.rank <= 20 ORDER BY e.rank",
    ),
    (
        "rank history of a member",
        "SELECT s.taken_at, e.rank, e.score FROM rankd_snapshot_entries e JOIN rankd_snapshots s ON s.id = e.snapshot_id \
         WHERE e.member = 'u42' AND s.board = 'x' AND s.window_name = 'all' AND s.scope = '' ORDER BY s.taken_at",
    ),
    (
        "activity of a member",
        "SELECT board, at_ms, value FROM rankd_ops WHERE member = 'u42' AND op = 'e' AND at_ms > 0 ORDER BY at_ms",
    ),
];

/// The versions of the migrations a store applied: rows of (version); a store without a migrations
/// table yet applied none.
pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success";

/// The migrations of `migrator` not among `applied`, each as `version description`.
pub(crate) fn pending(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> Vec<String> {
    migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect()
}

/// An operation as both stores keep it: one row of `rankd_ops`, without board and seq.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct OpRow {
    /// d define, e event, r remove member, p display data.
    pub kind: String,
    pub member: Option<String>,
    pub value: Option<f64>,
    pub event_id: Option<String>,
    pub at_ms: Option<i64>,
    /// Scopes of an event (none for other operations).
    pub scopes: Option<Vec<String>>,
    /// Definition JSON (d), display data JSON (p).
    pub payload: Option<String>,
    /// Definition version (d), display name (p).
    pub extra: Option<String>,
}

impl OpRow {
    /// The row of an operation.
    pub(crate) fn from_op(op: &crate::engine::Op) -> Self {
        use crate::engine::Op;
        match op {
            Op::Define { version, json } => Self {
                kind: "d".into(),
                payload: Some(json.clone()),
                extra: Some(version.clone()),
                ..Self::default()
            },
            Op::Event {
                member,
                value,
                event_id,
                at_ms,
                scopes,
            } => Self {
                kind: "e".into(),
                member: Some(member.clone()),
                value: Some(*value),
                event_id: event_id.clone(),
                at_ms: Some(*at_ms),
                scopes: Some(scopes.clone()),
                ..Self::default()
            },
            Op::Remove { member } => Self {
                kind: "r".into(),
                member: Some(member.clone()),
                ..Self::default()
            },
            Op::Display { member, name, data } => Self {
                kind: "p".into(),
                member: Some(member.clone()),
                payload: data.clone(),
                extra: name.clone(),
                ..Self::default()
            },
        }
    }

    /// The operation a stored row holds.
    pub(crate) fn into_op(self, board: &BoardId) -> Result<crate::engine::Op> {
        use crate::engine::Op;
        use crate::error::Error;
        let bad = |what: &str| Error::Backend(format!("stored operation of {board} lacks {what}"));
        Ok(match self.kind.as_str() {
            "d" => Op::Define {
                version: self.extra.ok_or_else(|| bad("a version"))?,
                json: self.payload.ok_or_else(|| bad("a definition"))?,
            },
            "e" => Op::Event {
                member: self.member.ok_or_else(|| bad("a member"))?,
                value: self.value.ok_or_else(|| bad("a value"))?,
                event_id: self.event_id,
                at_ms: self.at_ms.ok_or_else(|| bad("a time"))?,
                scopes: self.scopes.unwrap_or_default(),
            },
            "r" => Op::Remove {
                member: self.member.ok_or_else(|| bad("a member"))?,
            },
            "p" => Op::Display {
                member: self.member.ok_or_else(|| bad("a member"))?,
                name: self.extra,
                data: self.payload,
            },
            other => {
                return Err(Error::Backend(format!(
                    "unknown stored operation {other:?}"
                )))
            }
        })
    }
}

/// Queries both stores run as they are: `$N` parameters, and `deleted` compared with FALSE (a
/// boolean in Postgres, 0 or 1 in SQLite, where FALSE is 0).
pub(crate) mod sql {
    /// Live boards with their highest stored sequence number: rows of (board, seq).
    /// One descent of the primary key per board (its last row), so that the checks that run it
    /// every few seconds cost O(boards), not O(stored operations). SQLite's; Postgres reads the
    /// number its triggers keep on the board row instead (`postgres::LIVE_BOARDS`).
    pub const LIVE_BOARDS: &str = "SELECT b.board, COALESCE((SELECT o.seq FROM rankd_ops o
             WHERE o.board = b.board ORDER BY o.seq DESC LIMIT 1), 0)
         FROM rankd_boards b WHERE b.deleted = FALSE ORDER BY b.board";
    /// The highest stored sequence number of live board `$1`, as [`LIVE_BOARDS`] reads it: one row
    /// of (seq), or none when no live board of this id is stored. SQLite's, as [`LIVE_BOARDS`].
    pub const BOARD_SEQ: &str = "SELECT COALESCE((SELECT o.seq FROM rankd_ops o
             WHERE o.board = b.board ORDER BY o.seq DESC LIMIT 1), 0)
         FROM rankd_boards b WHERE b.board = $1 AND b.deleted = FALSE";
    /// Deleted boards: rows of (board).
    pub const TOMBSTONES: &str =
        "SELECT board FROM rankd_boards WHERE deleted = TRUE ORDER BY board";
    /// The store's identity: one row of (value).
    pub const STORE_ID: &str = "SELECT value FROM rankd_meta WHERE key = 'store_id'";
    /// A row when board `$1` has parked operations.
    pub const DIVERGED: &str = "SELECT 1 FROM rankd_parked WHERE board = $1 LIMIT 1";
    /// A row when any operation of board `$1` is stored.
    pub const HAS_OPS: &str = "SELECT 1 FROM rankd_ops WHERE board = $1 LIMIT 1";
    /// A row when board `$1` is stored and live.
    pub const HAS_BOARD: &str = "SELECT 1 FROM rankd_boards WHERE board = $1 AND deleted = FALSE";
    /// A new life of board `$1` starts: what an earlier board of the same id left, parked and
    /// stored, goes, unless the stored sequence number 1 is the definition of version `$2` (the
    /// same definition offered again). Parked rows first: the check reads `rankd_ops`.
    pub const NEW_LIFE: [&str; 2] = [
        "DELETE FROM rankd_parked WHERE board = $1 AND NOT EXISTS (
             SELECT 1 FROM rankd_ops WHERE board = $1 AND seq = 1 AND op = 'd' AND extra = $2)",
        "DELETE FROM rankd_ops WHERE board = $1 AND NOT EXISTS (
             SELECT 1 FROM rankd_ops WHERE board = $1 AND seq = 1 AND op = 'd' AND extra = $2)",
    ];
    /// The keys of board `$1`'s snapshot run `$2`: rows of [`super::RunKey`].
    pub const RUN_KEYS: &str =
        "SELECT id, window_name, period, scope, expire_ms FROM rankd_snapshots
         WHERE board = $1 AND run_id = $2 ORDER BY id";
    /// Board `$1`'s snapshot run `$2` becomes a rebuild base (a run a merge took back has no
    /// run_id left, and stays history).
    pub const MARK_BASE: &str =
        "UPDATE rankd_snapshots SET base = TRUE WHERE board = $1 AND run_id = $2";
    /// The latest rebuild base of board `$1` that the stored log covers up to sequence number `$2`
    /// (a run read at one point of the log, every key at the same seq and version, and found to hold
    /// what the log implies there): one row of (run_id, seq, version), or none.
    pub const LATEST_BASE: &str = "SELECT run_id, min(seq), min(version) FROM rankd_snapshots
         WHERE board = $1 AND run_id IS NOT NULL AND base = TRUE
         GROUP BY run_id
         HAVING min(seq) = max(seq) AND min(version) = max(version)
            AND count(version) = count(*) AND max(seq) <= $2
         ORDER BY run_id DESC LIMIT 1";
    /// Claims lease `$1` for holder `$2` until `$3` (Unix ms), where it is free at `$4` or `$2`'s
    /// already: a row when it was claimed.
    pub const TRY_LEASE: &str =
        "INSERT INTO rankd_leases (name, holder, until_ms) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms
         WHERE rankd_leases.until_ms < $4 OR rankd_leases.holder = EXCLUDED.holder
         RETURNING 1";
    /// Gives lease `$1` up, when holder `$2` holds it.
    pub const RELEASE_LEASE: &str = "DELETE FROM rankd_leases WHERE name = $1 AND holder = $2";
    /// Board `$1`'s operations after sequence number `$2`, in order, for each store's `row_to_op`.
    pub const OPS_AFTER: &str =
        "SELECT seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra
         FROM rankd_ops WHERE board = $1 AND seq > $2 ORDER BY seq";
    /// The first `$4` of board `$1`'s operations after sequence number `$2` up to `$3`, in order.
    pub const OPS_PAGE: &str =
        "SELECT seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra
         FROM rankd_ops WHERE board = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4";
    /// How many of board `$1`'s operations the store holds after `$2` up to `$3`.
    pub const OPS_COUNT: &str =
        "SELECT count(*) FROM rankd_ops WHERE board = $1 AND seq > $2 AND seq <= $3";
    /// The first `$5` of the operations of board `$1` after `$2` up to `$3` that a rebuild base
    /// does not hold: display data, and the events with an id received after `$4`.
    pub const BEFORE_PAGE: &str =
        "SELECT seq, op, recv_ms, member, value, event_id, at_ms, scopes, payload, extra
         FROM rankd_ops WHERE board = $1 AND seq > $2 AND seq <= $3
           AND (op = 'p' OR (op = 'e' AND event_id IS NOT NULL AND recv_ms > $4))
         ORDER BY seq LIMIT $5";
    /// The sequence number of the last removal of each member of board `$1` up to `$2`.
    pub const LAST_REMOVALS: &str =
        "SELECT member, max(seq) FROM rankd_ops WHERE board = $1 AND op = 'r' AND seq <= $2
         GROUP BY member";
}

/// The live boards of [`sql::LIVE_BOARDS`] rows.
pub(crate) fn live_boards(rows: Vec<(String, i64)>) -> Result<Vec<(BoardId, u64)>> {
    rows.into_iter()
        .map(|(b, seq)| {
            BoardId::parse(&b)
                .map(|b| (b, seq as u64))
                .map_err(|e| crate::error::Error::Backend(format!("stored board id: {e}")))
        })
        .collect()
}

/// The boards of [`sql::TOMBSTONES`] rows (an id that no longer parses names no board to remove).
pub(crate) fn tombstones(rows: Vec<(String,)>) -> Vec<BoardId> {
    rows.into_iter()
        .filter_map(|(b,)| BoardId::parse(&b).ok())
        .collect()
}

/// Inserts one key's row of a snapshot run and evaluates to its id. `$sql` is the store's INSERT:
/// `$1` the id (NULL: the next one), then board, window_name, period, scope, seq, members, run_id,
/// version and expire_ms, RETURNING id. `$key` is a [`crate::engine::SnapshotKey`].
macro_rules! insert_key_row {
    ($sql:expr, $conn:expr, $id:expr, $board:expr, $key:expr, $run:expr) => {{
        let key: &$crate::engine::SnapshotKey = $key;
        sqlx::query_as::<_, (i64,)>($sql)
            .bind($id)
            .bind($board.as_str())
            .bind(key.window.as_str())
            .bind(&key.period)
            .bind(key.scope.as_deref().unwrap_or(""))
            .bind(key.seq as i64)
            .bind(key.members as i64)
            .bind($run)
            .bind(&key.version)
            .bind(key.expire_ms)
            .fetch_one($conn)
            .await
            .map(|(id,)| id)
            .map_err(unavailable)
    }};
}
pub(crate) use insert_key_row;

/// Judges the store's identity against the one expected (see [`identity::Expected`]) on `$conn`
/// (inside the transaction about to write), returning the error from the enclosing function.
macro_rules! identity_check {
    ($expected:expr, $conn:expr) => {
        if $expected.get().is_some() {
            let found: Option<String> = sqlx::query_scalar($crate::store::sql::STORE_ID)
                .fetch_optional($conn)
                .await
                .map_err(unavailable)?;
            $expected.judge(found.as_deref())?;
        }
    };
}
pub(crate) use identity_check;

/// Operations a page of [`Store::op_pages`] holds: a few megabytes of decoded operations.
pub const OP_PAGE: usize = 5_000;

/// One key of a snapshot run as both stores list it: (snapshot id, window, period, scope, expiry).
pub(crate) type RunKey = (i64, String, String, String, Option<i64>);

/// Assembles a rebuild's base from what a store read of its latest usable run; `open` starts
/// reading one snapshot's entries.
pub(crate) fn base(
    seq: i64,
    version: String,
    definition: String,
    removed: Vec<(String, i64)>,
    before: crate::engine::OpPages,
    keys: Vec<RunKey>,
    open: impl Fn(i64) -> crate::engine::EntryChunks + Send + Sync + Clone + 'static,
) -> Result<Base> {
    Ok(Base {
        seq: seq as u64,
        version,
        definition,
        keys: base_keys(keys, open)?,
        removed: removed
            .into_iter()
            .map(|(member, seq)| (member, seq as u64))
            .collect(),
        before,
    })
}

/// The keys of a snapshot run as a rebuild reads them; `open` starts reading one snapshot's
/// entries.
pub(crate) fn base_keys(
    keys: Vec<RunKey>,
    open: impl Fn(i64) -> crate::engine::EntryChunks + Send + Sync + Clone + 'static,
) -> Result<Vec<BaseKey>> {
    let mut base_keys = Vec::with_capacity(keys.len());
    for (id, window, period, scope, expire_ms) in keys {
        let window = window
            .parse::<crate::window::Window>()
            .map_err(|e| crate::error::Error::Backend(format!("snapshot {id}: {e}")))?;
        let open = open.clone();
        base_keys.push(BaseKey {
            window,
            period,
            scope: (!scope.is_empty()).then_some(scope),
            expire_ms,
            entries: Box::new(move || open(id)),
        });
    }
    Ok(base_keys)
}

/// What tells two operations at one place of a board's log apart, whichever path offered them
/// (the engine's answer or the Redis log read back): the kind, the time rankd applied it, and the
/// member (the version, for a definition). Two offers of one operation agree on it; two different
/// operations at one sequence number agree on it only if the same member did the same kind of thing
/// in the same millisecond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ident {
    pub kind: String,
    pub recv_ms: i64,
    pub key: Option<String>,
}

impl Ident {
    pub(crate) fn of(op: &LoggedOp) -> Self {
        use crate::engine::Op;
        let (kind, key) = match &op.op {
            Op::Define { version, .. } => ("d", Some(version.clone())),
            Op::Event { member, .. } => ("e", Some(member.clone())),
            Op::Remove { member } => ("r", Some(member.clone())),
            Op::Display { member, .. } => ("p", Some(member.clone())),
        };
        Self {
            kind: kind.into(),
            recv_ms: op.recv_ms,
            key,
        }
    }

    /// The identity of a stored row: its op, recv_ms, member and extra columns.
    pub(crate) fn stored(
        kind: &str,
        recv_ms: i64,
        member: Option<String>,
        extra: Option<String>,
    ) -> Self {
        let kind = kind.trim();
        Self {
            kind: kind.into(),
            recv_ms,
            key: if kind == "d" { extra } else { member },
        }
    }
}

/// Where the offered operations of a commit go once Redis is known to have numbered some of them
/// again (see [`diverging`]).
#[derive(Debug, Default)]
pub(crate) struct Divergence<'a> {
    /// Rows the plain insert of this commit wrote that belong to the new numbering: taken back out.
    pub unstore: Vec<(&'a BoardId, u64)>,
    /// Operations to park until their board is resynchronised.
    pub park: Vec<&'a LoggedOp>,
    /// Boards whose Redis numbering diverged from the store's (before or in this commit).
    pub boards: Vec<BoardId>,
}

/// Decides which offered operations are parked rather than stored at their sequence number.
///
/// Redis numbers a board's operations with a counter. When Redis loses operations the store
/// already holds (a failover to a replica that had not received them, a restart from an older
/// file), the counter hands out those numbers again, to other operations. The store must keep both:
/// what it holds at those numbers, and the operations Redis numbered again, which were answered
/// too. An operation offered at a stored number with another [`Ident`] shows it; from that number
/// on, the board's offered operations are parked, by the number Redis gave them, and the board is
/// resynchronised ([`rebuild::rebuild`] appends them after the store's log, then rebuilds Redis
/// from it). Until then every operation of the board is parked, except one the store holds already.
///
/// `inserted`: the offered (board, seq) the plain insert wrote; `stored`: the identity of the row
/// at every other offered (board, seq) the store holds, and at every offered (board, seq) of a
/// board in `diverged` (boards with parked operations; none of their operations was inserted);
/// `merged`: the identities of the operations an earlier merge appended that Redis had given
/// each of those numbers (a late offer of one of them is no news either).
pub(crate) fn diverging<'a>(
    ops: &'a [LoggedOp],
    inserted: &std::collections::HashSet<(String, u64)>,
    stored: &std::collections::HashMap<(String, u64), Ident>,
    merged: &std::collections::HashMap<(String, u64), Vec<Ident>>,
    diverged: &std::collections::HashSet<String>,
) -> Divergence<'a> {
    let mut out = Divergence::default();
    let mut by_board: std::collections::BTreeMap<&BoardId, Vec<&LoggedOp>> = Default::default();
    for o in ops {
        by_board.entry(&o.board).or_default().push(o);
    }
    for (board, mut list) in by_board {
        list.sort_by_key(|o| o.seq);
        let key = |o: &LoggedOp| (board.to_string(), o.seq);
        let held = |o: &LoggedOp| {
            let id = Ident::of(o);
            stored.get(&key(o)) == Some(&id) || merged.get(&key(o)).is_some_and(|m| m.contains(&id))
        };
        let from = if diverged.contains(board.as_str()) {
            Some(0)
        } else {
            list.iter()
                .find(|o| !inserted.contains(&key(o)) && stored.contains_key(&key(o)) && !held(o))
                .map(|o| o.seq)
        };
        let Some(from) = from else { continue };
        for o in list.into_iter().filter(|o| o.seq >= from) {
            if inserted.contains(&key(o)) {
                out.unstore.push((board, o.seq));
                out.park.push(o);
            } else if !held(o) {
                out.park.push(o);
            }
        }
        out.boards.push(board.clone());
    }
    out
}
