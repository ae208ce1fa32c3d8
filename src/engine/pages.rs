//! Cached pages: `top` and `entries` by offset answered from memory while nothing they show has
//! changed, on any instance.
//!
//! A page read to be cached registers its depth (offset + limit) in its board's cache hash and comes
//! back with a stamp: the hash's epoch, the definition version, and the version of its (key, depth).
//! Every write that changes a rank within that depth, or the key's member count, moves that version
//! in the same atomic script call (lua/lib.lua's `pages_changed`); a definition change, a rebuild or a
//! deletion moves the others. Before a cached page is served, its stamp is compared with the hash,
//! one `HMGET` shared by every check of the board in flight (as reads share calls: a check never joins
//! a call sent before it began). A write answered before a read began is therefore always seen, on
//! every instance: the hit costs one raw command instead of a script over the sorted set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::{Cursor, Engine, Limit, Offset, Page, View};
use crate::board::BoardId;
use crate::cache::{CacheType, Entry, Reason, Stamp};
use crate::error::{Error, Result};

/// The deepest page kept: `offset + limit` of a cached page is at most this.
pub const MAX_CACHED_DEPTH: u64 = 1000;

/// Concurrent checks of one board's pages, made as one `HMGET` of its cache hash: each the entry
/// to check, answered why it is no longer true (None: it is).
pub(super) type Checks =
    super::coalesce::Coalescer<BoardId, Arc<Entry>, std::result::Result<Option<Reason>, String>>;

/// Checks per `HMGET`, at most.
pub(super) const CHECKS_PER_CALL: usize = 256;

/// Pages kept warm: the most read ones of each instance.
const WARM_PAGES: usize = 64;

/// Page reads in flight on this instance past which background warming waits: a saturated
/// instance serves its readers first.
const WARM_BELOW: usize = 8;

/// The two answers a page is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageForm {
    /// `GET …/top`: the page without a cursor.
    Top,
    /// `GET …/entries`: the page with `next`, null on the last page.
    Entries,
}

impl PageForm {
    fn as_str(self) -> &'static str {
        match self {
            Self::Top => "top",
            Self::Entries => "entries",
        }
    }

    /// The answer's body.
    ///
    /// # Errors
    /// [`Error::Backend`] when the page does not serialise (it always does).
    pub fn render(self, page: &Page) -> Result<Bytes> {
        #[derive(Serialize)]
        struct WithNext<'a> {
            #[serde(flatten)]
            page: &'a Page,
            next: Option<&'a Cursor>,
        }
        let body = match self {
            Self::Top => {
                let mut page = page.clone();
                page.next = None;
                serde_json::to_vec(&page)
            }
            Self::Entries => {
                let mut page = page.clone();
                let next = page.next.take();
                serde_json::to_vec(&WithNext {
                    page: &page,
                    next: next.as_ref(),
                })
            }
        };
        body.map(Bytes::from)
            .map_err(|e| Error::Backend(format!("page encoding: {e}")))
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the cache, computed this long ago.
    Hit(Duration),
    /// Computed, the cache holding none still true.
    Miss,
    /// Computed without looking (asked for, a page the cache does not keep, or the cache off).
    Bypass,
}

impl CacheStatus {
    /// Its `X-Rankd-Cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit(_) => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// A page's answer, and where it came from.
#[derive(Debug, Clone)]
pub struct Served {
    /// The JSON body.
    pub body: Bytes,
    /// Hit, miss or bypass.
    pub status: CacheStatus,
}

/// What a cached page is: enough to compute it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PageRecipe {
    pub(super) board: BoardId,
    pub(super) view: View,
    pub(super) offset: Offset,
    pub(super) limit: Limit,
    pub(super) form: PageForm,
}

