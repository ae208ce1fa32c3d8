//! Shared test helpers: a real engine on real Redis (standalone or cluster), with a key prefix of
//! its own so that tests run in parallel and never touch each other's keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rankd::backend::redis::{RedisConfig, RedisExecutor};
use rankd::board::{BoardDef, BoardId, Member, Scope, Score};
pub use rankd::engine::Clock;
use rankd::engine::{EngineConfig, ManualClock, Submit};
use rankd::keys::Keys;
use rankd::Engine;

use crate::cleanup::Keyspace;

/// Which Redis a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redis {
    Standalone,
    Cluster,
}

impl Redis {
    pub fn url(self) -> String {
        match self {
            Redis::Standalone => {
                std::env::var("RANKD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
            }
            Redis::Cluster => std::env::var("RANKD_TEST_CLUSTER_URL").expect(
                "RANKD_TEST_CLUSTER_URL is not set: run the suite with scripts/test (it starts a local Redis Cluster)",
            ),
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A unique key prefix for one test.
pub fn prefix() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t{}x{nanos:x}x{n}:", std::process::id())
}

/// An engine on its own prefix, with a clock the test can move.
pub struct Ctx {
    pub redis: Redis,
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
    pub prefix: String,
    /// The prefix's keys, deleted when the context is dropped: held by the context that made the
    /// prefix, not by those given one ([`Ctx::with_prefix`], [`Ctx::twin`]).
    _keys: Option<Keyspace>,
}

impl Ctx {
    pub async fn new(redis: Redis) -> Self {
        let keys = Keyspace::new(redis);
        let mut ctx = Self::with_prefix(redis, keys.prefix(), EngineConfig::default()).await;
        ctx._keys = Some(keys);
        ctx
    }

    pub async fn with_prefix(redis: Redis, prefix: &str, config: EngineConfig) -> Self {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()));
        let mut rc = RedisConfig::new(redis.url());
        rc.pool_size = 2;
        let exec = RedisExecutor::connect(&rc).await.expect("connect to Redis");
        // Instrumented, as `rankd serve` runs it: it counts the script calls the engine makes.
        let exec = rankd::backend::instrumented::Instrumented::new(Arc::new(exec));
        let engine = Engine::new(
            Arc::new(exec),
            Keys::new(prefix).unwrap(),
            clock.clone(),
            config,
        )
        .await
        .expect("engine starts");
        Self {
            redis,
            engine,
            clock,
            prefix: prefix.to_owned(),
            _keys: None,
        }
    }

    /// An engine over the embedded executor (in-process, no Redis), as `rankd serve` runs with
    /// nothing configured.
    pub async fn embedded() -> Self {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now().timestamp_millis()));
        let exec = rankd::backend::embedded::EmbeddedExecutor::new(clock.clone());
        let engine = Engine::new(
            Arc::new(exec),
            Keys::new("rankd:").unwrap(),
            clock.clone(),
            EngineConfig::default(),
        )
        .await
        .expect("engine starts");
        Self {
            redis: Redis::Standalone,
            engine,
            clock,
            prefix: "rankd:".to_owned(),
            _keys: None,
        }
    }

    /// A second engine (another rankd instance) on the same prefix.
    pub async fn twin(&self) -> Self {
        let t = Self::with_prefix(self.redis, &self.prefix, EngineConfig::default()).await;
        t.clock.set(self.clock.now_ms());
        t
    }

    pub async fn board(&self, id: &str, def: BoardDef) -> BoardId {
        let b = BoardId::parse(id).unwrap();
        assert!(
            self.engine.put_board(&b, def).await.unwrap(),
            "board {id} is new"
        );
        b
    }

    pub async fn submit(
        &self,
        board: &BoardId,
        member: &str,
        value: f64,
    ) -> rankd::engine::Submitted {
        self.engine
            .submit(&Submit::new(
                board.clone(),
                m(member),
                Score::new("value", value).unwrap(),
            ))
            .await
            .unwrap()
    }

    /// Deletes every board the test made.
    pub async fn cleanup(&self) {
        for b in self.engine.boards().await.unwrap() {
            self.engine.delete_board(&b.board).await.unwrap();
        }
    }
}

pub fn m(s: &str) -> Member {
    Member::parse(s).unwrap()
}

pub fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

pub fn score(v: f64) -> Score {
    Score::new("value", v).unwrap()
}

/// Runs each named `async fn(Ctx)` against standalone Redis and against a Redis Cluster.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_standalone_redis() {
                let ctx = $crate::helpers::Ctx::new($crate::helpers::Redis::Standalone).await;
                super::$name(&ctx).await;
                ctx.cleanup().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_redis_cluster() {
                let ctx = $crate::helpers::Ctx::new($crate::helpers::Redis::Cluster).await;
                super::$name(&ctx).await;
                ctx.cleanup().await;
            }
        }
    )*};
}

