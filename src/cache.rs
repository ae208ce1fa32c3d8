//! The answer caches: answers kept in memory by type, each type with its TTL, all of them together
//! within one byte budget, the least recently used going first; with the figures `/v1/stats/cache`
//! and `/metrics` report.
//!
//! This module only keeps entries. What makes a leaderboard page still true (its stamp, checked
//! against the board's cache hash in Redis before every hit) is the engine's (`engine/pages.rs`);
//! the analytics, scope statistics and achievements answers plug in the same way, each with a stamp
//! of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::board::BoardId;
use crate::metrics as m;

/// The kinds of cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheType {
    /// `top` and `entries` pages.
    Leaderboard,
    /// A member's analytics.
    Analytics,
    /// A scope's statistics.
    ScopeStats,
    /// A member's achievements.
    Achievements,
}

impl CacheType {
    /// Every type, in the order they are reported.
    pub const ALL: [Self; 4] = [
        Self::Leaderboard,
        Self::Analytics,
        Self::ScopeStats,
        Self::Achievements,
    ];

    /// Its name in the API, settings and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leaderboard => "leaderboard",
            Self::Analytics => "analytics",
            Self::ScopeStats => "scope_stats",
            Self::Achievements => "achievements",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why an entry went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A write changed what it shows.
    Write,
    /// Its TTL ran out.
    Ttl,
    /// A clear asked for it.
    Clear,
    /// Its board's definition changed, or the board was deleted.
    Definition,
    /// Its board was rebuilt from the store.
    Rebuild,
    /// The byte budget needed its room.
    Capacity,
}

impl Reason {
    /// Every reason, in the order they are reported.
    pub const ALL: [Self; 6] = [
        Self::Write,
        Self::Ttl,
        Self::Clear,
        Self::Definition,
        Self::Rebuild,
        Self::Capacity,
    ];

    /// Its name in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Ttl => "ttl",
            Self::Clear => "clear",
            Self::Definition => "definition",
            Self::Rebuild => "rebuild",
            Self::Capacity => "capacity",
        }
    }
}

/// TTLs by type (zero: that cache is off) and the byte budget of them all.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Per type, in [`CacheType::ALL`] order.
    pub ttl: [Duration; 4],
    /// Bytes all entries may take together.
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: [300, 600, 1800, 3600].map(Duration::from_secs),
            max_bytes: 64 << 20,
        }
    }
}

/// What an entry was computed from, to be checked before it is served: the fields of a board's
/// cache hash, and the values they held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Field names.
    pub fields: Vec<String>,
    /// Their values when the answer was computed.
    pub values: Vec<String>,
}

/// A cached answer.
#[derive(Debug)]
pub struct Entry {
    /// The answer's body, as sent.
    pub body: Bytes,
    /// The board it belongs to.
    pub board: BoardId,
    /// What it was computed from.
    pub stamp: Stamp,
    /// When it was computed.
    pub computed: Instant,
    /// What the cache's owner needs to compute it again (warming), if anything.
    pub recipe: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Entry {
    /// Bytes it is charged for: its body, its stamp, and a fixed share for the bookkeeping.
    fn size(&self, key: &str) -> u64 {
        let stamp: usize = self
            .stamp
            .fields
            .iter()
            .chain(&self.stamp.values)
            .map(String::len)
            .sum();
        (self.body.len() + stamp + 2 * key.len() + self.board.as_str().len() + 160) as u64
    }
}

/// One type's counters, as reported.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    /// The hit, miss and bypass series, looked up once: one of them counts every cached route's
    /// answer (see [`m::Resolved`]).
    series: [m::Resolved<metrics::Counter>; 3],
    /// The entries and bytes gauges, looked up once: every store and drop sets them.
    gauges: [m::Resolved<metrics::Gauge>; 2],
    evictions: AtomicU64,
    warms: AtomicU64,
    invalidations: [AtomicU64; 6],
}

