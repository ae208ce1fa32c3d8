//! `rankd serve`: configuration → backend → engine → HTTP server, and the background work beside it.

use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

use crate::backend::embedded::{EmbeddedConfig, EmbeddedExecutor};
use crate::backend::instrumented::Instrumented;
use crate::backend::redis::{RedisConfig, RedisExecutor};
use crate::backend::{ExecError, Executor};
use crate::config::Config;
use crate::engine::{Clock, Engine, EngineConfig, SystemClock};
use crate::error::Error;
use crate::http::{App, Starting};
use crate::keys::Keys;
use crate::store::{rebuild, Configured, Persister};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine could not start (backend unreachable, scripts not loading, bad prefix).
    #[error("engine: {0}")]
    Engine(#[from] Error),
    /// The listen address could not be bound.
    #[error("listen: {0}")]
    Bind(#[from] std::io::Error),
}

/// Builds the engine the configuration asks for: Redis when `redis_url` is set, else embedded.
///
/// # Errors
/// [`Error::Unavailable`] when Redis cannot be reached, [`Error::Invalid`] for a bad key prefix.
pub async fn build_engine(config: &Config, clock: Arc<dyn Clock>) -> Result<Arc<Engine>, Error> {
    build(config, clock, &Starting::default()).await
}

/// [`build_engine`], saying in `starting` what it is doing as it goes (the start-up responder's
/// 503 answers quote it).
async fn build(
    config: &Config,
    clock: Arc<dyn Clock>,
    starting: &Starting,
) -> Result<Arc<Engine>, Error> {
    // Before anything is recorded: what is set before the recorder exists is lost (the store's
    // durability gauge, the start-up rebuilds).
    crate::metrics::install();
    starting.set(CONNECTING);
    let engine = connect(config, clock).await?;
    let exec = engine.executor();
    match attach(config, engine, starting).await {
        Ok(engine) => {
            // Boards whose keys were written before the scope index existed get theirs, in the
            // background: until then max_scopes counts only the scopes written since.
            let walker = engine.clone();
            tokio::spawn(async move {
                match walker.backfill_all_scopes().await {
                    Ok(0) => {}
                    Ok(boards) => tracing::info!(
                        boards,
                        "entered the scopes of boards written before the scope index"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not enter older boards' scopes in their scope index; the next start tries again")
                    }
                }
            });
            Ok(engine)
        }
        Err(e) => {
            // Given up on: its Redis connections go with it, or every retry at start-up would
            // leave a pool connected and reconnecting.
            exec.close().await;
            Err(e)
        }
    }
}

/// Connects the backend the configuration names and starts an engine on it, with no durable store
/// attached (the administrative commands work this way).
///
/// # Errors
/// [`Error::Unavailable`] when Redis cannot be reached, [`Error::Invalid`] for a bad key prefix.
pub async fn connect(config: &Config, clock: Arc<dyn Clock>) -> Result<Engine, Error> {
    let exec: Arc<dyn Executor> = match &config.redis_url {
        Some(url) => {
            let rc = RedisConfig::of(config, url)?;
            let exec = RedisExecutor::connect(&rc).await.map_err(|e| match e {
                ExecError::Unavailable(m) | ExecError::Unanswered(m) => {
                    Error::Unavailable(format!("redis_url: {m}"))
                }
                ExecError::Reply(m) => Error::Invalid(crate::error::Invalid::new("redis_url", m)),
            })?;
            tracing::info!(
                backend = if crate::backend::redis::is_cluster_url(url) {
                    "redis-cluster"
                } else {
                    "redis"
                },
                tls = crate::backend::redis::is_tls_url(url),
                "using Redis"
            );
            Arc::new(exec)
        }
        None => {
            tracing::info!(
                "no RANKD_REDIS_URL: running the embedded engine (the same Lua scripts, in-process)"
            );
            Arc::new(EmbeddedExecutor::with_config(
                clock.clone(),
                EmbeddedConfig {
                    lua_memory_limit: config.lua_memory_mb << 20,
                    ..EmbeddedConfig::default()
                },
            ))
        }
    };
    let exec: Arc<dyn Executor> = Arc::new(Instrumented::new(exec));
    let keys = Keys::new(&config.key_prefix)?;
    let engine_config = EngineConfig {
        dedupe_window: config.dedupe_window,
        write_share: config.write_share,
        cache: crate::cache::CacheSettings {
            ttl: [
                config.cache_ttl_leaderboard,
                config.cache_ttl_analytics,
                config.cache_ttl_scope_stats,
                config.cache_ttl_achievements,
            ],
            max_bytes: config.cache_max_bytes as u64,
        },
        ..EngineConfig::default()
    };
    Engine::new(exec, keys, clock, engine_config).await
}

/// Attaches the durable store when the configuration names one: migrations, persister, the
/// start-up check that rebuilds what Redis lost, and the background sweep and snapshots.
///
/// # Errors
/// [`Error::Unavailable`] when Postgres or Redis cannot be reached.
pub async fn attach_store(config: &Config, engine: Engine) -> Result<Arc<Engine>, Error> {
    attach(config, engine, &Starting::default()).await
}

/// [`attach_store`], saying in `starting` what it is doing as it goes.
async fn attach(
    config: &Config,
    engine: Engine,
    starting: &Starting,
) -> Result<Arc<Engine>, Error> {
    let configured = Configured::of(config);
    match &configured {
        Configured::Postgres(_) => tracing::info!("durable store: Postgres"),
        Configured::Sqlite(dir) => tracing::info!(data_dir = %dir.display(), "durable store: SQLite"),
        Configured::RedisOnly => tracing::warn!(
            "NOT DURABLE: no RANKD_DATABASE_URL is set, so scores live only in Redis and a Redis \
             restart without persistence loses them. Set RANKD_DATABASE_URL=postgres://user@host:port/db"
        ),
        Configured::MemoryOnly => tracing::warn!(
            "NOT DURABLE: RANKD_DATA_DIR is empty, so the embedded engine keeps scores in memory \
             only and a restart loses them"
        ),
    }
    starting.set(OPENING_STORE);
    let Some(store) = configured.open().await? else {
        metrics::gauge!(crate::metrics::STORE_DURABLE).set(0.0);
        return Ok(Arc::new(engine));
    };
    store.migrate().await?;
    if config.durability == crate::engine::Durability::Async {
        tracing::warn!(
            "ASYNC DURABILITY: a write is answered once the engine applied it, before the store \
             commits it (normally within a second; rankd_store_lag_seconds shows how far behind). \
             If rankd and Redis die together, writes answered in that window are lost. Set \
             RANKD_DURABILITY=sync for answered writes that survive any crash"
        );
    }
    let persister = Persister::start(store.clone(), config.durability, CancellationToken::new());
    let engine = Arc::new(engine.with_journal(persister.journal()));
    persister.attach(&engine);
    metrics::gauge!(crate::metrics::STORE_DURABLE).set(1.0);
    // Nothing is rebuilt from a store that is not the one Redis was built from (it says so).
    starting.set(CHECKING_BOARDS);
    if persister.paired().await? {
        let report = rebuild::check(&engine, store.as_ref()).await?;
        if !report.rebuilt.is_empty() || !report.finished_deletes.is_empty() {
            tracing::warn!(rebuilt = ?report.rebuilt, finished_deletes = ?report.finished_deletes, "start-up check repaired Redis from the store");
        }
    }
    tokio::spawn(background_store(
        Arc::downgrade(&persister),
        Arc::downgrade(&engine),
        config.snapshot_interval,
        config.snapshot_retention_days,
    ));
    tracing::info!(durability = ?config.durability, "durable store attached");
    Ok(engine)
}

/// How soon a periodic snapshot skipped for another run's lease is tried again.
const SNAPSHOT_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Every second: sweep the Redis logs into the store; every ten: check for boards Redis lost;
/// every `snapshot_every`: snapshot every key (one instance at a time). Stops when the engine is
/// dropped.
async fn background_store(
    persister: Weak<Persister>,
    engine: Weak<Engine>,
    snapshot_every: std::time::Duration,
    keep_days: u32,
) {
    // The interval counts from the store's latest snapshot, not from this start: an instance
    // restarted more often than the interval still takes its snapshots, so a start replays about
    // an interval of operations past a rebuild base at most, not all since the last one (the
    // embedded engine replays its tail at every start).
    let mut last_snapshot = {
        let age = match persister.upgrade() {
            Some(p) => p.store().last_snapshot_age_secs().await,
            None => return,
        };
        let age = match age {
            Ok(Some(secs)) => std::time::Duration::from_secs(secs.max(0) as u64),
            // A new store: its first snapshot an interval after its first start.
            Ok(None) => std::time::Duration::ZERO,
            Err(err) => {
                tracing::debug!(error = %err, "could not read the latest snapshot's age; counting from now");
                std::time::Duration::ZERO
            }
        };
        let now = std::time::Instant::now();
        now.checked_sub(age.min(snapshot_every)).unwrap_or(now)
    };
    let holder = format!(
        "{}:{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let (Some(p), Some(e)) = (persister.upgrade(), engine.upgrade()) else {
            return;
        };
        if let Err(err) = p.sweep().await {
            tracing::debug!(error = %err, "sweep failed; will retry");
        }
        n += 1;
        if n.is_multiple_of(10) {
            let paired = match p.paired().await {
                Ok(paired) => paired,
                Err(err) => {
                    tracing::debug!(error = %err, "store pairing check failed; will retry");
                    false
                }
            };
            if paired {
                match rebuild::check(&e, p.store()).await {
                    Ok(r) if !r.rebuilt.is_empty() => {
                        tracing::warn!(rebuilt = ?r.rebuilt, "rebuilt boards Redis lost")
                    }
                    Ok(_) => {}
                    Err(err) => tracing::debug!(error = %err, "store check failed; will retry"),
                }
            }
        }
        if last_snapshot.elapsed() >= snapshot_every {
            last_snapshot = std::time::Instant::now();
            match crate::store::snapshot::periodic(&e, p.store(), &holder, keep_days).await {
                Ok(Some(_)) => {}
                // Another run holds the lease (or a run of a process that died, until its lease
                // lapses): try again in a few seconds rather than a whole interval later.
                Ok(None) => {
                    last_snapshot = std::time::Instant::now()
                        .checked_sub(snapshot_every.saturating_sub(SNAPSHOT_RETRY))
                        .unwrap_or(last_snapshot);
                }
                Err(err) => tracing::warn!(error = %err, "periodic snapshot failed"),
            }
        }
    }
}