/// Waits for `child` to exit, at most `within`, and returns how it exited.
pub async fn exit_status(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rankd did not exit within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A rankd child process, killed (and reaped) when dropped, however the test ended.
pub struct RankdProcess(std::process::Child);

impl std::ops::Deref for RankdProcess {
    type Target = std::process::Child;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for RankdProcess {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for RankdProcess {
    fn drop(&mut self) {
        // Nothing is signalled once the child was reaped: std keeps its status.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rankd serve` on 127.0.0.1:`port` as a child process, with no config file, no API keys and no
/// output unless `configure` adds them (it runs last, so what it sets wins). Returns once
/// `GET ready_path` answers 200; panics when `within` passes first or the process exits.
pub async fn spawn_rankd(
    port: u16,
    ready_path: &str,
    within: std::time::Duration,
    configure: impl FnOnce(&mut std::process::Command),
) -> RankdProcess {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rankd"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("RANKD_CONFIG")
        .env_remove("RANKD_API_KEYS")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    configure(&mut cmd);
    let mut child = RankdProcess(cmd.spawn().expect("the rankd binary starts"));
    let url = format!("http://127.0.0.1:{port}{ready_path}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + within;
    loop {
        let r = http
            .get(&url)
            .timeout(std::time::Duration::from_secs(1))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("rankd exited with {status} before {ready_path} answered 200");
        }
        if std::time::Instant::now() >= deadline {
            panic!("rankd's {ready_path} did not answer 200 within {within:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// What a [`Hooked`] executor is about to send.
pub enum Sending<'a> {
    /// One script call.
    One(&'a rankd::backend::Call),
    /// A pipeline of calls.
    Many(&'a [rankd::backend::Call]),
}

/// The hook of a [`Hooked`] executor: the work to run first, if any, for what is about to go.
pub type Hook =
    Box<dyn Fn(Sending<'_>) -> Option<futures::future::BoxFuture<'static, ()>> + Send + Sync>;

/// A real executor that first runs whatever its hook returns for the call about to be sent, so
/// that a test can put another instance's request at an exact point. Every call still runs on the
/// real Redis.
pub struct Hooked {
    pub inner: Arc<dyn rankd::backend::Executor>,
    pub hook: Hook,
}

impl Hooked {
    /// A hooked executor on a new connection to the Redis at `url`.
    pub async fn on(url: &str, hook: Hook) -> Self {
        let inner = rankd::backend::redis::RedisExecutor::connect(
            &rankd::backend::redis::RedisConfig::new(url),
        )
        .await
        .unwrap();
        Self {
            inner: Arc::new(inner),
            hook,
        }
    }
}

#[async_trait::async_trait]
impl rankd::backend::Executor for Hooked {
    async fn load(
        &self,
        scripts: &[&'static rankd::backend::Script],
    ) -> Result<(), rankd::backend::ExecError> {
        self.inner.load(scripts).await
    }

    async fn eval(
        &self,
        call: rankd::backend::Call,
    ) -> Result<rankd::backend::Reply, rankd::backend::ExecError> {
        if let Some(first) = (self.hook)(Sending::One(&call)) {
            first.await;
        }
        self.inner.eval(call).await
    }

    async fn hash_fields(
        &self,
        key: &str,
        fields: &[String],
    ) -> Result<Vec<Option<String>>, rankd::backend::ExecError> {
        self.inner.hash_fields(key, fields).await
    }

    async fn eval_many(
        &self,
        calls: Vec<rankd::backend::Call>,
    ) -> Result<
        Vec<Result<rankd::backend::Reply, rankd::backend::ExecError>>,
        rankd::backend::ExecError,
    > {
        if let Some(first) = (self.hook)(Sending::Many(&calls)) {
            first.await;
        }
        self.inner.eval_many(calls).await
    }

    async fn ping(&self) -> Result<(), rankd::backend::ExecError> {
        self.inner.ping().await
    }
}

/// An engine with default settings and the system clock on `exec`, under a fresh key prefix.
pub async fn engine_on(exec: Arc<dyn rankd::backend::Executor>) -> rankd::Engine {
    rankd::Engine::new(
        exec,
        rankd::keys::Keys::new(&prefix()).unwrap(),
        Arc::new(rankd::engine::SystemClock),
        rankd::engine::EngineConfig::default(),
    )
    .await
    .unwrap()
}

/// The value of one series in a Prometheus text scrape, by the series as it is written there
/// (`name` or `name{labels}`).
pub fn series_value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {series}:\n{scrape}"))
}