/// Counts a page read in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Engine {
    /// A page of entries at positions `[offset, offset + limit)`, as `form` answers it: from the
    /// cache when a copy is held and nothing it shows has changed since, on any instance; else read,
    /// and kept. `fresh` (`Cache-Control: no-cache`) reads it without looking, and keeps it.
    ///
    /// # Errors
    /// As [`Engine::page`].
    pub async fn page_served(
        &self,
        board: &BoardId,
        view: &View,
        offset: Offset,
        limit: Limit,
        form: PageForm,
        fresh: bool,
    ) -> Result<Served> {
        let _busy = InFlight::new(&self.page_reads);
        let t = CacheType::Leaderboard;
        let depth = offset.get() + u64::from(limit.get());
        let slot = if self.caches.enabled(t) && depth <= MAX_CACHED_DEPTH {
            self.page_slot(board, view, offset, limit, form).await
        } else {
            None
        };
        let Some(slot) = slot else {
            // Not kept (or the view is refused, which the read below says).
            self.caches.bypass(t);
            let page = self.page(board, view, offset, limit).await?;
            return Ok(Served {
                body: form.render(&page)?,
                status: CacheStatus::Bypass,
            });
        };
        if fresh {
            self.caches.bypass(t);
        } else {
            if let Some(entry) = self.caches.get(t, &slot) {
                match self.stale(board, &entry).await {
                    Ok(None) => {
                        self.caches.hit(t);
                        return Ok(Served {
                            body: entry.body.clone(),
                            status: CacheStatus::Hit(entry.computed.elapsed()),
                        });
                    }
                    Ok(Some(reason)) => self.caches.invalidate(t, &slot, &entry, reason),
                    // Not checked, so not served: the read below says what is wrong.
                    Err(_) => {}
                }
            }
            self.caches.miss(t);
        }
        let recipe = PageRecipe {
            board: board.clone(),
            view: view.clone(),
            offset,
            limit,
            form,
        };
        let body = self.fill(&slot, &recipe).await?;
        Ok(Served {
            body,
            status: if fresh {
                CacheStatus::Bypass
            } else {
                CacheStatus::Miss
            },
        })
    }

    /// Reads a page registered for caching, keeps it under `slot` and answers its body.
    async fn fill(&self, slot: &str, r: &PageRecipe) -> Result<Bytes> {
        let started = Instant::now();
        let (page, stamp) = self
            .range_read(&r.board, &r.view, r.offset, r.limit, true)
            .await?;
        let body = r.form.render(&page)?;
        // The stamp names the key the read used: kept only under the slot that names it too (a
        // definition changed between the two would make them differ).
        if let Some(stamp) =
            stamp.filter(|s| s.fields.get(2).is_some_and(|f| slot_of(f, r) == slot))
        {
            self.caches.put(
                CacheType::Leaderboard,
                slot,
                Entry {
                    body: body.clone(),
                    board: r.board.clone(),
                    stamp,
                    computed: started,
                    recipe: Some(Arc::new(r.clone()) as Arc<dyn std::any::Any + Send + Sync>),
                },
            );
        }
        Ok(body)
    }

    /// The cache slot of a page: its key (window, period and scope resolved now, by the cached
    /// definition), position, length and form. None when the view is refused.
    async fn page_slot(
        &self,
        board: &BoardId,
        view: &View,
        offset: Offset,
        limit: Limit,
        form: PageForm,
    ) -> Option<String> {
        let d = self.definition(board).await.ok()?;
        let (_, key) = self.resolve(board, &d.def, view, self.now_ms()).ok()?;
        Some(slot_key(&key.zset, offset, limit, form))
    }

    /// Why a cached page is no longer true (None: it is), by the board's cache hash as it stands
    /// now.
    async fn stale(
        &self,
        board: &BoardId,
        entry: &Arc<Entry>,
    ) -> std::result::Result<Option<Reason>, String> {
        self.checks
            .run(board, entry.clone(), |items| async move {
                self.check_call(board, items).await
            })
            .await
    }

    /// One `HMGET` for the checks of the entries in `items`, each answered why it is no longer
    /// true (None: it is).
    async fn check_call(
        &self,
        board: &BoardId,
        items: Vec<Arc<Entry>>,
    ) -> Vec<std::result::Result<Option<Reason>, String>> {
        // Each field once, the hash's last rebuild reason among them.
        let mut fields: Vec<&str> = vec!["r"];
        let mut at: std::collections::HashMap<&str, usize> = [("r", 0)].into();
        for f in items.iter().flat_map(|e| &e.stamp.fields) {
            at.entry(f.as_str()).or_insert_with(|| {
                fields.push(f);
                fields.len() - 1
            });
        }
        let fields: Vec<String> = fields.into_iter().map(str::to_owned).collect();
        let got = match self
            .exec
            .hash_fields(&self.keys.cache_versions(board), &fields)
            .await
        {
            Ok(got) => got,
            Err(e) => return items.iter().map(|_| Err(e.to_string())).collect(),
        };
        let held = |f: &str| {
            at.get(f)
                .and_then(|&i| got.get(i))
                .and_then(Option::as_deref)
        };
        let rebuilt = held("r") == Some("rebuild");
        items
            .iter()
            .map(|e| Ok(why_stale(&e.stamp, &held, rebuilt)))
            .collect()
    }

    /// Reads the given pages into the cache now (`POST /v1/caches/warm`): answers how many were
    /// kept.
    ///
    /// # Errors
    /// As [`Engine::page`], for the first page that fails.
    pub async fn warm_pages(&self, board: &BoardId, views: &[View], limit: Limit) -> Result<u64> {
        let t = CacheType::Leaderboard;
        if !self.caches.enabled(t) {
            return Ok(0);
        }
        let offset = Offset::new(0)?;
        let mut kept = 0;
        for view in views {
            for form in [PageForm::Top, PageForm::Entries] {
                // A refused view is refused by the read, with its reason.
                let Some(slot) = self.page_slot(board, view, offset, limit, form).await else {
                    self.page(board, view, offset, limit).await?;
                    continue;
                };
                let recipe = PageRecipe {
                    board: board.clone(),
                    view: view.clone(),
                    offset,
                    limit,
                    form,
                };
                self.fill(&slot, &recipe).await?;
                self.caches.warmed(t);
                kept += 1;
            }
        }
        Ok(kept)
    }

    /// One round of background warming: the most read pages of this instance that a change made
    /// untrue are read again before their next reader asks. Skipped while the instance is busy
    /// with readers of its own. Answers how many were read again.
    pub async fn warm_round(&self) -> usize {
        let t = CacheType::Leaderboard;
        if !self.caches.enabled(t) || self.page_reads.load(Ordering::Relaxed) >= WARM_BELOW {
            return 0;
        }
        let mut warmed = 0;
        for (slot, entry) in self.caches.popular(t, WARM_PAGES) {
            if self.page_reads.load(Ordering::Relaxed) >= WARM_BELOW {
                break;
            }
            let Some(recipe) = entry
                .recipe
                .clone()
                .and_then(|r| r.downcast::<PageRecipe>().ok())
            else {
                continue;
            };
            if let Ok(Some(reason)) = self.stale(&entry.board, &entry).await {
                self.caches.invalidate(t, &slot, &entry, reason);
                if self.fill(&slot, &recipe).await.is_ok() {
                    self.caches.warmed(t);
                    warmed += 1;
                }
            }
        }
        warmed
    }
}

