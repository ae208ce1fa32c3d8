//! The embedded executor: rankd's Lua scripts run in-process, on an in-memory store with Redis 7.0's
//! semantics, so that `rankd serve` can run with no Redis at all.
//!
//! The scripts are the very ones Redis runs (lua/, through [`crate::engine::scripts`]); nothing here
//! knows about leaderboards. What is reimplemented is what the scripts stand on:
//!
//! - [`lua`]: a Lua 5.1 state (vendored, through mlua) dressed as Redis' scripting environment —
//!   `KEYS`/`ARGV`, `redis.call` and friends, read-only globals, Redis' conversions between Lua values
//!   and replies, and Redis' error texts;
//! - [`commands`]: the commands the scripts call, with Redis 7.0's parsing, replies and errors;
//! - [`keyspace`]: keys, values and expiry; [`zset`] and [`tree`]: the sorted set, an
//!   order-statistic structure with rank, rank ranges and score ranges in O(log n);
//! - [`num`]: numbers read and printed exactly as Redis reads and prints them.
//!
//! # Concurrency
//!
//! One owner thread holds the Lua state and the keyspace; nothing else touches them. Callers send
//! each request over a channel and await a oneshot reply, so async tasks never block on the store.
//! The owner runs requests one at a time in arrival order: a call is atomic (no other call interleaves
//! with it, as on Redis), and an [`Executor::eval_many`] batch runs its calls back to back, in order,
//! each atomic and each with its own result. The queue is unbounded, but each caller waits for its
//! reply, so it holds at most one request per waiting caller.
//!
//! # Time and expiry
//!
//! Time comes from the injected [`Clock`], read once at the start of each script call: as in Redis, a
//! script sees one frozen instant. A key whose expiry has passed is deleted when a command touches it;
//! between requests the owner thread sweeps expired keys in the background, a bounded number per
//! pass ([`EmbeddedConfig`]).
//!
//! # Failure
//!
//! A panic inside a command (a bug) could leave the keyspace half-changed, so the store then stops:
//! that call and every later one fail with [`ExecError::Unavailable`]. Dropping the executor ends the
//! owner thread once the requests already queued are answered.
//!
//! # Memory
//!
//! The Lua state may hold at most [`EmbeddedConfig::lua_memory_limit`] bytes: a runaway script
//! gets an error reply instead of growing the process, and the next call runs as before. The
//! keyspace lives outside Lua and is not limited.
//!
//! # Persistence
//!
//! The data is one [`Keyspace`]; [`EmbeddedExecutor::with_keyspace`] runs a closure against it on
//! the owner thread, between calls, which is where a snapshot (iterate every key) or a restore
//! belongs.

mod commands;
mod keyspace;
mod lua;
mod num;
mod tree;
mod zset;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::oneshot;

pub use keyspace::{Hash, Keyspace, Set, Value};
pub use zset::ZSet;

use self::lua::{Scripting, Store};
use super::{Call, ExecError, Executor, Reply, Script};
use crate::clock::Clock;

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// How often the owner thread sweeps expired keys when idle.
    pub sweep_interval: Duration,
    /// Most keys one sweep deletes before the owner thread looks at its queue again.
    pub sweep_budget: usize,
    /// Most bytes the Lua state may hold: a script allocating past it fails with Lua's `not enough
    /// memory`, and the state is collected before the next call. The keyspace is not counted (it
    /// lives outside Lua); what counts is each call's `KEYS`/`ARGV`, the tables and strings a
    /// script builds and the replies `redis.call` hands it.
    pub lua_memory_limit: usize,
}

/// [`EmbeddedConfig::lua_memory_limit`]'s default, 128 MiB: rankd's largest calls (a batch of
/// 10,000 events, a snapshot chunk of 25,000 entries of 128-byte members) run in a tenth of it.
pub const DEFAULT_LUA_MEMORY_LIMIT: usize = 128 << 20;

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            sweep_interval: Duration::from_millis(100),
            sweep_budget: 1000,
            lua_memory_limit: DEFAULT_LUA_MEMORY_LIMIT,
        }
    }
}

type Task = Box<dyn FnOnce(&mut Keyspace, i64) + Send>;

enum Msg {
    Load(Vec<&'static Script>, oneshot::Sender<Result<(), ExecError>>),
    Eval(Call, oneshot::Sender<Result<Reply, ExecError>>),
    EvalMany(Vec<Call>, oneshot::Sender<Vec<Result<Reply, ExecError>>>),
    Ping(oneshot::Sender<()>),
    With(Task),
}

/// Runs rankd's scripts in-process. See the module documentation.
pub struct EmbeddedExecutor {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for EmbeddedExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedExecutor").finish_non_exhaustive()
    }
}

fn stopped() -> ExecError {
    ExecError::Unavailable("the embedded store has stopped".into())
}