/// One type's figures, for `/v1/stats/cache`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    /// Answers served from the cache.
    pub hits: u64,
    /// Answers computed because the cache had none (or none still true).
    pub misses: u64,
    /// Answers computed without looking (`Cache-Control: no-cache`, a page the cache does not
    /// keep, or the cache off).
    pub bypasses: u64,
    /// hits × 100 / (hits + misses); 0 before any lookup.
    pub hit_rate_percentage: f64,
    /// Entries held.
    pub entries: u64,
    /// Bytes they are charged for.
    pub bytes: u64,
    /// The type's TTL; 0: off.
    pub ttl_secs: u64,
    /// Entries dropped for room (also counted as `capacity` invalidations).
    pub evictions: u64,
    /// Entries computed ahead of a reader (background warming, and warm requests).
    pub warms: u64,
    /// Entries dropped, by reason.
    pub invalidations: BTreeMap<&'static str, u64>,
}

struct Slot {
    entry: Arc<Entry>,
    /// Its place in the recency order.
    tick: u64,
    size: u64,
    /// Reads since it was stored, for warming the most read first.
    reads: u64,
}

#[derive(Default)]
struct Inner {
    /// Per type, in [`CacheType::ALL`] order: a lookup by `&str` allocates nothing.
    maps: [HashMap<Arc<str>, Slot>; 4],
    /// Recency order: tick → key; the first is the least recently used.
    order: BTreeMap<u64, (CacheType, Arc<str>)>,
    tick: u64,
    bytes: u64,
    per_type: [(u64, u64); 4],
}

