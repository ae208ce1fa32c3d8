//! Reads: pages, cursors, around-me, score ranges, counts, standings and lookups, with concurrent
//! identical reads made as one call.

use std::sync::Arc;

use super::defs::CachedDef;
use super::reply::{as_array, as_f64, as_str, as_u64, bad_reply, decode_stored, fmt_num};
use super::{
    scripts, Cursor, Engine, Entry, Limit, Lookup, Offset, Page, Radius, Standing, View, MAX_LOOKUP,
};
use crate::backend::{Call, Reply};
use crate::board::{BoardDef, BoardId, Member, Score};
use crate::cache::Stamp;
use crate::error::{Error, Invalid, Result};
use crate::keys::BoardKey;
use crate::window::{Period, Window};

/// Members per coalesced standing read, at most: bounds how long one call holds Redis (~10 µs each
/// on a 1M-member key, so about a millisecond for a full call).
pub(super) const STANDINGS_PER_CALL: usize = 128;

/// Single-member reads per (board, view), coalesced; each answers the key's total and its row.
pub(super) type Standings =
    super::coalesce::Coalescer<(BoardId, View), Member, Result<(u64, Option<MemberRow>)>>;

/// Identical page reads, coalesced: every reader of one call gets a copy of its one answer.
pub(super) type Pages =
    super::coalesce::Coalescer<PageKey, (), Result<Option<(Page, Option<Stamp>)>>>;

/// Readers handed one page read's answer, at most: each gets a copy of the page, so this bounds the
/// copying one call's return does, not Redis' work.
pub(super) const PAGE_READERS_PER_CALL: usize = 1024;

/// Members per call of a lookup: at about 14 µs each on a 1M-member key, a millisecond a call.
const LOOKUP_PER_CALL: usize = 64;

/// What makes two page reads identical.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct PageKey {
    pub(super) board: BoardId,
    pub(super) view: View,
    pub(super) kind: &'static str,
    pub(super) extra: Vec<String>,
    pub(super) limit: Option<u32>,
}

/// The reads each coalesced member read call answers, looked up once.
static CALL_READS: crate::metrics::Resolved<metrics::Histogram> = crate::metrics::Resolved::new();

/// One member's row of a `read_members` reply.
pub(super) struct MemberRow {
    pub(super) stored: f64,
    pub(super) score: f64,
    pub(super) rank: u64,
    pub(super) worse: u64,
    pub(super) display_name: Option<String>,
    pub(super) data: Option<String>,
}

