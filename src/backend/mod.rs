//! Script executors: where the Lua scripts run. The engine talks only to [`Executor`], so a second,
//! in-process executor can stand in for Redis with the same scripts, keys and replies.

pub mod embedded;
pub mod instrumented;
pub mod redis;
mod refusal;

pub use refusal::Refusal;

use std::sync::OnceLock;

use async_trait::async_trait;

/// A Lua script of lua/, with the shared helpers of lua/lib.lua prepended.
#[derive(Debug)]
pub struct Script {
    name: &'static str,
    source: &'static str,
    sha1: OnceLock<String>,
    /// Its call latency series, looked up once (see [`crate::metrics::Resolved`]).
    duration: crate::metrics::Resolved<metrics::Histogram>,
}

impl Script {
    /// A script named `name` with the full `source`.
    pub const fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            sha1: OnceLock::new(),
            duration: crate::metrics::Resolved::new(),
        }
    }

    /// Records one call's latency in its series.
    pub fn record_duration(&'static self, secs: f64) {
        self.duration.with(
            || metrics::histogram!(crate::metrics::SCRIPT_DURATION, "script" => self.name),
            |h| h.record(secs),
        );
    }

    /// The script's file name without `.lua`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The full source, helpers included.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The SHA-1 that EVALSHA names the script by.
    pub fn sha1(&self) -> &str {
        self.sha1.get_or_init(|| fred::util::sha1_hash(self.source))
    }
}

/// A reply, as Redis converts a Lua script's return value (RESP2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// nil (Lua false or nil).
    Nil,
    /// An integer (Lua numbers are truncated to integers).
    Int(i64),
    /// A string (status replies included).
    Bulk(String),
    /// An array (a Lua table, up to its first nil).
    Array(Vec<Reply>),
}

/// What a batch of calls ([`Executor::eval_many`]) answers: each call's own result, or the error
/// that kept the batch from running.
pub type Replies = Result<Vec<Result<Reply, ExecError>>, ExecError>;

/// Why a script call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The script (or Redis running it) answered with an error reply.
    #[error("{0}")]
    Reply(String),
    /// The backend could not be reached: the call was not sent, so it did not run.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call was sent and no answer came (it timed out, or its connection was lost): it may
    /// have run, or may yet run.
    #[error("unanswered: {0}")]
    Unanswered(String),
}

impl ExecError {
    /// The script's refusal this error reply carries, typed; `None` for any other failure.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Reply(m) => Refusal::parse(m),
            Self::Unavailable(_) | Self::Unanswered(_) => None,
        }
    }

    /// What went wrong, without the kind's prefix that `Display` adds.
    pub fn detail(&self) -> &str {
        match self {
            Self::Reply(m) | Self::Unavailable(m) | Self::Unanswered(m) => m,
        }
    }
}

/// One script call of a pipeline.
#[derive(Debug, Clone)]
pub struct Call {
    /// The script.
    pub script: &'static Script,
    /// KEYS: every key the script touches.
    pub keys: Vec<String>,
    /// ARGV.
    pub args: Vec<String>,
}

/// What a backend reports about itself for the cache statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    /// `redis`, `redis-cluster` or `embedded`.
    pub kind: &'static str,
    /// Memory the data uses, in bytes (Redis: `used_memory`, summed over primaries).
    pub used_memory_bytes: Option<u64>,
    /// Keys held (Redis: `DBSIZE`, summed over primaries).
    pub keys: Option<u64>,
    /// Script calls the backend answered through this process.
    pub script_calls: u64,
    /// Script-cache hits: calls whose script was loaded (None where scripts cannot be lost: then
    /// every call is one).
    pub script_hits: Option<u64>,
    /// Script-cache misses: calls that met NOSCRIPT (restart, failover, SCRIPT FLUSH), and scripts
    /// the readiness check found missing and loaded.
    pub script_reloads: u64,
    /// Key lookups that found their key since the backend started (Redis: `keyspace_hits`).
    pub keyspace_hits: Option<u64>,
    /// Key lookups that did not (Redis: `keyspace_misses`).
    pub keyspace_misses: Option<u64>,
}

/// Runs rankd's scripts.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Loads every script, so that a broken script fails start-up rather than the first request.
    ///
    /// # Errors
    /// [`ExecError`] when a script does not compile or the backend is unreachable.
    async fn load(&self, scripts: &[&'static Script]) -> Result<(), ExecError>;

    /// Runs one script.
    ///
    /// # Errors
    /// [`ExecError::Reply`] for an error reply, [`ExecError::Unavailable`] when the backend is out of
    /// reach.
    async fn eval(&self, call: Call) -> Result<Reply, ExecError>;

    /// Runs many scripts in as few round trips as the backend allows. Calls whose keys share a hash
    /// slot run in the order given. Each call has its own result.
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when the backend is out of reach before anything ran.
    async fn eval_many(&self, calls: Vec<Call>) -> Replies;

    /// The values of `fields` in hash `key`, in order (`None` where absent): `HMGET`, the one raw
    /// command rankd sends, as the check of a cached page must cost no more than that.
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when the backend is out of reach or keeps no hashes.
    async fn hash_fields(
        &self,
        _key: &str,
        _fields: &[String],
    ) -> Result<Vec<Option<String>>, ExecError> {
        Err(ExecError::Unavailable(
            "this backend keeps no hashes".into(),
        ))
    }

    /// Checks that the backend answers.
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when it does not.
    async fn ping(&self) -> Result<(), ExecError>;

    /// Loads whichever of `scripts` the backend has lost (a Redis restarted empty, or flushed), so
    /// that being ready means the next call finds its script. A backend that cannot lose them has
    /// nothing to do.
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when the backend cannot be asked or cannot load them.
    async fn reload_missing(&self, _scripts: &[&'static Script]) -> Result<(), ExecError> {
        Ok(())
    }

    /// Memory, key counts and script-cache figures, as far as the backend knows them.
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when the backend cannot be asked.
    async fn stats(&self) -> Result<BackendStats, ExecError> {
        Ok(BackendStats::default())
    }

    /// The backend's slowest recent commands, one line each (`SLOWLOG GET` on Redis).
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when the backend cannot be asked.
    async fn slowlog(&self) -> Result<Vec<String>, ExecError> {
        Ok(Vec::new())
    }

    /// Bytes the given keys take (Redis: `MEMORY USAGE`, which samples big collections), or
    /// `None` where the backend cannot say.
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when the backend cannot be asked.
    async fn memory_usage(&self, _keys: &[String]) -> Result<Option<u64>, ExecError> {
        Ok(None)
    }

    /// Closes the backend's connections: for an executor given up on (a start-up attempt that
    /// failed further on), whose connections would otherwise stay open and keep reconnecting.
    async fn close(&self) {}
}
