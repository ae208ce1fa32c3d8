//! An executor wrapper that times every script call and counts failures, whatever the backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{Call, ExecError, Executor, Reply, Script};
use crate::metrics as m;

/// Script calls counted here, for backends that cannot lose their scripts (the Redis executor
/// counts its own script-cache hits and misses).
#[derive(Debug, Default)]
pub struct ScriptStats {
    /// Script calls the backend answered (a call refused because the backend is unreachable never
    /// looked for its script, so it is neither a hit nor a miss).
    pub calls: AtomicU64,
}

/// Wraps an executor with metrics.
pub struct Instrumented {
    inner: Arc<dyn Executor>,
    stats: ScriptStats,
}

impl Instrumented {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Executor>) -> Self {
        Self {
            inner,
            stats: ScriptStats::default(),
        }
    }

    fn record(&self, script: &'static Script, started: Instant, r: Result<(), &ExecError>) {
        script.record_duration(started.elapsed().as_secs_f64());
        let script = script.name();
        // A call that was never sent is not counted; one sent and not answered is.
        if !matches!(r, Err(ExecError::Unavailable(_))) {
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = r {
            let kind = match e {
                // The script's own refusal (a stale definition, a value out of range, ...): part of
                // normal traffic, kept apart from errors Redis itself answered.
                ExecError::Reply(_) if e.refusal().is_some() => "refused",
                ExecError::Reply(_) => "reply",
                ExecError::Unavailable(_) => {
                    metrics::counter!(m::BACKEND_ERRORS).increment(1);
                    "unavailable"
                }
                ExecError::Unanswered(_) => {
                    metrics::counter!(m::BACKEND_ERRORS).increment(1);
                    "unanswered"
                }
            };
            metrics::counter!(m::SCRIPT_ERRORS, "script" => script, "kind" => kind).increment(1);
        }
    }
}

#[async_trait]
impl Executor for Instrumented {
    async fn load(&self, scripts: &[&'static Script]) -> Result<(), ExecError> {
        self.inner.load(scripts).await
    }

    async fn eval(&self, call: Call) -> Result<Reply, ExecError> {
        let script = call.script;
        let started = Instant::now();
        let r = self.inner.eval(call).await;
        self.record(script, started, r.as_ref().map(|_| ()));
        r
    }

    async fn hash_fields(
        &self,
        key: &str,
        fields: &[String],
    ) -> Result<Vec<Option<String>>, ExecError> {
        self.inner.hash_fields(key, fields).await
    }

    async fn eval_many(&self, calls: Vec<Call>) -> super::Replies {
        let names: Vec<&'static Script> = calls.iter().map(|c| c.script).collect();
        let started = Instant::now();
        let r = self.inner.eval_many(calls).await;
        match &r {
            Ok(results) => {
                for (name, res) in names.into_iter().zip(results) {
                    self.record(name, started, res.as_ref().map(|_| ()));
                }
            }
            Err(e) => {
                for name in names {
                    self.record(name, started, Err(e));
                }
            }
        }
        r
    }

    async fn ping(&self) -> Result<(), ExecError> {
        let r = self.inner.ping().await;
        metrics::gauge!(m::BACKEND_UP).set(if r.is_ok() { 1.0 } else { 0.0 });
        r
    }

    async fn reload_missing(&self, scripts: &[&'static Script]) -> Result<(), ExecError> {
        self.inner.reload_missing(scripts).await
    }

    async fn slowlog(&self) -> Result<Vec<String>, ExecError> {
        self.inner.slowlog().await
    }

    async fn memory_usage(&self, keys: &[String]) -> Result<Option<u64>, ExecError> {
        self.inner.memory_usage(keys).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    async fn stats(&self) -> Result<super::BackendStats, ExecError> {
        let mut s = self.inner.stats().await?;
        s.script_calls = self.stats.calls.load(Ordering::Relaxed);
        Ok(s)
    }
}