impl EmbeddedExecutor {
    /// An empty store on its own owner thread, reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_config(clock, EmbeddedConfig::default())
    }

    /// [`EmbeddedExecutor::new`] with explicit settings.
    ///
    /// # Panics
    /// When the operating system refuses to start a thread.
    pub fn with_config(clock: Arc<dyn Clock>, config: EmbeddedConfig) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("rankd-embedded".into())
            .spawn(move || owner(&rx, clock.as_ref(), &config))
            .expect("the embedded store's thread starts");
        Self { tx }
    }

    async fn ask<R>(&self, msg: impl FnOnce(oneshot::Sender<R>) -> Msg) -> Result<R, ExecError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Runs `f` on the owner thread with the keyspace and the clock's reading, between script calls.
    ///
    /// # Errors
    /// [`ExecError::Unavailable`] when the store has stopped.
    pub async fn with_keyspace<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Keyspace, i64) -> R + Send + 'static,
    ) -> Result<R, ExecError> {
        self.ask(|tx| {
            Msg::With(Box::new(move |ks, now| {
                let _ = tx.send(f(ks, now));
            }))
        })
        .await
    }
}

/// The owner thread: serves requests until every sender is gone, sweeping expired keys meanwhile.
fn owner(rx: &Receiver<Msg>, clock: &dyn Clock, config: &EmbeddedConfig) {
    let store = Rc::new(RefCell::new(Store::default()));
    let mut scripting = match Scripting::new(store.clone(), config.lua_memory_limit) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "the embedded store could not create its Lua state");
            None
        }
    };
    let unavailable = || ExecError::Unavailable("the embedded store has no Lua state".into());
    let mut next_sweep = Instant::now() + config.sweep_interval;
    loop {
        let wait = next_sweep.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Msg::Load(scripts, reply)) => {
                let r = match scripting.as_mut() {
                    Some(s) => scripts.iter().try_for_each(|script| s.load(script)),
                    None => Err(unavailable()),
                };
                let _ = reply.send(r);
            }
            Ok(Msg::Eval(call, reply)) => {
                let r = match scripting.as_mut() {
                    Some(s) => s.eval(&call, clock.now_ms()),
                    None => Err(unavailable()),
                };
                let _ = reply.send(r);
            }
            Ok(Msg::EvalMany(calls, reply)) => {
                let r = calls
                    .iter()
                    .map(|call| match scripting.as_mut() {
                        Some(s) => s.eval(call, clock.now_ms()),
                        None => Err(unavailable()),
                    })
                    .collect();
                let _ = reply.send(r);
            }
            Ok(Msg::Ping(reply)) => {
                let _ = reply.send(());
            }
            Ok(Msg::With(task)) => task(&mut store.borrow_mut().ks, clock.now_ms()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_sweep {
            let swept = store
                .borrow_mut()
                .ks
                .sweep(clock.now_ms(), config.sweep_budget);
            // A full budget means more keys are due: sweep again as soon as the queue allows.
            next_sweep = if swept == config.sweep_budget {
                Instant::now()
            } else {
                Instant::now() + config.sweep_interval
            };
        }
        if let Some(s) = &scripting {
            if s.store().borrow().poisoned {
                tracing::error!("the embedded store stopped after a panic in a command");
                return;
            }
        }
    }
}

#[async_trait]
impl Executor for EmbeddedExecutor {
    async fn load(&self, scripts: &[&'static Script]) -> Result<(), ExecError> {
        self.ask(|tx| Msg::Load(scripts.to_vec(), tx)).await?
    }

    async fn eval(&self, call: Call) -> Result<Reply, ExecError> {
        self.ask(|tx| Msg::Eval(call, tx)).await?
    }

    async fn eval_many(&self, calls: Vec<Call>) -> super::Replies {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        self.ask(|tx| Msg::EvalMany(calls, tx)).await
    }

    async fn ping(&self) -> Result<(), ExecError> {
        self.ask(Msg::Ping).await
    }

    async fn hash_fields(
        &self,
        key: &str,
        fields: &[String],
    ) -> Result<Vec<Option<String>>, ExecError> {
        let key = key.as_bytes().to_vec();
        let fields = fields.to_vec();
        self.with_keyspace(move |ks, now| match ks.get(&key, now) {
            Some(keyspace::Value::Hash(h)) => fields
                .iter()
                .map(|f| {
                    h.get(f.as_bytes())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .collect(),
            _ => vec![None; fields.len()],
        })
        .await
    }

    /// The key count, read on the owner thread. Memory stays unknown: the store does not account
    /// for its allocations (bench/embedded_memory.rs measures them from outside).
    async fn stats(&self) -> Result<super::BackendStats, ExecError> {
        let keys = self.with_keyspace(|ks, _| ks.len()).await?;
        Ok(super::BackendStats {
            kind: "embedded",
            keys: Some(keys as u64),
            ..super::BackendStats::default()
        })
    }
}

#[cfg(test)]
mod tests;
