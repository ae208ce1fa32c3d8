//! Single writes: an event checked against its board, placed in its periods and scopes, and applied
//! by one call of lua/submit.lua.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::coalesce::Coalescer;
use super::defs::{CachedDef, Next, ATTEMPTS};
use super::reply::{as_array, as_f64, as_int, as_str, as_u64, bad_reply, decode_stored, fmt_num};
use super::{scripts, Engine, KeyResult, LoggedOp, Submit, Submitted};
use crate::backend::{Call, Reply};
use crate::board::{BoardDef, BoardId, Member, RankMode, Scope, Score, TieBreak};
use crate::error::{Error, Invalid, Result};
use crate::keys::{BoardKey, Keys};
use crate::metrics as m;
use crate::window::{Period, Window};

/// What a submit call answers (`ARGV[9]` of lua/submit.lua).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum SubmitReply {
    /// One event's scores and ranks in every key it touched.
    Full,
    /// Counts and per-event flags.
    Count,
    /// Every event's own answer, a refusal refusing that event only: concurrent single writes
    /// sharing one call.
    Each,
    /// Every event the call would refuse, writing nothing.
    Check,
    /// As `Count`, for a rebuild replaying the stored log: nothing is logged again (the sweep
    /// would offer those events back under the numbers Redis gave them during the replay).
    Replay,
}

impl SubmitReply {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Each => "each",
            Self::Count | Self::Replay => "count",
            Self::Check => "check",
        }
    }
}

