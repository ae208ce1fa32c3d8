//! `rankd admin`: the operator's commands. Each needs exactly what it works on (Redis, the durable
//! store, or both) and says what is missing; each takes a dry run that prints what it would do and
//! changes nothing. Results go to standard output, a line each; logs and progress to standard
//! error.
//!
//! Without `RANKD_REDIS_URL`, rankd serve runs the embedded engine: its boards live in the server's
//! memory, rebuilt from the store (SQLite in `RANKD_DATA_DIR`, or Postgres) at every start. An
//! admin process cannot see that memory, so the commands work on the store alone: `snapshot`
//! rebuilds each board here from the store and snapshots it (a new rebuild base, so the next start
//! replays less), `verify` checks that each board's rebuild base agrees with its log, `analyze`
//! reports the store. `clear-caches --server` and `warm-caches` work on a running server's answer
//! caches over HTTP, and need neither Redis nor the store.
//!
//! - [`output`]: result lines and the progress bar
//! - [`server`]: the client of a running server's cache figures, clears and warms
//! - [`maintain`]: migrate, snapshot, warm, pair-store
//! - [`verify`]: Redis against the store, or the store against itself
//! - [`caches`]: clear-caches, and the scratch keys of interrupted verify runs
//! - [`analyze`]: sizes, lag, latencies, plans and recommendations

pub mod analyze;
pub mod caches;
pub mod maintain;
pub mod output;
pub mod server;
pub mod verify;

use std::process::ExitCode;
use std::sync::Arc;

pub use output::Report;
pub use server::ServerStats;

use crate::backend::redis::{RedisConfig, RedisExecutor};
use crate::backend::ExecError;
use crate::board::BoardId;
use crate::cli::{AdminArgs, AdminCommand};
use crate::config::Config;
use crate::engine::{Engine, EngineConfig, SystemClock};
use crate::error::{Error, Invalid};
use crate::keys::Keys;
use crate::store::{snapshot::RunLease, Configured, Store};

/// Exit status: done, and (`verify`) no difference found.
pub const OK: u8 = 0;
/// Exit status of `verify` when it found a difference.
pub const DIFFERENCES: u8 = 1;
/// Exit status of a command that could not do its work (an error, said on standard error).
pub const FAILED: u8 = 2;

/// How long one Redis command of an admin command may wait for its answer. The commands read and
/// write whole boards in bounded calls; on a busy Redis one such call may wait far longer than the
/// per-call timeout meant for live requests (`RANKD_REDIS_TIMEOUT_MS`), which they do not use
/// unless it is longer.
pub const WORK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The command needs something the configuration does not give it.
    #[error("{0}")]
    Missing(String),
    /// `--board` names a board the store does not hold.
    #[error("board {0}: the store holds no such board")]
    UnknownBoard(BoardId),
    /// Another process holds what the command needs to itself.
    #[error("{0}")]
    Busy(String),
    /// SIGINT or SIGTERM.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    /// Redis or the store failed, or refused.
    #[error("{0}")]
    Engine(#[from] Error),
    /// A running server (`--server`) refused the request, in its words.
    #[error("{0}")]
    Refused(String),
}

impl From<Invalid> for Failure {
    fn from(e: Invalid) -> Self {
        Self::Engine(e.into())
    }
}

/// What a command works on: not at all, when configured, or necessarily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Not,
    IfSet,
    Must,
}

/// Redis, as the admin commands reach it.
pub struct Redis {
    /// The engine over it, with no journal (the commands call the store themselves).
    pub engine: Arc<Engine>,
    /// Its connections, for the commands no script runs (SCAN, UNLINK).
    exec: Arc<RedisExecutor>,
}

/// What the commands work on.
pub struct Admin {
    config: Config,
    redis: Option<Redis>,
    store: Option<Arc<dyn Store>>,
    /// Results and progress.
    pub report: Report,
    /// The snapshot run lease while a snapshot runs, released on every exit.
    lease: tokio::sync::Mutex<Option<RunLease>>,
    holder: String,
}

