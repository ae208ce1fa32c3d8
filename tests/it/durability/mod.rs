//! Durability end to end: every acknowledged operation reaches the store (Postgres, or SQLite for
//! the embedded default), and a board Redis lost is rebuilt from it exactly. One file per theme;
//! here, the engines, instances and reads the themes share. Each test runs its own redis-server or
//! key prefix, and its own database.

mod crashes;
mod journal;
mod leases;
mod rebuild;
mod redis_loss;
mod snapshots;
mod startup;
mod stores;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::board::BoardId;
use rankd::config::Config;
use rankd::engine::{Durability, Limit, SystemClock, View};
use rankd::{Engine, Error};

use crate::helpers::{prefix, spawn_rankd, Redis};
use crate::private::{PrivateRedis, TestDb};

async fn engine(redis: &PrivateRedis, db: &TestDb, durability: Durability) -> Arc<Engine> {
    let config = Config {
        redis_url: Some(redis.url()),
        database_url: Some(db.url()),
        durability,
        key_prefix: prefix(),
        ..Config::default()
    };
    rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .expect("engine starts")
}

/// Everything a dashboard could read from a board, to compare before and after a loss.
async fn everything(e: &Engine, b: &BoardId, views: &[View]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for v in views {
        let top = e.top(b, v, Limit::new(1000).unwrap()).await?;
        out.push(format!("{v:?} total={} {:?}", top.total, top.entries));
    }
    Ok(out)
}

/// Retries an engine call while the board is being rebuilt (503), up to a deadline.
async fn until_ready<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(Error::Unavailable(_) | Error::Rebuilding(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("not ready: {e}"),
        }
    }
}

/// Waits until `e` is connected again after its Redis restarted: it fails fast, rather than queue,
/// while its connection is down, and reconnects in its own time.
async fn reconnected(e: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(err) = e.ready().await {
        assert!(Instant::now() < deadline, "never reconnected: {err}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The members of a page, in rank order.
fn ranked(page: &rankd::engine::Page) -> Vec<&str> {
    page.entries.iter().map(|x| x.member.as_str()).collect()
}

/// Every key of a board exactly as Redis holds it: members, stored scores (ticks included), ranks.
async fn exact(e: &Engine, b: &BoardId) -> Vec<String> {
    let mut keys: Vec<String> = e
        .snapshot_board(b)
        .await
        .unwrap()
        .into_iter()
        .map(|k| {
            format!(
                "{} {} {:?} expires {:?}: {:?}",
                k.key.window, k.key.period, k.key.scope, k.key.expire_ms, k.entries
            )
        })
        .collect();
    keys.sort();
    keys
}

/// The rankd binary as a child process, against the shared Redis (own prefix) and a test database.
struct Binary {
    child: crate::helpers::RankdProcess,
    base: String,
}

impl Binary {
    async fn start(prefix: &str, db: &TestDb, durability: &str, port: u16) -> Self {
        let child = spawn_rankd(port, "/readyz", Duration::from_secs(20), |c| {
            c.args(["--redis-url", &Redis::Standalone.url()])
                .args(["--key-prefix", prefix])
                .env("RANKD_DATABASE_URL", db.url())
                .env("RANKD_DURABILITY", durability);
        })
        .await;
        let base = format!("http://127.0.0.1:{port}");
        Self { child, base }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs redis-cli against a private instance; its answer.
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A journal that takes every operation and keeps none: async durability with its queue full,
/// where an answered write lives only in the Redis log until the sweep copies it.
struct Dropping;

#[async_trait::async_trait]
impl rankd::engine::Journal for Dropping {
    async fn record(&self, _ops: Vec<rankd::engine::LoggedOp>) -> Result<(), Error> {
        Ok(())
    }
    async fn board_deleting(&self, _board: &BoardId) -> Result<bool, Error> {
        Ok(true)
    }
    async fn board_deleted(&self, _board: &BoardId) -> Result<(), Error> {
        Ok(())
    }
    async fn lost(&self, _board: &BoardId) -> Result<bool, Error> {
        Ok(false)
    }
}

/// A test database beside `redis`, a configuration naming both, and the store, migrated.
async fn durable_on(redis: &PrivateRedis) -> (TestDb, Config, Arc<rankd::store::PgStore>) {
    let db = TestDb::create().await;
    let config = Config {
        redis_url: Some(redis.url()),
        database_url: Some(db.url()),
        key_prefix: prefix(),
        ..Config::default()
    };
    let store = Arc::new(rankd::store::PgStore::connect(&db.url()).await.unwrap());
    store.migrate().await.unwrap();
    (db, config, store)
}

/// An engine on `config`'s Redis with a journal on `store`, as `rankd serve` builds it but without
/// the background sweep and checks, over `exec` (a plain Redis executor when none).
async fn journaled(
    config: &Config,
    store: Arc<rankd::store::PgStore>,
    clock: Arc<dyn rankd::engine::Clock>,
    exec: Option<Arc<dyn rankd::backend::Executor>>,
) -> Arc<Engine> {
    let engine = match exec {
        Some(exec) => Engine::new(
            exec,
            rankd::keys::Keys::new(&config.key_prefix).unwrap(),
            clock,
            rankd::engine::EngineConfig::default(),
        )
        .await
        .unwrap(),
        None => rankd::serve::connect(config, clock).await.unwrap(),
    };
    with_persister(engine, store)
}

/// `engine` with a sync-mode journal on `store`, and no background sweep or checks.
fn with_persister(engine: Engine, store: Arc<rankd::store::PgStore>) -> Arc<Engine> {
    let persister = rankd::store::Persister::start(
        store,
        Durability::Sync,
        tokio_util::sync::CancellationToken::new(),
    );
    let e = Arc::new(engine.with_journal(persister.journal()));
    persister.attach(&e);
    e
}