/// The caches of one rankd instance.
pub struct Caches {
    settings: CacheSettings,
    inner: Mutex<Inner>,
    counters: [Counters; 4],
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Caches {
    /// Empty caches.
    pub fn new(settings: CacheSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner::default()),
            counters: Default::default(),
        }
    }

    /// Starts every series of every type at zero, so that dashboards and alerts see them from the
    /// first scrape.
    pub fn describe(&self) {
        for t in CacheType::ALL {
            let c = t.as_str();
            for name in [m::CACHE_HITS, m::CACHE_MISSES, m::CACHE_BYPASSES] {
                metrics::counter!(name, "cache" => c).absolute(0);
            }
            metrics::counter!(m::CACHE_EVICTIONS, "cache" => c).absolute(0);
            metrics::counter!(m::CACHE_WARMS, "cache" => c).absolute(0);
            for r in Reason::ALL {
                metrics::counter!(m::CACHE_INVALIDATIONS, "cache" => c, "reason" => r.as_str())
                    .absolute(0);
            }
            metrics::gauge!(m::CACHE_ENTRIES, "cache" => c).set(0.0);
            metrics::gauge!(m::CACHE_BYTES, "cache" => c).set(0.0);
            metrics::gauge!(m::CACHE_TTL, "cache" => c).set(self.ttl(t).as_secs_f64());
        }
    }

    /// The TTL of `t`; zero when that cache is off.
    pub fn ttl(&self, t: CacheType) -> Duration {
        self.settings.ttl[t.index()]
    }

    /// Whether `t` keeps anything.
    pub fn enabled(&self, t: CacheType) -> bool {
        !self.ttl(t).is_zero()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held; a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry under `key`, unless its TTL ran out (it goes then). Marks it recently used.
    pub fn get(&self, t: CacheType, key: &str) -> Option<Arc<Entry>> {
        let ttl = self.ttl(t);
        let mut inner = self.lock();
        let fresh = {
            let slot = inner.maps[t.index()].get(key)?;
            slot.entry.computed.elapsed() < ttl
        };
        if !fresh {
            inner.remove(t, key);
            drop(inner);
            self.dropped(t, Reason::Ttl, 1);
            return None;
        }
        inner.tick += 1;
        let tick = inner.tick;
        let (old, entry) = {
            let slot = inner.maps[t.index()].get_mut(key)?;
            let old = slot.tick;
            slot.tick = tick;
            slot.reads += 1;
            (old, slot.entry.clone())
        };
        if let Some(k) = inner.order.remove(&old) {
            inner.order.insert(tick, k);
        }
        Some(entry)
    }

    /// Stores `entry` under `key` (replacing what was there), then makes room by dropping the least
    /// recently used entries. An entry larger than the whole budget is not kept.
    pub fn put(&self, t: CacheType, key: &str, entry: Entry) {
        if !self.enabled(t) {
            return;
        }
        let size = entry.size(key);
        if size > self.settings.max_bytes {
            return;
        }
        let mut evicted = [0u64; 4];
        {
            let mut inner = self.lock();
            let k: Arc<str> = Arc::from(key);
            let reads = inner.remove(t, key).map_or(0, |s| s.reads);
            inner.tick += 1;
            let tick = inner.tick;
            inner.order.insert(tick, (t, k.clone()));
            inner.bytes += size;
            inner.per_type[t.index()].0 += 1;
            inner.per_type[t.index()].1 += size;
            inner.maps[t.index()].insert(
                k,
                Slot {
                    entry: Arc::new(entry),
                    tick,
                    size,
                    reads,
                },
            );
            while inner.bytes > self.settings.max_bytes {
                let Some((_, (vt, victim))) = inner.order.pop_first() else {
                    break;
                };
                if let Some(slot) = inner.maps[vt.index()].remove(&victim) {
                    inner.forget(vt, &slot);
                    evicted[vt.index()] += 1;
                }
            }
            self.gauges(&inner);
        }
        for t in CacheType::ALL {
            let n = evicted[t.index()];
            if n > 0 {
                self.counters[t.index()].evictions.fetch_add(n, Relaxed);
                metrics::counter!(m::CACHE_EVICTIONS, "cache" => t.as_str()).increment(n);
                self.dropped(t, Reason::Capacity, n);
            }
        }
    }

    /// Drops the entry under `key` if it is still `entry` (another reader may have stored a newer
    /// one meanwhile), counting it under `reason`.
    pub fn invalidate(&self, t: CacheType, key: &str, entry: &Arc<Entry>, reason: Reason) {
        let removed = {
            let mut inner = self.lock();
            let same = inner.maps[t.index()]
                .get(key)
                .is_some_and(|s| Arc::ptr_eq(&s.entry, entry));
            let removed = same && inner.remove(t, key).is_some();
            self.gauges(&inner);
            removed
        };
        if removed {
            self.dropped(t, reason, 1);
        }
    }

    /// Drops every entry of the given types (all when empty), of `board` only when given. Answers
    /// how many went, per type.
    pub fn clear(&self, types: &[CacheType], board: Option<&BoardId>) -> [u64; 4] {
        let mut gone = [0u64; 4];
        {
            let mut inner = self.lock();
            for t in CacheType::ALL {
                if !(types.is_empty() || types.contains(&t)) {
                    continue;
                }
                let keys: Vec<Arc<str>> = inner.maps[t.index()]
                    .iter()
                    .filter(|(_, s)| board.is_none_or(|b| s.entry.board == *b))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    if inner.remove(t, &k).is_some() {
                        gone[t.index()] += 1;
                    }
                }
            }
            self.gauges(&inner);
        }
        for t in CacheType::ALL {
            if gone[t.index()] > 0 {
                self.dropped(t, Reason::Clear, gone[t.index()]);
            }
        }
        gone
    }

    /// The `n` most read entries of type `t` (reads since each was stored), most read first.
    pub fn popular(&self, t: CacheType, n: usize) -> Vec<(String, Arc<Entry>)> {
        let inner = self.lock();
        let mut all: Vec<(&Arc<str>, &Slot)> = inner.maps[t.index()].iter().collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.1.reads));
        all.into_iter()
            .take(n)
            .map(|(k, s)| (k.to_string(), s.entry.clone()))
            .collect()
    }

    /// Counts a hit.
    pub fn hit(&self, t: CacheType) {
        let c = &self.counters[t.index()];
        c.hits.fetch_add(1, Relaxed);
        c.series[0].with(
            || metrics::counter!(m::CACHE_HITS, "cache" => t.as_str()),
            |h| h.increment(1),
        );
    }

    /// Counts a miss.
    pub fn miss(&self, t: CacheType) {
        let c = &self.counters[t.index()];
        c.misses.fetch_add(1, Relaxed);
        c.series[1].with(
            || metrics::counter!(m::CACHE_MISSES, "cache" => t.as_str()),
            |h| h.increment(1),
        );
    }

    /// Counts a bypass.
    pub fn bypass(&self, t: CacheType) {
        let c = &self.counters[t.index()];
        c.bypasses.fetch_add(1, Relaxed);
        c.series[2].with(
            || metrics::counter!(m::CACHE_BYPASSES, "cache" => t.as_str()),
            |h| h.increment(1),
        );
    }

    /// Counts an entry computed ahead of its readers.
    pub fn warmed(&self, t: CacheType) {
        self.counters[t.index()].warms.fetch_add(1, Relaxed);
        metrics::counter!(m::CACHE_WARMS, "cache" => t.as_str()).increment(1);
    }

    fn dropped(&self, t: CacheType, reason: Reason, n: u64) {
        self.counters[t.index()].invalidations[reason as usize].fetch_add(n, Relaxed);
        metrics::counter!(m::CACHE_INVALIDATIONS, "cache" => t.as_str(), "reason" => reason.as_str())
            .increment(n);
    }

    fn gauges(&self, inner: &Inner) {
        for t in CacheType::ALL {
            let (entries, bytes) = inner.per_type[t.index()];
            let g = &self.counters[t.index()].gauges;
            g[0].with(
                || metrics::gauge!(m::CACHE_ENTRIES, "cache" => t.as_str()),
                |h| h.set(entries as f64),
            );
            g[1].with(
                || metrics::gauge!(m::CACHE_BYTES, "cache" => t.as_str()),
                |h| h.set(bytes as f64),
            );
        }
    }

    /// Every type's figures.
    pub fn figures(&self) -> Vec<(CacheType, Figures)> {
        let per_type = self.lock().per_type;
        CacheType::ALL
            .into_iter()
            .map(|t| {
                let c = &self.counters[t.index()];
                let hits = c.hits.load(Relaxed);
                let misses = c.misses.load(Relaxed);
                let (entries, bytes) = per_type[t.index()];
                let figures = Figures {
                    hits,
                    misses,
                    bypasses: c.bypasses.load(Relaxed),
                    hit_rate_percentage: if hits + misses == 0 {
                        0.0
                    } else {
                        hits as f64 * 100.0 / (hits + misses) as f64
                    },
                    entries,
                    bytes,
                    ttl_secs: self.ttl(t).as_secs(),
                    evictions: c.evictions.load(Relaxed),
                    warms: c.warms.load(Relaxed),
                    invalidations: Reason::ALL
                        .into_iter()
                        .map(|r| (r.as_str(), c.invalidations[r as usize].load(Relaxed)))
                        .collect(),
                };
                (t, figures)
            })
            .collect()
    }
}

