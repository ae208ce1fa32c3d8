//! Guards that clean up what a test made when the test ends, passed or failed: its keys on the
//! shared Redis and its scratch directories (test servers and databases clean up through these).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::{prefix, Redis};

/// Runs `work` on a runtime and a thread of its own and waits for it, at most `within`: cleanup
/// from `Drop`, which cannot await, and which may run on a test's single-threaded runtime (so the
/// work must need nothing from the test's runtime). A failure panics, unless the thread is already
/// panicking: a cleanup that fails fails its test, as when the test cleaned up by hand.
pub fn blocking<F, Fut>(what: String, within: Duration, work: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>>,
{
    let outcome = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            match tokio::time::timeout(within, work()).await {
                Ok(done) => done,
                Err(_) => Err(format!("not done within {within:?}")),
            }
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the cleanup thread panicked".into()));
    if let Err(e) = outcome {
        if std::thread::panicking() {
            eprintln!("cleanup: {what}: {e}");
        } else {
            panic!("cleanup: {what}: {e}");
        }
    }
}

/// A key prefix of one test's own on a shared Redis. Every key under it is deleted when the guard
/// is dropped, however the test ended.
pub struct Keyspace {
    url: String,
    prefix: String,
}

impl Keyspace {
    /// A fresh prefix on `redis`.
    pub fn new(redis: Redis) -> Self {
        Self::adopt(redis.url(), prefix())
    }

    /// `prefix`, made by [`prefix`], on the Redis at `url`.
    pub fn adopt(url: String, prefix: String) -> Self {
        Self { url, prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for Keyspace {
    fn drop(&mut self) {
        // Only a prefix this process made: an empty one would match every key of the shared Redis.
        let ours = format!("t{}x", std::process::id());
        if !(self.prefix.starts_with(&ours) && self.prefix.ends_with(':')) {
            return;
        }
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        blocking(
            format!("deleting the keys under {prefix}"),
            Duration::from_secs(30),
            move || delete_keys(url, prefix),
        );
    }
}

/// Deletes every key under `prefix` on the Redis (standalone or cluster) at `url`.
async fn delete_keys(url: String, prefix: String) -> Result<(), String> {
    use fred::prelude::{Builder, ClientLike, Config, Key, KeysInterface};
    use futures::TryStreamExt;
    let e2s = |e: fred::error::Error| e.to_string();
    let client = Builder::from_config(Config::from_url(&url).map_err(e2s)?)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .build()
        .map_err(e2s)?;
    client.init().await.map_err(e2s)?;
    let pattern: String = prefix
        .chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .chain(['*'])
        .collect();
    let keys: Vec<Key> = if client.is_clustered() {
        client
            .scan_cluster_buffered(pattern, Some(1000), None)
            .try_collect()
            .await
    } else {
        client
            .scan_buffered(pattern, Some(1000), None)
            .try_collect()
            .await
    }
    .map_err(e2s)?;
    // One UNLINK per hash slot: a cluster refuses a command whose keys lie in several.
    let mut by_slot: HashMap<u16, Vec<Key>> = HashMap::new();
    for k in keys {
        by_slot
            .entry(fred::util::redis_keyslot(k.as_bytes()))
            .or_default()
            .push(k);
    }
    for keys in by_slot.into_values() {
        for chunk in keys.chunks(500) {
            client.unlink::<i64, _>(chunk.to_vec()).await.map_err(e2s)?;
        }
    }
    let _ = client.quit().await;
    Ok(())
}

/// A directory of one test's own under the system's temporary directory (not made here: what
/// uses it makes it), removed with everything in it when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `rankd-<name>-<a fresh prefix>`.
    pub fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("rankd-{name}-{}", prefix().trim_end_matches(':'))))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