/// `rankd admin`: runs one command, says why on standard error when it fails, and returns the
/// exit status: [`OK`], [`DIFFERENCES`] (`verify`) or [`FAILED`]. SIGINT and SIGTERM stop it,
/// leaving nothing behind ([`FAILED`]).
pub async fn main(config: &Config, args: &AdminArgs) -> ExitCode {
    let mut admin = None;
    let run = async {
        let a = admin.insert(Admin::open(config, &args.command).await?);
        a.run(&args.command, args.dry_run).await
    };
    let code = tokio::select! {
        r = run => r,
        signal = interrupted() => Err(Failure::Interrupted(signal)),
    };
    if let Some(a) = &admin {
        a.release_lease().await;
    }
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rankd admin: {e}");
            ExitCode::from(FAILED)
        }
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = term => "SIGTERM",
    }
}

/// The command's name, as the operator typed it.
fn name(command: &AdminCommand) -> &'static str {
    match command {
        AdminCommand::Migrate => "migrate",
        AdminCommand::Snapshot { .. } => "snapshot",
        AdminCommand::Warm { .. } => "warm",
        AdminCommand::Verify { .. } => "verify",
        AdminCommand::ClearCaches { .. } => "clear-caches",
        AdminCommand::WarmCaches { .. } => "warm-caches",
        AdminCommand::Analyze { .. } => "analyze",
        AdminCommand::Optimize => "optimize",
        AdminCommand::PairStore { .. } => "pair-store",
    }
}

/// What `command` works on: (Redis, the store).
fn needs(command: &AdminCommand) -> (Need, Need) {
    match command {
        AdminCommand::Migrate => (Need::Not, Need::Must),
        AdminCommand::Snapshot { .. } | AdminCommand::Verify { .. } | AdminCommand::Optimize => {
            (Need::IfSet, Need::Must)
        }
        AdminCommand::Warm { .. } | AdminCommand::PairStore { .. } => (Need::Must, Need::Must),
        // A running server's caches: the server holds all they work on.
        AdminCommand::ClearCaches {
            server: Some(_), ..
        }
        | AdminCommand::WarmCaches { .. } => (Need::Not, Need::Not),
        AdminCommand::ClearCaches { server: None, .. } => (Need::Must, Need::Not),
        AdminCommand::Analyze { .. } => (Need::IfSet, Need::IfSet),
    }
}

/// Without Redis, what holds the boards.
const EMBEDDED: &str = "without RANKD_REDIS_URL, rankd serve runs the embedded engine, whose \
                        boards live in the server's memory and are rebuilt from the store at every \
                        start";

impl Admin {
    /// Connects to what `command` works on, and to nothing else.
    ///
    /// # Errors
    /// [`Failure::Missing`] naming what the configuration lacks; unreachable services.
    pub async fn open(config: &Config, command: &AdminCommand) -> Result<Self, Failure> {
        let name = name(command);
        let (need_redis, need_store) = needs(command);
        let configured = Configured::of(config);
        let store = match (need_store, &configured) {
            (Need::Not, _) => None,
            (need, Configured::Sqlite(dir))
                if !matches!(command, AdminCommand::Migrate)
                    && !dir.join(crate::store::sqlite::FILE).exists() =>
            {
                if need == Need::Must {
                    return Err(Failure::Missing(format!(
                        "{name} needs the durable store, and {} holds none: rankd serve creates it \
                         at its first start there (or `rankd admin migrate` does). Set \
                         RANKD_DATA_DIR to the directory the server uses",
                        dir.display()
                    )));
                }
                None
            }
            (need, c) => match c.open().await? {
                Some(store) => Some(store),
                None if need == Need::Must => {
                    let why = match c {
                        Configured::RedisOnly => {
                            "with RANKD_REDIS_URL and no RANKD_DATABASE_URL, rankd keeps scores in \
                             Redis only: set RANKD_DATABASE_URL (or --database-url)"
                        }
                        _ => {
                            "RANKD_DATA_DIR is empty, so the embedded engine keeps scores in memory \
                             only: set RANKD_DATA_DIR to the directory the server uses, or \
                             RANKD_DATABASE_URL"
                        }
                    };
                    return Err(Failure::Missing(format!(
                        "{name} needs the durable store, and there is none: {why}"
                    )));
                }
                None => None,
            },
        };
        if let Some(store) = &store {
            if !matches!(command, AdminCommand::Migrate) {
                let pending = store.pending_migrations().await?;
                if !pending.is_empty() {
                    return Err(Failure::Missing(format!(
                        "the store lacks {} migration(s) ({}): run `rankd admin migrate` (rankd \
                         serve runs them at start)",
                        pending.len(),
                        pending.join(", ")
                    )));
                }
            }
        }
        let redis = match (need_redis, &config.redis_url) {
            (Need::Not, _) => None,
            (_, Some(url)) => Some(Self::connect_redis(config, url).await?),
            (Need::Must, None) => {
                return Err(Failure::Missing(format!(
                    "{name} works on Redis: set RANKD_REDIS_URL (or --redis-url); {EMBEDDED}"
                )))
            }
            (Need::IfSet, None) => None,
        };
        if matches!(command, AdminCommand::Analyze { server: None, .. })
            && redis.is_none()
            && store.is_none()
        {
            return Err(Failure::Missing(
                "analyze reports on Redis, the durable store and a running server (--server), and \
                 none is configured: set RANKD_REDIS_URL, RANKD_DATABASE_URL or RANKD_DATA_DIR, or \
                 give --server"
                    .into(),
            ));
        }
        // Commits and rebuilds go only into the store Redis was built from (see store::identity).
        if let (Some(r), Some(store)) = (&redis, &store) {
            if let Some(paired) = r.engine.store_pairing(None, false).await? {
                store.expect_id(paired);
            }
        }
        Ok(Self {
            config: config.clone(),
            redis,
            store,
            report: Report::new(),
            lease: tokio::sync::Mutex::new(None),
            holder: format!(
                "rankd admin {} at {}",
                std::process::id(),
                chrono::Utc::now().timestamp_millis()
            ),
        })
    }