/// `rankd serve`: runs the server until SIGINT or SIGTERM. Returns the process's exit status: 0, or
/// 1 with the reason on standard error when it could not start.
pub async fn main(config: Config) -> std::process::ExitCode {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot handle SIGTERM; stopping");
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
        token.cancel();
    });
    match serve(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rankd serve: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the server until `shutdown` is cancelled.
///
/// # Errors
/// [`ServeError`] when the engine cannot start or the address cannot be bound.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    // Bound and answering first: a taken address fails the start at once, and probes reach the
    // process while the engine waits for its backends and does its start-up work.
    let started = std::time::Instant::now();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    if config.api_keys.is_empty() {
        // Allowed on loopback only (the configuration refuses anything else), yet worth saying.
        tracing::warn!(
            "NO AUTHENTICATION: no API key is configured, so every route is open to anyone who \
             can reach this address. Set RANKD_API_KEYS (e.g. RANKD_API_KEYS=\"$(openssl rand -hex 16):admin\")"
        );
    }
    // From here /healthz answers; the rest answers 503 until the start-up work is done.
    tracing::info!(addr = %listener.local_addr()?, "rankd listening");
    let Some(engine) = start_engine(&config, &listener, &shutdown).await? else {
        return Ok(());
    };
    let app = App::with_listener(listener, config.clone(), engine.clone());
    tracing::info!(
        start_ms = started.elapsed().as_millis() as u64,
        "rankd ready: serving every route"
    );
    app.run(shutdown).await;
    // Every request is answered: what async durability has not committed yet is stored now (the
    // embedded engine's log ends with the process).
    match engine.flush_journal().await {
        Ok(()) => tracing::info!("stopped"),
        Err(e) => {
            tracing::warn!(error = %e, "could not store every answered write before stopping")
        }
    }
    Ok(())
}

