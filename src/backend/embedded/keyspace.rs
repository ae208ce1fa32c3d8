//! The keyspace: every key with its value and expiry, as Redis keeps one database.
//!
//! Keys expire as in Redis: a key whose expiry time has passed (`now > expire_at`) is deleted when a
//! command touches it, and [`Keyspace::sweep`] deletes the rest in the background. Every method that
//! can observe a key takes the caller's `now`, so that one script sees one instant throughout (Redis
//! freezes time for the length of a script) and tests can move time.
//!
//! The type is the unit of persistence: [`Keyspace::iter`] yields every live key with its value and
//! expiry, and [`Keyspace::insert`] with [`Keyspace::set_expire`] rebuild one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::zset::ZSet;

/// A hash: field → value.
pub type Hash = HashMap<Box<[u8]>, Box<[u8]>>;
/// A set of members.
pub type Set = HashSet<Box<[u8]>>;

/// A stream entry's field/value pairs.
pub type StreamFields = Vec<(Box<[u8]>, Box<[u8]>)>;

/// A stream: entries by id, and the last id ever added (XDEL does not lower it, as in Redis).
#[derive(Debug, Default)]
pub struct Stream {
    /// Entries: id (ms, seq) → field/value pairs.
    pub entries: BTreeMap<(u64, u64), StreamFields>,
    /// The greatest id ever added.
    pub last_id: (u64, u64),
}

/// A value of one of the types the scripts use.
#[derive(Debug)]
pub enum Value {
    /// A sorted set.
    ZSet(ZSet),
    /// A hash.
    Hash(Hash),
    /// A set.
    Set(Set),
    /// A string.
    Str(Box<[u8]>),
    /// A stream.
    Stream(Stream),
}

impl Value {
    /// The type's name, as Redis' TYPE command gives it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::ZSet(_) => "zset",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::Str(_) => "string",
            Value::Stream(_) => "stream",
        }
    }

    /// True for a container with nothing in it (Redis deletes such keys).
    pub fn is_empty(&self) -> bool {
        match self {
            Value::ZSet(z) => z.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            // Redis keeps strings and streams when they become empty.
            Value::Str(_) | Value::Stream(_) => false,
        }
    }
}

#[derive(Debug)]
struct Entry {
    value: Value,
    /// Unix ms after which the key is gone; `None` for no expiry.
    expire_at: Option<i64>,
}

/// All keys of the embedded store.
#[derive(Debug, Default)]
pub struct Keyspace {
    entries: HashMap<Box<[u8]>, Entry>,
    /// (expire_at, key) of every key with an expiry, for the sweeper.
    expiring: BTreeSet<(i64, Box<[u8]>)>,
}

impl Keyspace {
    /// An empty keyspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys held, including expired ones not yet deleted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys with an expiry, including expired ones not yet deleted.
    pub fn expiring(&self) -> usize {
        self.expiring.len()
    }

    /// Deletes `key` if it has expired by `now`; true when it did.
    fn expire_if_due(&mut self, key: &[u8], now: i64) -> bool {
        match self.entries.get(key).and_then(|e| e.expire_at) {
            Some(at) if now > at => {
                self.remove(key);
                true
            }
            _ => false,
        }
    }

    /// The value at `key`, if it is live at `now`.
    pub fn get(&mut self, key: &[u8], now: i64) -> Option<&Value> {
        self.expire_if_due(key, now);
        self.entries.get(key).map(|e| &e.value)
    }

    /// The value at `key`, mutably, if it is live at `now`.
    pub fn get_mut(&mut self, key: &[u8], now: i64) -> Option<&mut Value> {
        self.expire_if_due(key, now);
        self.entries.get_mut(key).map(|e| &mut e.value)
    }

    /// True when `key` is live at `now`.
    pub fn contains(&mut self, key: &[u8], now: i64) -> bool {
        self.get(key, now).is_some()
    }