    /// Connects to Redis with [`WORK_TIMEOUT`] per command.
    async fn connect_redis(config: &Config, url: &str) -> Result<Redis, Failure> {
        let mut rc = RedisConfig::of(config, url).map_err(Error::from)?;
        rc.pool_size = 2;
        rc.command_timeout = config.redis_timeout.max(WORK_TIMEOUT);
        let exec = Arc::new(RedisExecutor::connect(&rc).await.map_err(|e| match e {
            ExecError::Unavailable(m) | ExecError::Unanswered(m) => {
                Error::Unavailable(format!("Redis (redis_url): {m}"))
            }
            ExecError::Reply(m) => Error::Invalid(Invalid::new("redis_url", m)),
        })?);
        let engine = Engine::new(
            exec.clone(),
            Keys::new(&config.key_prefix)?,
            Arc::new(SystemClock),
            Self::engine_config(config),
        )
        .await?;
        Ok(Redis {
            engine: Arc::new(engine),
            exec,
        })
    }

    fn engine_config(config: &Config) -> EngineConfig {
        EngineConfig {
            dedupe_window: config.dedupe_window,
            ..EngineConfig::default()
        }
    }

    /// An engine of this process's own, over an empty in-process keyspace (the embedded engine's
    /// scripts), where a board is rebuilt from the store.
    async fn local_engine(&self) -> Result<Engine, Failure> {
        let clock = Arc::new(SystemClock);
        Ok(Engine::new(
            Arc::new(crate::backend::embedded::EmbeddedExecutor::with_config(
                clock.clone(),
                crate::backend::embedded::EmbeddedConfig {
                    lua_memory_limit: self.config.lua_memory_mb << 20,
                    ..crate::backend::embedded::EmbeddedConfig::default()
                },
            )),
            Keys::new(&self.config.key_prefix)?,
            clock,
            Self::engine_config(&self.config),
        )
        .await?)
    }