/// What the start-up responder's 503 answers say rankd is doing, phase by phase.
const CONNECTING: &str = "rankd is starting: it is connecting to the leaderboard backend";
const OPENING_STORE: &str =
    "rankd is starting: it is opening the durable store and applying its migrations";
const CHECKING_BOARDS: &str = "rankd is starting: it is checking the boards of the durable store \
     against the leaderboard backend, and rebuilding any the backend lacks";
const OUT_OF_REACH: &str =
    "rankd is starting: the leaderboard backend or the durable store is not reachable yet";

/// Builds the engine, while `listener` answers `/healthz` and 503 to everything else (saying which
/// part of the start-up work it waits for), and waiting for Redis and the store while they are out
/// of reach (rankd may start before them): each attempt after the first waits twice as long as the
/// one before, up to 5 s. `None` when shutdown came first.
///
/// # Errors
/// [`ServeError::Engine`] for anything but a backend out of reach (a bad key prefix, a script
/// that does not load, a refused password).
async fn start_engine(
    config: &Config,
    listener: &tokio::net::TcpListener,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<Engine>>, ServeError> {
    let mut delay = std::time::Duration::from_millis(250);
    // One cap on connections for every attempt: those the responder took stay counted while they last.
    let limit = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let starting = Starting::default();
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            r = crate::http::answer_while_starting(
                listener,
                config,
                &limit,
                &starting,
                build(config, Arc::new(SystemClock), &starting),
            ) => r,
        };
        match attempt {
            Ok(engine) => return Ok(Some(engine)),
            Err(Error::Unavailable(m)) => {
                // The alert on an unreachable backend must see this too.
                metrics::gauge!(crate::metrics::BACKEND_UP).set(0.0);
                tracing::warn!(
                    error = %m,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot start yet: a backend is out of reach; answering /healthz, and 503 to \
                     everything else, until it is back"
                );
                starting.set(OUT_OF_REACH);
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = crate::http::answer_while_starting(
                        listener,
                        config,
                        &limit,
                        &starting,
                        tokio::time::sleep(delay),
                    ) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