impl Inner {
    fn remove(&mut self, t: CacheType, key: &str) -> Option<Slot> {
        let slot = self.maps[t.index()].remove(key)?;
        self.order.remove(&slot.tick);
        self.forget(t, &slot);
        Some(slot)
    }

    /// Takes a removed slot out of the byte and entry counts.
    fn forget(&mut self, t: CacheType, slot: &Slot) {
        self.bytes -= slot.size;
        self.per_type[t.index()].0 -= 1;
        self.per_type[t.index()].1 -= slot.size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str) -> Entry {
        Entry {
            body: Bytes::from(body.to_owned()),
            board: BoardId::parse("b").unwrap(),
            stamp: Stamp {
                fields: vec!["e".into()],
                values: vec!["1".into()],
            },
            computed: Instant::now(),
            recipe: None,
        }
    }

    #[test]
    fn the_least_recently_used_go_first_when_the_budget_is_spent() {
        let size = entry(&"x".repeat(1000)).size("k0");
        let caches = Caches::new(CacheSettings {
            max_bytes: size * 3,
            ..CacheSettings::default()
        });
        for i in 0..3 {
            caches.put(
                CacheType::Leaderboard,
                &format!("k{i}"),
                entry(&"x".repeat(1000)),
            );
        }
        // k0 read last: k1 is now the least recently used.
        assert!(caches.get(CacheType::Leaderboard, "k0").is_some());
        caches.put(CacheType::Leaderboard, "k3", entry(&"x".repeat(1000)));
        assert!(caches.get(CacheType::Leaderboard, "k1").is_none());
        for k in ["k0", "k2", "k3"] {
            assert!(caches.get(CacheType::Leaderboard, k).is_some(), "{k}");
        }
        let (_, f) = &caches.figures()[0];
        assert_eq!((f.entries, f.evictions, f.bytes), (3, 1, 3 * size));
        assert_eq!(f.invalidations["capacity"], 1);
    }