    /// Runs `command`; returns the exit status.
    ///
    /// # Errors
    /// [`Failure`].
    pub async fn run(&self, command: &AdminCommand, dry_run: bool) -> Result<u8, Failure> {
        match command {
            AdminCommand::Migrate => self.migrate(dry_run).await.map(|()| OK),
            AdminCommand::Snapshot { board } => {
                self.snapshot(board.as_deref(), dry_run).await.map(|()| OK)
            }
            AdminCommand::Warm { board } => self.warm(board.as_deref(), dry_run).await.map(|()| OK),
            AdminCommand::Verify { board } => self.verify(board.as_deref(), dry_run).await,
            AdminCommand::ClearCaches {
                server: Some(server),
                caches,
                board,
                api_key,
                ..
            } => {
                let clear = server::Clear {
                    server,
                    caches,
                    board: board.as_deref(),
                    api_key: api_key.as_deref(),
                };
                self.clear_server_caches(&clear, dry_run).await.map(|()| OK)
            }
            AdminCommand::ClearCaches {
                boards,
                yes,
                server: None,
                ..
            } => {
                if *boards && !*yes && !dry_run {
                    return Err(Failure::Missing(
                        "clear-caches --boards removes every board's Redis keys: add --yes to \
                         confirm"
                            .into(),
                    ));
                }
                self.clear_caches(*boards, dry_run).await.map(|()| OK)
            }
            AdminCommand::WarmCaches {
                server,
                board,
                window,
                period,
                scopes,
                limit,
                api_key,
            } => {
                let warm = server::Warm {
                    server,
                    board,
                    window: window.as_deref(),
                    period: period.as_deref(),
                    scopes,
                    limit: *limit,
                    api_key: api_key.as_deref(),
                };
                self.warm_server_caches(&warm, dry_run).await.map(|()| OK)
            }
            AdminCommand::Analyze { server, api_key } => {
                let server = match server {
                    Some(url) => Some(ServerStats::fetch(url, api_key.as_deref()).await?),
                    None => None,
                };
                self.analyze(server.as_ref(), None).await.map(|()| OK)
            }
            AdminCommand::Optimize => self.optimize(dry_run).await.map(|()| OK),
            AdminCommand::PairStore { yes } => {
                if !*yes && !dry_run {
                    return Err(Failure::Missing(
                        "pair-store makes rankd store into this store although it lacks the \
                         history Redis was built from, which then stays lost: add --yes to confirm"
                            .into(),
                    ));
                }
                self.pair_store(dry_run).await.map(|()| OK)
            }
        }
    }

    /// Redis, which the command was opened with.
    fn redis(&self) -> Result<&Redis, Failure> {
        self.redis
            .as_ref()
            .ok_or_else(|| Failure::Missing(format!("this works on Redis: {EMBEDDED}")))
    }

    /// The store, which the command was opened with.
    fn store(&self) -> Result<&dyn Store, Failure> {
        self.store
            .as_deref()
            .ok_or_else(|| Failure::Missing("this needs the durable store".into()))
    }

    /// The stored boards with their highest sequence numbers: `board` alone when given (an
    /// error naming it when the store does not hold it), else every live one.
    async fn stored_boards(&self, board: Option<&str>) -> Result<Vec<(BoardId, u64)>, Failure> {
        let all = self.store()?.boards().await?;
        match board {
            None => Ok(all),
            Some(b) => {
                let b = BoardId::parse(b)?;
                all.into_iter()
                    .find(|(s, _)| *s == b)
                    .map(|found| vec![found])
                    .ok_or(Failure::UnknownBoard(b))
            }
        }
    }

    /// Claims the snapshot run lease (see [`crate::store::snapshot::RUN_LEASE`]).
    async fn claim_lease(&self) -> Result<(), Failure> {
        let store = self.store()?;
        let Some(lease) = RunLease::claim(store, &self.holder).await? else {
            return Err(Failure::Busy(
                "another snapshot run holds the store's snapshot lease (rankd serve's periodic \
                 snapshot, or another `rankd admin snapshot`): try again when it ends"
                    .into(),
            ));
        };
        *self.lease.lock().await = Some(lease);
        Ok(())
    }

    /// Renews the snapshot run lease.
    async fn renew_lease(&self) -> Result<(), Failure> {
        if let Some(lease) = self.lease.lock().await.as_ref() {
            lease.renew(self.store()?).await?;
        }
        Ok(())
    }

    /// Gives the snapshot run lease up, if held.
    async fn release_lease(&self) {
        let (Some(lease), Some(store)) = (self.lease.lock().await.take(), self.store.as_deref())
        else {
            return;
        };
        if let Err(e) = lease.release(store).await {
            tracing::warn!(error = %e, "could not release the snapshot lease; it lapses in 20 seconds");
        }
    }

    /// migrate, warm (with Redis), snapshot, analyze. The slowlog that analyze judges is read
    /// first: the commands optimize runs itself (a snapshot of big boards) are no advice.
    ///
    /// # Errors
    /// The first step's failure.
    pub async fn optimize(&self, dry_run: bool) -> Result<(), Failure> {
        let slowlog = match &self.redis {
            Some(r) => Some(r.engine.slowlog().await?),
            None => None,
        };
        self.migrate(dry_run).await?;
        if self.redis.is_some() {
            self.warm(None, dry_run).await?;
        } else {
            self.report.line(
                "warm: nothing to do without Redis (the embedded engine loads the store at start)",
            );
        }
        self.snapshot(None, dry_run).await?;
        self.release_lease().await;
        self.analyze(None, slowlog).await
    }
}