impl Engine {
    /// Clears the given caches (every type when empty), of `board` only when given: here at once,
    /// and on every other instance at its next read of the clears hash (a quarter second). Answers
    /// how many entries went here, per type ([`CacheType::ALL`] order).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot record the clear for the other instances
    /// (this instance's entries are gone all the same).
    pub async fn clear_caches(
        &self,
        types: &[CacheType],
        board: Option<&BoardId>,
    ) -> Result<[u64; 4]> {
        let gone = self.caches.clear(types, board);
        let types = if types.is_empty() {
            &CacheType::ALL[..]
        } else {
            types
        };
        let fields = types
            .iter()
            .map(|t| match board {
                Some(b) => format!("{}|{b}", t.as_str()),
                None => t.as_str().to_owned(),
            })
            .collect();
        let counts = self.clears_call(fields).await?;
        // This instance cleared already: its next read must not clear again.
        self.clears_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(counts);
        Ok(gone)
    }

    /// Applies the clears other instances recorded since the last call (the first call only learns
    /// where they stand). Answers how many entries went.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the backend cannot be read.
    pub async fn apply_clears(&self) -> Result<u64> {
        let counts = self.clears_call(Vec::new()).await?;
        let mut todo = Vec::new();
        {
            let mut seen = self
                .clears_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let first = !self.clears_read.swap(true, Ordering::Relaxed);
            for (field, n) in counts {
                if seen.get(&field) != Some(&n) {
                    if !first {
                        todo.push(field.clone());
                    }
                    seen.insert(field, n);
                }
            }
        }
        let mut gone = 0;
        for field in todo {
            let (t, board) = match field.split_once('|') {
                Some((t, b)) => (t, BoardId::parse(b).ok()),
                None => (field.as_str(), None),
            };
            if let Some(t) = CacheType::parse(t) {
                gone += self.caches.clear(&[t], board.as_ref()).iter().sum::<u64>();
            }
        }
        Ok(gone)
    }

