//! Which store Redis was built from: a store lost and created again must never be taken for it.
//!
//! Every store gets a random identity when its tables are created (`rankd_meta`). `rankd serve`
//! pairs the Redis it feeds with its store (the key `{prefix}store`, set once) and remembers the
//! pairing for as long as it runs, so that a Redis restarted empty does not forget it either. From
//! then on every commit checks, in its own transaction, that it writes into that store. When the
//! store answering is another one (dropped and created again, or pointed at by mistake), it holds
//! none of the history Redis was built from: rankd says so loudly (an error in the log,
//! `rankd_store_paired 0`), commits nothing into it (sync writes answer 503 `unconfirmed` and stay in
//! the Redis logs) and rebuilds nothing from it, until the original store is back or an operator
//! pairs Redis with the new one (`rankd admin pair-store`).

use std::sync::Mutex;

use super::Store;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The error of a store that is not the one Redis was paired with.
pub fn not_paired(found: &str, paired: &str) -> Error {
    Error::Unavailable(format!(
        "store: this is not the store Redis was paired with (its identity is {found}; Redis was \
         built from {paired}): it lacks the history Redis was built from, so nothing is stored in \
         it or rebuilt from it until the original store is back, or `rankd admin pair-store` pairs \
         Redis with this one"
    ))
}

/// The pairing of one running rankd: the store identity it found Redis paired with, kept across
/// Redis restarts.
#[derive(Debug, Default)]
pub struct Pairing {
    paired: Mutex<Option<String>>,
}

impl Pairing {
    /// Pairs Redis with `store` when Redis is paired with none (and this process paired it with
    /// none before), checks the pairing otherwise, and makes `store` refuse commits unless it is
    /// the paired store. Returns whether it is.
    ///
    /// # Errors
    /// When Redis or the store cannot be reached.
    pub async fn check(&self, engine: &Engine, store: &dyn Store) -> Result<bool> {
        let found = store.store_id().await?;
        let remembered = self.paired.lock().expect("pairing poisoned").clone();
        // Redis' pairing holds (an operator may have changed it); a Redis restarted empty is
        // paired again with the store this process was paired with, not with whichever answers.
        let offer = remembered.unwrap_or_else(|| found.clone());
        let paired = engine
            .store_pairing(Some(&offer), false)
            .await?
            .unwrap_or(offer);
        store.expect_id(paired.clone());
        *self.paired.lock().expect("pairing poisoned") = Some(paired.clone());
        let ok = paired == found;
        metrics::gauge!(crate::metrics::STORE_PAIRED).set(if ok { 1.0 } else { 0.0 });
        if !ok {
            tracing::error!(store = %found, paired = %paired, "THE STORE HAS LOST HISTORY: {}", not_paired(&found, &paired));
        }
        Ok(ok)
    }
}

/// The identity a store must have to be written (shared by its clones); none until
/// [`Store::expect_id`].
#[derive(Debug, Clone, Default)]
pub struct Expected(std::sync::Arc<std::sync::RwLock<Option<String>>>);

impl Expected {
    /// Expects `id` from now on.
    pub fn set(&self, id: String) {
        *self.0.write().expect("expected identity poisoned") = Some(id);
    }

    /// The identity expected, if any.
    pub fn get(&self) -> Option<String> {
        self.0.read().expect("expected identity poisoned").clone()
    }

    /// Judges the identity a store `found` (`None`: it has none, its tables are older than
    /// identities or gone).
    ///
    /// # Errors
    /// [`not_paired`] when one is expected and `found` is another.
    pub fn judge(&self, found: Option<&str>) -> Result<()> {
        match self.get() {
            Some(want) if found != Some(want.as_str()) => {
                Err(not_paired(found.unwrap_or("none"), &want))
            }
            _ => Ok(()),
        }
    }
}