impl Engine {
    /// Resolves a view against a board: its period (checked to be readable) and keys.
    pub(super) fn resolve(
        &self,
        board: &BoardId,
        def: &BoardDef,
        view: &View,
        now: i64,
    ) -> Result<(Period, BoardKey), Invalid> {
        if !def.windows.contains(&view.window) {
            return Err(Invalid::new(
                "window",
                format!(
                    "board {board} keeps no {} window (it keeps {})",
                    view.window,
                    def.windows
                        .iter()
                        .map(|w| w.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let period = match view.period {
            Some(p) => {
                if p.start_ms() > now {
                    return Err(Invalid::new(
                        "period",
                        format!("{} has not started yet", p.id()),
                    ));
                }
                if let Some(exp) = p.expires_at_ms(def.retention_periods) {
                    if exp <= now {
                        return Err(Invalid::new(
                            "period",
                            format!(
                                "{} has expired: the board keeps {} closed {} periods",
                                p.id(),
                                def.retention_periods,
                                view.window
                            ),
                        ));
                    }
                }
                p
            }
            None => Period::containing(view.window, now)?,
        };
        let key = self.keys.leaderboard(board, &period, view.scope.as_ref());
        Ok((period, key))
    }

    /// Runs a read script on the key a view names. A view the cached definition refuses (a window
    /// it lacks, a period past its retention) is judged again by the current definition first, in
    /// case the board was just changed (see [`Engine::call_board`]).
    pub(super) async fn read<C>(
        &self,
        board: &BoardId,
        view: &View,
        build: impl Fn(&CachedDef, &BoardKey) -> (Call, C),
    ) -> Result<(Arc<CachedDef>, Period, Reply, C)> {
        let now = self.now_ms();
        let res = self
            .call_board(board, |d| {
                let (period, key) = self.resolve(board, &d.def, view, now)?;
                let (call, c) = build(d, &key);
                Ok((call, (period, c)))
            })
            .await;
        match res {
            Ok((d, reply, (period, c))) => Ok((d, period, reply, c)),
            // A read that was not answered wrote nothing: Redis is plainly unavailable.
            Err(Error::Unconfirmed { cause, .. }) => Err(Error::Unavailable(cause)),
            Err(e) => Err(e),
        }
    }

    fn page_call(
        &self,
        board: &BoardId,
        d: &CachedDef,
        key: &BoardKey,
        window: Window,
        kind: &str,
        extra: Vec<String>,
    ) -> Call {
        let cached = kind == "range" && extra.len() > 2;
        let mut args = vec![
            d.version.clone(),
            d.def.order.as_str().into(),
            d.def.rank_mode.as_str().into(),
            d.def.tick_bits(window).to_string(),
            kind.into(),
        ];
        args.extend(extra);
        let mut keys = vec![
            self.keys.definition(board),
            key.zset.clone(),
            key.distinct_values.clone(),
            self.keys.display_names(board),
        ];
        if cached {
            // A new epoch, in case this read starts the board's cache hash (see read_page.lua).
            args.push(self.new_version());
            keys.push(self.keys.cache_versions(board));
        }
        Call {
            script: &scripts::READ_PAGE,
            keys,
            args,
        }
    }

    /// A page read, shared by the identical reads in flight with it. As for member reads (see
    /// coalesce.rs), a read never shares a call sent before it arrived, so it sees every write that
    /// completed before it began; a top 20 polled by many dashboards at once costs Redis one call
    /// per round trip instead of one per dashboard.
    async fn page_read(
        &self,
        board: &BoardId,
        view: &View,
        kind: &'static str,
        extra: Vec<String>,
        limit: Option<u32>,
    ) -> Result<Option<(Page, Option<Stamp>)>> {
        let key = PageKey {
            board: board.clone(),
            view: view.clone(),
            kind,
            extra,
            limit,
        };
        self.pages
            .run(&key, (), |readers| {
                let key = &key;
                async move {
                    let out = self
                        .page_read_once(board, view, kind, &key.extra, limit)
                        .await;
                    vec![out; readers.len()]
                }
            })
            .await
    }

    async fn page_read_once(
        &self,
        board: &BoardId,
        view: &View,
        kind: &str,
        extra: &[String],
        limit: Option<u32>,
    ) -> Result<Option<(Page, Option<Stamp>)>> {
        let (d, period, reply, zset) = self
            .read(board, view, |d, key| {
                (
                    self.page_call(board, d, key, view.window, kind, extra.to_vec()),
                    key.zset.clone(),
                )
            })
            .await?;
        let bad = || bad_reply("read_page", &reply);
        let (total, flat, stamp) = match as_array(&reply).ok_or_else(bad)? {
            [total, Reply::Array(flat)] => (as_u64(total).ok_or_else(bad)?, flat, None),
            [total, Reply::Array(flat), stamp] => {
                // A page to cache: its depth was the third argument of the range.
                let stamp = match (as_array(stamp), extra.get(2)) {
                    (Some([e, dv, v]), Some(depth)) => Some(Stamp {
                        fields: vec!["e".into(), "dv".into(), format!("v:{zset}:{depth}")],
                        values: [e, dv, v]
                            .iter()
                            .map(|x| as_str(x).map(str::to_owned).ok_or_else(bad))
                            .collect::<Result<_>>()?,
                    }),
                    _ => None,
                };
                (as_u64(total).ok_or_else(bad)?, flat, stamp)
            }
            [_, Reply::Nil] => return Ok(None),
            _ => return Err(bad()),
        };
        let bits = d.def.tick_bits(view.window);
        let mut entries = Vec::with_capacity(flat.len() / 4);
        let mut last = None;
        for e in flat.chunks(4) {
            let [m, s, r, name] = e else {
                return Err(bad());
            };
            let member = as_str(m).ok_or_else(bad)?.to_owned();
            let stored = as_f64(s).ok_or_else(bad)?;
            last = Some(Cursor {
                stored,
                member: member.clone(),
            });
            entries.push(Entry {
                rank: as_u64(r).ok_or_else(bad)?,
                member,
                score: decode_stored(stored, bits),
                display_name: as_str(name).map(str::to_owned),
            });
        }
        let next = match limit {
            Some(l) if entries.len() as u64 == u64::from(l) => last,
            _ => None,
        };
        Ok(Some((
            Page {
                board: board.clone(),
                window: view.window,
                period: (view.window != Window::All).then(|| period.id()),
                scope: view.scope.clone(),
                total,
                entries,
                next,
            },
            stamp,
        )))
    }

    /// The best `limit` entries.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`], [`Error::Invalid`] for a view the board cannot serve.
    pub async fn top(&self, board: &BoardId, view: &View, limit: Limit) -> Result<Page> {
        self.page(board, view, Offset::new(0)?, limit).await
    }

    /// Entries at 0-based positions `[offset, offset + limit)`, with a cursor to the next page.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`], [`Error::Invalid`] for a view the board cannot serve.
    pub async fn page(
        &self,
        board: &BoardId,
        view: &View,
        offset: Offset,
        limit: Limit,
    ) -> Result<Page> {
        self.range_read(board, view, offset, limit, false)
            .await
            .map(|(page, _)| page)
    }

    /// [`Engine::page`], and with `cache` registered as a cached page of its key: the stamp it was
    /// read at (none when the key keeps as many cached depths as it may).
    pub(super) async fn range_read(
        &self,
        board: &BoardId,
        view: &View,
        offset: Offset,
        limit: Limit,
        cache: bool,
    ) -> Result<(Page, Option<Stamp>)> {
        let mut extra = vec![offset.get().to_string(), limit.get().to_string()];
        if cache {
            extra.push((offset.get() + u64::from(limit.get())).to_string());
        }
        self.page_read(board, view, "range", extra, Some(limit.get()))
            .await?
            .ok_or_else(|| Error::Backend("range read answered no page".into()))
    }

    /// The `limit` entries after a cursor.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`], [`Error::Invalid`] for a view the board cannot serve.
    pub async fn after(
        &self,
        board: &BoardId,
        view: &View,
        cursor: &Cursor,
        limit: Limit,
    ) -> Result<Page> {
        self.page_read(
            board,
            view,
            "after",
            vec![
                fmt_num(cursor.stored),
                cursor.member.clone(),
                limit.get().to_string(),
            ],
            Some(limit.get()),
        )
        .await?
        .map(|(page, _)| page)
        .ok_or_else(|| Error::Backend("cursor read answered no page".into()))
    }

    /// The member and `radius` entries on each side; at the borders the window shifts so that it
    /// always holds `2 * radius + 1` entries when the board has that many.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`], [`Error::BoardNotFound`].
    pub async fn around(
        &self,
        board: &BoardId,
        view: &View,
        member: &Member,
        radius: Radius,
    ) -> Result<Page> {
        self.page_read(
            board,
            view,
            "around",
            vec![member.to_string(), radius.get().to_string()],
            None,
        )
        .await?
        .map(|(page, _)| page)
        .ok_or_else(|| Error::MemberNotFound {
            board: board.clone(),
            member: member.clone(),
        })
    }

    /// Entries whose score lies in `[min, max]`, best first, at most `limit`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `min` when `min > max`, [`Error::BoardNotFound`].
    pub async fn score_range(
        &self,
        board: &BoardId,
        view: &View,
        min: Score,
        max: Score,
        limit: Limit,
    ) -> Result<Page> {
        if min.get() > max.get() {
            return Err(Invalid::new(
                "min",
                format!("must not exceed max ({} > {})", min.get(), max.get()),
            )
            .into());
        }
        self.page_read(
            board,
            view,
            "score",
            vec![
                fmt_num(min.get()),
                fmt_num(max.get()),
                limit.get().to_string(),
            ],
            None,
        )
        .await?
        .map(|(page, _)| page)
        .ok_or_else(|| Error::Backend("score read answered no page".into()))
    }

    /// Members in the key a view names.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn count(&self, board: &BoardId, view: &View) -> Result<u64> {
        let page = self
            .page_read(board, view, "range", vec!["0".into(), "0".into()], None)
            .await?
            .ok_or_else(|| Error::Backend("count answered no page".into()))?;
        Ok(page.0.total)
    }

    async fn members_read(
        &self,
        board: &BoardId,
        view: &View,
        members: &[Member],
        with_data: bool,
    ) -> Result<(Arc<CachedDef>, u64, Vec<Option<MemberRow>>)> {
        let (d, _, reply, ()) = self
            .read(board, view, |d, key| {
                let mut args = vec![
                    d.version.clone(),
                    d.def.order.as_str().into(),
                    d.def.rank_mode.as_str().into(),
                    d.def.tick_bits(view.window).to_string(),
                    if with_data { "1" } else { "0" }.into(),
                ];
                args.extend(members.iter().map(|m| m.to_string()));
                (
                    Call {
                        script: &scripts::READ_MEMBERS,
                        keys: vec![
                            self.keys.definition(board),
                            key.zset.clone(),
                            key.distinct_values.clone(),
                            self.keys.display_names(board),
                            self.keys.display_data(board),
                        ],
                        args,
                    },
                    (),
                )
            })
            .await?;
        let bad = || bad_reply("read_members", &reply);
        let [total, Reply::Array(rows)] = as_array(&reply).ok_or_else(bad)? else {
            return Err(bad());
        };
        let total = as_u64(total).ok_or_else(bad)?;
        let bits = d.def.tick_bits(view.window);
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Reply::Nil => out.push(None),
                Reply::Array(cells) => {
                    // The display name and data come only from a board that has either.
                    let (s, r, w, name, data) = match cells.as_slice() {
                        [s, r, w] => (s, r, w, &Reply::Nil, &Reply::Nil),
                        [s, r, w, name, data] => (s, r, w, name, data),
                        _ => return Err(bad()),
                    };
                    let stored = as_f64(s).ok_or_else(bad)?;
                    out.push(Some(MemberRow {
                        stored,
                        score: decode_stored(stored, bits),
                        rank: as_u64(r).ok_or_else(bad)?,
                        worse: as_u64(w).ok_or_else(bad)?,
                        display_name: as_str(name).map(str::to_owned),
                        data: as_str(data).map(str::to_owned),
                    }));
                }
                _ => return Err(bad()),
            }
        }
        if out.len() != members.len() {
            return Err(bad());
        }
        Ok((d, total, out))
    }

    /// A member's score, rank, percentile and the total.
    ///
    /// # Errors
    /// [`Error::MemberNotFound`], [`Error::BoardNotFound`].
    pub async fn standing(
        &self,
        board: &BoardId,
        view: &View,
        member: &Member,
    ) -> Result<Standing> {
        // Concurrent reads of the same key share one call (see coalesce.rs): under load that is
        // one script call per round trip rather than one per request.
        let key = (board.clone(), view.clone());
        let (total, row) = self
            .standings
            .run(&key, member.clone(), |members| async move {
                let n = members.len();
                CALL_READS.with(
                    || metrics::histogram!(crate::metrics::READ_CALL_READS),
                    |h| h.record(n as f64),
                );
                match self.members_read(board, view, &members, true).await {
                    Ok((_, total, rows)) if rows.len() == n => {
                        rows.into_iter().map(|r| Ok((total, r))).collect()
                    }
                    Ok((_, _, rows)) => {
                        let e = Error::Backend(format!(
                            "read_members answered {} rows for {n} members",
                            rows.len()
                        ));
                        (0..n).map(|_| Err(e.clone())).collect()
                    }
                    Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
                }
            })
            .await?;
        let Some(row) = row else {
            return Err(Error::MemberNotFound {
                board: board.clone(),
                member: member.clone(),
            });
        };
        Ok(Standing {
            member: member.clone(),
            score: row.score,
            rank: row.rank,
            percentile: if total == 0 {
                0.0
            } else {
                row.worse as f64 * 100.0 / total as f64
            },
            total,
            display_name: row.display_name,
            data: row.data.and_then(|d| serde_json::from_str(&d).ok()),
        })
    }

    /// Ranks for a list of members (at most [`MAX_LOOKUP`]), in rank order, with the missing ones.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `members` when the list is empty or too long, [`Error::BoardNotFound`].
    pub async fn lookup(&self, board: &BoardId, view: &View, members: &[Member]) -> Result<Lookup> {
        if members.is_empty() || members.len() > MAX_LOOKUP {
            return Err(Invalid::new(
                "members",
                format!("must name 1 to {MAX_LOOKUP} members, got {}", members.len()),
            )
            .into());
        }
        let mut unique: Vec<Member> = Vec::with_capacity(members.len());
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        for m in members {
            if seen.insert(m) {
                unique.push(m.clone());
            }
        }
        // In calls of a bounded size, each holding Redis about a millisecond at most: one call for
        // a thousand members of a big key held it ~14 ms, stalling every other client. Each call is
        // consistent in itself; writes may land between them, and the total is the last call's.
        let mut rows = Vec::with_capacity(unique.len());
        let mut read = None;
        for part in unique.chunks(LOOKUP_PER_CALL) {
            let (d, total, part_rows) = self.members_read(board, view, part, false).await?;
            rows.extend(part_rows);
            read = Some((d, total));
        }
        let (d, total) = read.expect("at least one member");
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for (m, row) in unique.into_iter().zip(rows) {
            match row {
                Some(row) => found.push((row, m)),
                None => missing.push(m),
            }
        }
        // Rank order; among equal ranks, the board's own order: stored score (which holds the
        // tie-break tick), then member bytes as Redis orders them (reversed on desc boards).
        let desc = d.def.order == crate::board::Order::Desc;
        found.sort_by(|(a, am), (b, bm)| {
            a.rank.cmp(&b.rank).then_with(|| {
                let by_score = a.stored.total_cmp(&b.stored);
                let by_member = am.as_str().as_bytes().cmp(bm.as_str().as_bytes());
                if desc {
                    by_score.reverse().then(by_member.reverse())
                } else {
                    by_score.then(by_member)
                }
            })
        });
        let entries = found
            .into_iter()
            .map(|(row, m)| Entry {
                rank: row.rank,
                member: m.to_string(),
                score: row.score,
                display_name: row.display_name,
            })
            .collect();
        Ok(Lookup {
            total,
            entries,
            missing,
        })
    }
}