/// What an event id stands for: a digest of the event's member, value and set of scopes (their
/// order and repetition aside), 16 hex digits. A retry of the event has the same print; another
/// event under the same id has another, and is refused (see lua/submit.lua).
pub fn event_print<'a>(member: &str, value: f64, scopes: impl Iterator<Item = &'a str>) -> String {
    use sha2::Digest;
    let mut scopes: Vec<&str> = scopes.filter(|s| !s.is_empty()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    let mut h = sha2::Sha256::new();
    h.update(member.as_bytes());
    h.update(b"\n");
    h.update(fmt_num(value).as_bytes());
    for s in scopes {
        h.update(b"\n");
        h.update(s.as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One event, checked against its board and placed in its periods.
pub(super) struct Prepared {
    pub(super) member: Member,
    pub(super) value: Score,
    pub(super) event_id: Option<String>,
    pub(super) at: i64,
    pub(super) scopes: String,
    /// When the event was received (the call's time, or the logged time in a replay).
    pub(super) now: i64,
    /// (slot, tick) per key the event touches.
    pub(super) touch: Vec<(usize, u64)>,
}

/// One leaderboard key a chunk of events touches.
pub(super) struct Slot {
    pub(super) key: BoardKey,
    pub(super) window: Window,
    /// `None` for the all-time window.
    pub(super) period: Option<Period>,
    pub(super) scope: Option<Scope>,
    /// When the key expires, Unix ms (0: never).
    pub(super) expire: i64,
}

/// Boards whose cached definitions refused events of one batch, each once, with that definition.
#[derive(Default)]
pub(super) struct Refusing<'a> {
    pub(super) boards: Vec<(&'a BoardId, Arc<CachedDef>)>,
    pub(super) seen: HashSet<&'a BoardId>,
}

impl<'a> Refusing<'a> {
    pub(super) fn add(&mut self, board: &'a BoardId, def: &Arc<CachedDef>) {
        if self.seen.insert(board) {
            self.boards.push((board, def.clone()));
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.boards.is_empty()
    }
}

/// The keys a chunk of events touches.
#[derive(Default)]
pub(super) struct Slots {
    pub(super) keys: Vec<Slot>,
    /// Slots by period and scope, which name exactly one key (a period's id is unique within its
    /// window, and the all-time window has one period): most events of a chunk share their keys,
    /// and naming a key (several strings) costs more than finding it here.
    pub(super) by_period: HashMap<Period, PeriodSlots>,
}

/// The slots of one period: the global board's and each scope's.
#[derive(Default)]
pub(super) struct PeriodSlots {
    pub(super) global: Option<usize>,
    pub(super) scoped: HashMap<Scope, usize>,
}

impl Slots {
    /// The slot of the leaderboard of `board` for `period` and `scope`, added when new.
    fn slot(
        &mut self,
        keys: &Keys,
        board: &BoardId,
        period: Period,
        scope: Option<&Scope>,
        expire: i64,
    ) -> usize {
        let known = self.by_period.get(&period).and_then(|p| match scope {
            None => p.global,
            Some(s) => p.scoped.get(s).copied(),
        });
        if let Some(i) = known {
            return i;
        }
        let i = self.keys.len();
        let window = period.window();
        self.keys.push(Slot {
            key: keys.leaderboard(board, &period, scope),
            window,
            period: (window != Window::All).then_some(period),
            scope: scope.cloned(),
            expire,
        });
        let p = self.by_period.entry(period).or_default();
        match scope {
            None => p.global = Some(i),
            Some(s) => {
                p.scoped.insert(s.clone(), i);
            }
        }
        i
    }
}

impl Engine {
    pub(super) fn prepare(
        &self,
        board: &BoardId,
        def: &BoardDef,
        ev: &Submit,
        now: i64,
        slots: &mut Slots,
    ) -> Result<Prepared, Invalid> {
        def.check_value("value", ev.value)?;
        let at = ev.at_ms.unwrap_or(now);
        let max_future = self.config.max_future.as_millis() as i64;
        if at > now + max_future {
            return Err(Invalid::new(
                "at",
                format!(
                    "must not lie more than {} s in the future",
                    max_future / 1000
                ),
            ));
        }
        let mut touch = Vec::with_capacity(def.windows.len() * (1 + ev.scopes.len()));
        for &window in &def.windows {
            let period =
                Period::containing(window, at).map_err(|e| Invalid::from(e).renamed("at"))?;
            let expire = period.expires_at_ms(def.retention_periods).unwrap_or(0);
            if window != Window::All && expire <= now {
                return Err(Invalid::new(
                    "at",
                    format!(
                        "falls in the {window} period {} whose keys expired (the board keeps {} closed periods)",
                        period.id(),
                        def.retention_periods
                    ),
                ));
            }
            let tick = if def.tie_break == TieBreak::First {
                period
                    .tick(at)
                    .map_err(|e| Invalid::from(e).renamed("at"))?
            } else {
                0
            };
            for scope in std::iter::once(None).chain(ev.scopes.iter().map(Some)) {
                touch.push((slots.slot(&self.keys, board, period, scope, expire), tick));
            }
        }
        Ok(Prepared {
            member: ev.member.clone(),
            value: ev.value,
            event_id: ev.event_id.as_ref().map(|e| e.to_string()),
            at,
            now,
            scopes: ev
                .scopes
                .iter()
                .map(Scope::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            touch,
        })
    }

    pub(super) fn submit_call(
        &self,
        board: &BoardId,
        d: &CachedDef,
        slots: &Slots,
        events: &[Prepared],
        reply: SubmitReply,
        now: i64,
    ) -> Call {
        let def = &d.def;
        let dense = def.rank_mode == RankMode::Dense;
        let mut keys = vec![
            self.keys.definition(board),
            self.keys.dedupe(board),
            self.keys.index(board),
            self.keys.sequence(board),
            self.keys.log(board),
        ];
        let mut args = vec![
            d.version.clone(),
            now.to_string(),
            self.config.dedupe_window.as_millis().to_string(),
            def.policy.as_str().into(),
            def.order.as_str().into(),
            def.rank_mode.as_str().into(),
            def.score_bound().map_or_else(|| "0".into(), fmt_num),
            def.max_members.unwrap_or(0).to_string(),
            reply.as_str().into(),
            if reply == SubmitReply::Replay {
                "0".into()
            } else {
                self.log_flag()
            },
            // A replay applies what was accepted once: a limit lowered since, or a scope that
            // counted by another clock then, must not refuse it now (0: no limit).
            if reply == SubmitReply::Replay {
                "0".into()
            } else {
                def.max_scopes.to_string()
            },
            slots.keys.len().to_string(),
        ];
        for slot in &slots.keys {
            keys.push(slot.key.zset.clone());
            if dense {
                keys.push(slot.key.distinct_values.clone());
                keys.push(slot.key.distinct_counts.clone());
            }
            args.push(slot.expire.to_string());
            args.push(def.tick_bits(slot.window).to_string());
            args.push(
                slot.scope
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            );
        }
        args.push(events.len().to_string());
        for ev in events {
            args.push(ev.member.to_string());
            args.push(fmt_num(ev.value.get()));
            args.push(ev.event_id.clone().unwrap_or_default());
            args.push(ev.at.to_string());
            args.push(ev.scopes.clone());
            args.push(ev.now.to_string());
            args.push(ev.touch.len().to_string());
            for (slot, tick) in &ev.touch {
                args.push((slot + 1).to_string());
                args.push(tick.to_string());
            }
            args.push(match &ev.event_id {
                Some(_) => event_print(ev.member.as_str(), ev.value.get(), ev.scopes.split(' ')),
                None => String::new(),
            });
        }
        keys.push(self.keys.event_prints(board));
        keys.push(self.keys.scopes(board));
        keys.push(self.keys.removals(board));
        keys.push(self.keys.cache_versions(board));
        Call {
            script: &scripts::SUBMIT,
            keys,
            args,
        }
    }

    /// Applies one score event to every (window × scope) key of its board in one atomic call.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a value or time the board cannot take, [`Error::BoardNotFound`].
    #[tracing::instrument(skip_all, fields(board = %ev.board))]
    pub async fn submit(&self, ev: &Submit) -> Result<Submitted> {
        let applied = self.apply_one(ev).await?;
        self.settle_write(&ev.board, applied).await
    }

    /// What Redis answered a single event, before the journal has it.
    async fn apply_one(&self, ev: &Submit) -> Result<Applied> {
        let now = self.now_ms();
        let (d, reply, slots) = self
            .call_board(&ev.board, |d| {
                let mut slots = Slots::default();
                let p = self.prepare(&ev.board, &d.def, ev, now, &mut slots)?;
                let call = self.submit_call(
                    &ev.board,
                    d,
                    &slots,
                    std::slice::from_ref(&p),
                    SubmitReply::Full,
                    now,
                );
                Ok((call, slots))
            })
            .await?;
        let bad = || bad_reply("submit", &reply);
        // {duplicate, sequence number, then (score, rank, rank before) per key}, flat.
        let a = as_array(&reply).ok_or_else(bad)?;
        let [dup, seq, cells @ ..] = a else {
            return Err(bad());
        };
        let (duplicate, seq) = (as_int(dup) == Some(1), as_u64(seq).unwrap_or(0));
        let results = key_results(&d.def, &slots, 0..slots.keys.len(), cells).ok_or_else(bad)?;
        Ok(Applied::new(ev, duplicate, seq, now, results))
    }

    /// Answers an applied event once the journal has its operation (in sync mode, once the store
    /// committed it), or, for a duplicate, once what it repeats is committed.
    async fn settle_write(&self, board: &BoardId, a: Applied) -> Result<Submitted> {
        if let Some(op) = a.op {
            self.journal(vec![op]).await?;
        }
        if a.submitted.duplicate {
            self.confirm_logged(board).await?;
        }
        Ok(a.submitted)
    }
}

/// An event Redis applied (or found a duplicate), with the operation the journal is to get.
pub(super) struct Applied {
    submitted: Submitted,
    op: Option<LoggedOp>,
}

impl Applied {
    /// What Redis answered `ev`: an accepted event numbered `seq` (0: not logged) goes to the
    /// journal; a duplicate does not.
    fn new(ev: &Submit, duplicate: bool, seq: u64, now: i64, results: Vec<KeyResult>) -> Self {
        Self {
            op: (seq > 0 && !duplicate).then(|| LoggedOp {
                board: ev.board.clone(),
                seq,
                recv_ms: now,
                op: ev.logged(now),
            }),
            submitted: Submitted {
                member: ev.member.clone(),
                duplicate,
                results,
            },
        }
    }
}

/// Concurrent single writes, per board (see [`Engine::submit_shared`]).
pub(super) type Writes = Coalescer<BoardId, Submit, Result<Applied>>;

/// What one event's keys answer: `cells` holds (stored score, rank, rank before) for each slot
/// `touched` names, in order. `None` when the cells do not match.
fn key_results(
    def: &BoardDef,
    slots: &Slots,
    touched: impl ExactSizeIterator<Item = usize>,
    cells: &[Reply],
) -> Option<Vec<KeyResult>> {
    if cells.len() != 3 * touched.len() {
        return None;
    }
    let mut results = Vec::with_capacity(touched.len());
    for (row, i) in cells.chunks_exact(3).zip(touched) {
        let slot = slots.keys.get(i)?;
        results.push(KeyResult {
            window: slot.window,
            period: slot.period.map(|p| p.id()),
            scope: slot.scope.clone(),
            score: as_f64(&row[0]).map(|s| decode_stored(s, def.tick_bits(slot.window))),
            rank: as_u64(&row[1]),
            previous_rank: as_u64(&row[2]),
        });
    }
    Some(results)
}

impl Engine {
    /// [`Engine::submit`], sharing one script call with the other single writes to the same board
    /// in flight at the same time: an event that finds no call for its board under way is sent at
    /// once, alone; those that arrive meanwhile go together, in arrival order, as the next call
    /// (at most [`EngineConfig::write_share`](super::EngineConfig) of them). Each is answered
    /// exactly as if it had been sent alone at its place in that order: its own scores, ranks,
    /// ranks before, duplicate flag and log number; a refusal refuses that event only.
    ///
    /// # Errors
    /// As [`Engine::submit`].
    pub async fn submit_shared(self: &Arc<Self>, ev: Submit) -> Result<Submitted> {
        if self.config.write_share <= 1 {
            metrics::histogram!(m::WRITE_CALL_EVENTS).record(1.0);
            return self.submit(&ev).await;
        }
        let engine = self.clone();
        let board = ev.board.clone();
        // The call's task ends, and the next call goes out, as soon as Redis has answered: each
        // event waits for the journal (and the store) in its own request, so that the commits of
        // concurrent events are shared by the store's group commit as ever.
        let applied = self
            .writes
            .run_detached(
                &board,
                ev,
                move |events| async move { engine.apply_each(events).await },
                || {
                    Err(Error::Unconfirmed {
                        detail: "the call that carried the write ended without its answer: the \
                                 write may have been applied"
                            .into(),
                        cause: "shared write call failed".into(),
                    })
                },
            )
            .await?;
        self.settle_write(&board, applied).await
    }

    /// Applies single events of one board in one script call, in order, each answered exactly as
    /// [`Engine::submit`] would answer it sent alone at its place in that order: what
    /// [`Engine::submit_shared`] does with the events that arrive together. An event of another
    /// board than the first one's is refused (`board`).
    pub async fn submit_each(&self, events: Vec<Submit>) -> Vec<Result<Submitted>> {
        let boards: Vec<BoardId> = events.iter().map(|e| e.board.clone()).collect();
        let applied = self.apply_each(events).await;
        let settled = boards.iter().zip(applied).map(|(b, a)| async move {
            match a {
                Ok(a) => self.settle_write(b, a).await,
                Err(e) => Err(e),
            }
        });
        futures::future::join_all(settled).await
    }

    /// [`Engine::submit_each`] up to Redis's answers, before the journal has the operations.
    async fn apply_each(&self, events: Vec<Submit>) -> Vec<Result<Applied>> {
        metrics::histogram!(m::WRITE_CALL_EVENTS).record(events.len() as f64);
        if let [ev] = events.as_slice() {
            return vec![self.apply_one(ev).await];
        }
        let Some(board) = events.first().map(|e| e.board.clone()) else {
            return Vec::new();
        };
        if events.iter().any(|e| e.board != board) {
            return events
                .iter()
                .map(|e| {
                    Err(if e.board == board {
                        Error::Conflict("another event of the call names another board".into())
                    } else {
                        Error::Invalid(Invalid::new(
                            "board",
                            format!("must be {board}, as the first event's"),
                        ))
                    })
                })
                .collect();
        }
        let all = |e: Error| events.iter().map(|_| Err(e.clone())).collect();
        let now = self.now_ms();
        let mut checked = false;
        for _ in 0..ATTEMPTS {
            let d = match self.definition(&board).await {
                Ok(d) => d,
                Err(e) => return all(e),
            };
            let mut slots = Slots::default();
            let mut prepared = Vec::with_capacity(events.len());
            let mut placed = Vec::with_capacity(events.len());
            let mut refused = Vec::new();
            for (i, ev) in events.iter().enumerate() {
                match self.prepare(&board, &d.def, ev, now, &mut slots) {
                    Ok(p) => {
                        prepared.push(p);
                        placed.push(i);
                    }
                    Err(e) => refused.push((i, e)),
                }
            }
            // A refusal by a cached definition is judged again by the current one.
            if !refused.is_empty() && !checked {
                checked = true;
                match self.newer_def(&board, &d).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(e) => return all(e),
                }
            }
            let mut out: Vec<Option<Result<Applied>>> = events.iter().map(|_| None).collect();
            for (i, e) in refused {
                out[i] = Some(Err(e.into()));
            }
            if !prepared.is_empty() {
                let call = self.submit_call(&board, &d, &slots, &prepared, SubmitReply::Each, now);
                match self.exec.eval(call).await {
                    Ok(reply) => {
                        let answers = self
                            .group_answers(&d, &slots, &events, &placed, &prepared, &reply, now);
                        for (i, a) in placed.into_iter().zip(answers) {
                            out[i] = Some(a);
                        }
                    }
                    Err(e) => match self.on_error(&board, e) {
                        Next::Retry => continue,
                        Next::Fail(e) => {
                            for i in placed {
                                out[i] = Some(Err(e.clone()));
                            }
                        }
                    },
                }
            }
            return out
                .into_iter()
                .map(|o| {
                    o.unwrap_or_else(|| Err(Error::Backend("an event went unanswered".into())))
                })
                .collect();
        }
        all(Error::Conflict(format!(
            "board {board} kept changing under this request"
        )))
    }

    /// Each event's answer from a shared call's reply (see lua/submit.lua, reply `each`).
    #[allow(clippy::too_many_arguments)]
    fn group_answers(
        &self,
        d: &CachedDef,
        slots: &Slots,
        events: &[Submit],
        placed: &[usize],
        prepared: &[Prepared],
        reply: &Reply,
        now: i64,
    ) -> Vec<Result<Applied>> {
        let bad = || bad_reply("submit", reply);
        let Some(cells) = as_array(reply) else {
            return prepared.iter().map(|_| Err(bad())).collect();
        };
        let mut answers = Vec::with_capacity(prepared.len());
        let mut at = 0;
        for (p, &i) in prepared.iter().zip(placed) {
            let ev = &events[i];
            let code = cells.get(at).and_then(as_int);
            if code == Some(2) {
                let why = cells
                    .get(at + 1)
                    .and_then(as_str)
                    .unwrap_or("value: refused");
                // As a refusal of the event sent alone: a reused id is a conflict, the rest bad input.
                answers.push(Err(match (why, &ev.event_id) {
                    ("event_id: reused", Some(id)) => Error::EventIdReused {
                        field: "event_id".into(),
                        event_id: id.to_string(),
                    },
                    _ => Error::Invalid(Invalid::from_reason(why)),
                }));
                at += 2;
                continue;
            }
            let seq = cells.get(at + 1).and_then(as_u64).unwrap_or(0);
            let k = p.touch.len();
            let rows = cells.get(at + 2..at + 2 + 3 * k).unwrap_or(&[]);
            at += 2 + 3 * k;
            let Some(results) = key_results(&d.def, slots, p.touch.iter().map(|t| t.0), rows)
            else {
                answers.push(Err(bad()));
                continue;
            };
            let duplicate = code == Some(1);
            answers.push(Ok(Applied::new(ev, duplicate, seq, now, results)));
        }
        answers
    }
}