    /// Stores `value` at `key` with no expiry, replacing whatever was there.
    pub fn insert(&mut self, key: &[u8], value: Value) {
        self.remove(key);
        self.entries.insert(
            key.into(),
            Entry {
                value,
                expire_at: None,
            },
        );
    }

    /// Deletes `key`, live or not. Returns its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<Value> {
        let e = self.entries.remove(key)?;
        if let Some(at) = e.expire_at {
            self.expiring.remove(&(at, Box::from(key)));
        }
        Some(e.value)
    }

    /// Deletes `key` if it holds an empty container, as Redis does after removing its last element.
    pub fn remove_if_empty(&mut self, key: &[u8]) {
        if self.entries.get(key).is_some_and(|e| e.value.is_empty()) {
            self.remove(key);
        }
    }

    /// The expiry of `key` (no check of whether it has passed).
    pub fn expire_at(&self, key: &[u8]) -> Option<i64> {
        self.entries.get(key).and_then(|e| e.expire_at)
    }

    /// Sets or clears the expiry of an existing key. False when the key does not exist.
    pub fn set_expire(&mut self, key: &[u8], at: Option<i64>) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        if let Some(old) = e.expire_at {
            self.expiring.remove(&(old, Box::from(key)));
        }
        e.expire_at = at;
        if let Some(at) = at {
            self.expiring.insert((at, key.into()));
        }
        true
    }

    /// Deletes up to `budget` keys that have expired by `now`, earliest first. Returns how many.
    pub fn sweep(&mut self, now: i64, budget: usize) -> usize {
        let mut done = 0;
        while done < budget {
            let Some((at, key)) = self.expiring.first() else {
                break;
            };
            if *at >= now {
                break;
            }
            let key = key.clone();
            self.remove(&key);
            done += 1;
        }
        done
    }

    /// Every key live at `now`, with its value and expiry, in no particular order.
    pub fn iter(&self, now: i64) -> impl Iterator<Item = (&[u8], &Value, Option<i64>)> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| e.expire_at.is_none_or(|at| now <= at))
            .map(|(k, e)| (&**k, &e.value, e.expire_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(members: &[&str]) -> Value {
        Value::Set(members.iter().map(|m| Box::from(m.as_bytes())).collect())
    }

    #[test]
    fn keys_expire_lazily_after_their_time_and_the_sweeper_takes_the_rest() {
        let mut ks = Keyspace::new();
        ks.insert(b"a", set(&["x"]));
        ks.insert(b"b", set(&["y"]));
        ks.insert(b"c", set(&["z"]));
        assert!(ks.set_expire(b"a", Some(100)));
        assert!(ks.set_expire(b"b", Some(200)));
        assert!(!ks.set_expire(b"nope", Some(1)));
        // Live up to and including the expiry instant, as Redis' `now > when`.
        assert!(ks.contains(b"a", 100));
        assert!(!ks.contains(b"a", 101));
        assert_eq!(ks.len(), 2, "touching an expired key deletes it");
        assert_eq!(ks.iter(250).count(), 1, "iteration skips expired keys");
        assert_eq!(ks.sweep(200, 10), 0);
        assert_eq!(ks.sweep(201, 10), 1);
        assert_eq!((ks.len(), ks.expiring()), (1, 0));
    }

    #[test]
    fn changing_or_clearing_an_expiry_moves_it_in_the_sweep_order() {
        let mut ks = Keyspace::new();
        ks.insert(b"a", set(&["x"]));
        ks.set_expire(b"a", Some(100));
        ks.set_expire(b"a", Some(500));
        assert_eq!(ks.sweep(300, 10), 0);
        ks.set_expire(b"a", None);
        assert_eq!(ks.expiring(), 0);
        assert!(ks.contains(b"a", i64::MAX));
        ks.insert(b"a", set(&[]));
        ks.remove_if_empty(b"a");
        assert!(ks.is_empty());
    }
}