    async fn clears_call(&self, fields: Vec<String>) -> Result<Vec<(String, String)>> {
        let reply = self
            .exec
            .eval(crate::backend::Call {
                script: &super::scripts::CACHE_CLEARS,
                keys: vec![self.keys.cache_clears()],
                args: fields,
            })
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let bad = || super::reply::bad_reply("cache_clears", &reply);
        let flat = super::reply::as_array(&reply).ok_or_else(bad)?;
        flat.chunks(2)
            .map(|pair| match pair {
                [f, n] => Ok((
                    super::reply::as_str(f).ok_or_else(bad)?.to_owned(),
                    super::reply::as_str(n).ok_or_else(bad)?.to_owned(),
                )),
                _ => Err(bad()),
            })
            .collect()
    }
}

/// A cache slot's name.
fn slot_key(zset: &str, offset: Offset, limit: Limit, form: PageForm) -> String {
    format!(
        "{zset}\u{0}{}\u{0}{}\u{0}{}",
        offset.get(),
        limit.get(),
        form.as_str()
    )
}

/// The slot a stamp's version field ('v:<zset>:<depth>') belongs to, for this recipe.
fn slot_of(field: &str, r: &PageRecipe) -> String {
    let zset = field
        .strip_prefix("v:")
        .and_then(|f| f.rsplit_once(':'))
        .map_or("", |(z, _)| z);
    slot_key(zset, r.offset, r.limit, r.form)
}

/// Why a page stamped `stamp` is no longer true (None: it is), given what the board's cache hash
/// holds of each field now (`held`) and whether its last definition move was a rebuild.
fn why_stale<'a>(
    stamp: &Stamp,
    held: &impl Fn(&str) -> Option<&'a str>,
    rebuilt: bool,
) -> Option<Reason> {
    // A version never moved is absent from the hash, and stamped "0" (read_page.lua).
    let changed = |i: usize| {
        let now = stamp
            .fields
            .get(i)
            .and_then(|f| held(f))
            .unwrap_or(if i >= 2 { "0" } else { "" });
        now != stamp.values[i]
    };
    if changed(0) || changed(1) {
        Some(if rebuilt {
            Reason::Rebuild
        } else {
            Reason::Definition
        })
    } else if (2..stamp.values.len()).any(changed) {
        Some(Reason::Write)
    } else {
        None
    }
}
