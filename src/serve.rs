//! `rankd serve`: configuration → backend → engine → HTTP server, and the background work beside it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backend::instrumented::Instrumented;
use crate::backend::redis::{RedisConfig, RedisExecutor};
use crate::backend::{ExecError, Executor};
use crate::config::Config;
use crate::engine::{Clock, Engine, EngineConfig, SystemClock, View};
use crate::error::Error;
use crate::http::App;
use crate::keys::Keys;
use crate::window::Window;

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
    let exec: Arc<dyn Executor> = match &config.redis_url {
        Some(url) => {
            let mut rc = RedisConfig::new(url.clone());
            rc.pool_size = config.redis_pool_size;
            let exec = RedisExecutor::connect(&rc).await.map_err(|e| match e {
                ExecError::Unavailable(m) | ExecError::Reply(m) => {
                    Error::Unavailable(format!("redis_url: {m}"))
                }
            })?;
            tracing::info!(
                backend = if url.starts_with("redis-cluster://") {
                    "redis-cluster"
                } else {
                    "redis"
                },
                "using Redis"
            );
            Arc::new(exec)
        }
        None => {
            return Err(Error::Invalid(crate::error::Invalid::new(
                "redis_url",
                "must be set: RANKD_REDIS_URL=redis://127.0.0.1:6379",
            )))
        }
    };
    let exec: Arc<dyn Executor> = Arc::new(Instrumented::new(exec));
    let keys = Keys::new(&config.key_prefix)?;
    let engine_config = EngineConfig {
        dedupe_window: config.dedupe_window,
        ..EngineConfig::default()
    };
    Ok(Arc::new(
        Engine::new(exec, keys, clock, engine_config).await?,
    ))
}

/// Runs the server until `shutdown` is cancelled.
///
/// # Errors
/// [`ServeError`] when the engine cannot start or the address cannot be bound.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    let engine = build_engine(&config, Arc::new(SystemClock)).await?;
    let app = App::build(config.clone(), engine.clone()).await?;
    tracing::info!(addr = %app.local_addr()?, "rankd listening");
    let sampler = tokio::spawn(sample_metrics(
        engine,
        config.metrics_sample,
        shutdown.clone(),
    ));
    app.run(shutdown).await;
    sampler.abort();
    Ok(())
}

/// Samples board sizes and backend health into gauges, so a scrape costs no Redis work.
pub async fn sample_metrics(
    engine: Arc<Engine>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _ = engine.ready().await;
        let Ok(boards) = engine.boards().await else {
            continue;
        };
        for b in boards {
            let window = if b.definition.windows.contains(&Window::All) {
                Window::All
            } else {
                b.definition.windows[0]
            };
            if let Ok(n) = engine.count(&b.board, &View::current(window)).await {
                metrics::gauge!(crate::metrics::BOARD_MEMBERS, "board" => b.board.to_string())
                    .set(n as f64);
            }
        }
    }
}