    #[test]
    fn an_entry_past_its_ttl_goes_and_an_off_cache_keeps_nothing() {
        let caches = Caches::new(CacheSettings {
            ttl: [
                Duration::from_millis(30),
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
            ],
            ..CacheSettings::default()
        });
        caches.put(CacheType::Leaderboard, "k", entry("a"));
        caches.put(CacheType::Analytics, "k", entry("a"));
        assert!(caches.get(CacheType::Leaderboard, "k").is_some());
        assert!(caches.get(CacheType::Analytics, "k").is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(caches.get(CacheType::Leaderboard, "k").is_none());
        let (_, f) = &caches.figures()[0];
        assert_eq!((f.entries, f.bytes, f.invalidations["ttl"]), (0, 0, 1));
    }

    #[test]
    fn a_clear_takes_the_types_and_board_it_names() {
        let caches = Caches::new(CacheSettings::default());
        caches.put(CacheType::Leaderboard, "a", entry("1"));
        let mut other = entry("2");
        other.board = BoardId::parse("c").unwrap();
        caches.put(CacheType::Leaderboard, "b", other);
        caches.put(CacheType::Analytics, "a", entry("3"));
        let gone = caches.clear(
            &[CacheType::Leaderboard],
            Some(&BoardId::parse("b").unwrap()),
        );
        assert_eq!(gone, [1, 0, 0, 0]);
        assert!(caches.get(CacheType::Leaderboard, "b").is_some());
        assert!(caches.get(CacheType::Analytics, "a").is_some());
        assert_eq!(caches.clear(&[], None), [1, 1, 0, 0]);
    }

    #[test]
    fn a_stale_copy_is_dropped_only_if_it_is_still_the_one_held() {
        let caches = Caches::new(CacheSettings::default());
        caches.put(CacheType::Leaderboard, "k", entry("old"));
        let old = caches.get(CacheType::Leaderboard, "k").unwrap();
        caches.put(CacheType::Leaderboard, "k", entry("new"));
        caches.invalidate(CacheType::Leaderboard, "k", &old, Reason::Write);
        let now = caches.get(CacheType::Leaderboard, "k").unwrap();
        assert_eq!(now.body, Bytes::from("new"));
        caches.invalidate(CacheType::Leaderboard, "k", &now, Reason::Write);
        assert!(caches.get(CacheType::Leaderboard, "k").is_none());
        assert_eq!(caches.figures()[0].1.invalidations["write"], 1);
    }
}
