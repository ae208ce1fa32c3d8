//! `clear-caches`, and the scratch keys earlier versions of `verify` copied boards into in Redis
//! (`<prefix>verify<pid>:`, without expiry), which an interrupted or failed run left behind.
//! `verify` now works a board's log out in its own memory and writes nothing to Redis; `analyze`
//! shows what such runs left, and `clear-caches` removes it.

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::{Admin, Failure, Redis};
use crate::error::Error;

/// Keys read per SCAN call.
const SCAN_COUNT: &str = "1000";

/// Keys deleted per pipeline.
const UNLINK_CHUNK: usize = 1000;

fn unavailable(e: &fred::error::Error) -> Failure {
    Failure::Engine(Error::Unavailable(format!("Redis: {e}")))
}

/// `prefix` with the characters SCAN's MATCH treats as a pattern escaped.
fn glob_escaped(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Redis {
    /// Every key whose name matches `pattern`, on every primary.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, Failure> {
        let client = self.exec.pool().next();
        let nodes = self.exec.primaries(client);
        let scan = CustomCommand::new_static("SCAN", ClusterHash::Random, false);
        let mut keys = Vec::new();
        for node in nodes {
            let mut cursor = "0".to_owned();
            loop {
                let args = vec![
                    cursor.clone(),
                    "MATCH".into(),
                    pattern.to_owned(),
                    "COUNT".into(),
                    SCAN_COUNT.into(),
                ];
                let page: (String, Vec<String>) = match &node {
                    Some(n) => {
                        client
                            .with_cluster_node(n.clone())
                            .custom(scan.clone(), args)
                            .await
                    }
                    None => client.custom(scan.clone(), args).await,
                }
                .map_err(|e| unavailable(&e))?;
                keys.extend(page.1);
                cursor = page.0;
                if cursor == "0" {
                    break;
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Deletes `keys`, each on its own node.
    async fn unlink(&self, keys: &[String]) -> Result<(), Failure> {
        for chunk in keys.chunks(UNLINK_CHUNK) {
            let pipe = self.exec.pool().next().pipeline();
            for k in chunk {
                let slot = fred::util::redis_keyslot(k.as_bytes());
                let cmd = CustomCommand::new_static("UNLINK", ClusterHash::Custom(slot), false);
                let _: () = pipe
                    .custom(cmd, vec![k.as_str()])
                    .await
                    .map_err(|e| unavailable(&e))?;
            }
            let _: Vec<Value> = pipe.all().await.map_err(|e| unavailable(&e))?;
        }
        Ok(())
    }
}

impl Admin {
    /// The scratch keys interrupted verify runs of earlier versions left in Redis.
    pub(super) async fn verify_leftovers(&self) -> Result<Vec<String>, Failure> {
        let pattern = format!("{}verify[0-9]*", glob_escaped(&self.config.key_prefix));
        self.redis()?.scan(&pattern).await
    }

    /// Clears derived data: the expired entries of every board's key index (rebuilt as keys are
    /// written), and the scratch keys of interrupted verify runs. With `boards`, also every board's
    /// Redis keys (the store keeps them; `warm` brings them back).
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub async fn clear_caches(&self, boards: bool, dry_run: bool) -> Result<(), Failure> {
        let redis = self.redis()?;
        let engine = &redis.engine;
        for info in engine.boards().await? {
            let b = info.board;
            if dry_run {
                self.report
                    .line(format!("would prune {b}'s key index of expired keys"));
            } else {
                let live = engine.prune_index(&b).await?;
                self.report
                    .line(format!("pruned {b}'s key index: {live} live keys"));
            }
            if boards {
                if dry_run {
                    self.report.line(format!(
                        "would remove {b}'s Redis keys (the store keeps them)"
                    ));
                } else {
                    engine.discard(&b).await?;
                    self.report.line(format!(
                        "removed {b}'s Redis keys; `rankd admin warm` restores them"
                    ));
                }
            }
        }
        let leftovers = self.verify_leftovers().await?;
        let under = format!("{}verify<pid>:", self.config.key_prefix);
        match (leftovers.len(), dry_run) {
            (0, _) => {}
            (n, true) => self.report.line(format!(
                "would remove {n} scratch keys interrupted verify runs left under {under}"
            )),
            (n, false) => {
                redis.unlink(&leftovers).await?;
                self.report.line(format!(
                    "removed {n} scratch keys interrupted verify runs left under {under}"
                ));
            }
        }
        Ok(())
    }
}
