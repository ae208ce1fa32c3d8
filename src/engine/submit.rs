//! Single writes: an event checked against its board, placed in its periods and scopes, and applied
//! by one call of lua/submit.lua.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::defs::CachedDef;
use super::reply::{as_array, as_f64, as_int, as_u64, bad_reply, decode_stored, fmt_num};
use super::{scripts, Engine, KeyResult, Submit, Submitted};
use crate::backend::{Call, Reply};
use crate::board::{BoardDef, BoardId, Member, RankMode, Scope, Score, TieBreak};
use crate::error::{Invalid, Result};
use crate::keys::{BoardKey, Keys};
use crate::window::{Period, Window};

/// What a submit call answers (`ARGV[9]` of lua/submit.lua).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum SubmitReply {
    /// One event's scores and ranks in every key it touched.
    Full,
    /// Counts and per-event flags.
    Count,
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
        let a = as_array(&reply).ok_or_else(bad)?;
        let (duplicate, rows, seq) = match a {
            [dup, Reply::Array(rows), seq] => {
                (as_int(dup) == Some(1), rows, as_u64(seq).unwrap_or(0))
            }
            _ => return Err(bad()),
        };
        if rows.len() != slots.keys.len() {
            return Err(bad());
        }
        let mut results = Vec::with_capacity(rows.len());
        for (row, slot) in rows.iter().zip(&slots.keys) {
            let cells = as_array(row).ok_or_else(bad)?;
            let [score, rank, prev] = cells else {
                return Err(bad());
            };
            results.push(KeyResult {
                window: slot.window,
                period: slot.period.map(|p| p.id()),
                scope: slot.scope.clone(),
                score: as_f64(score).map(|s| decode_stored(s, d.def.tick_bits(slot.window))),
                rank: as_u64(rank),
                previous_rank: as_u64(prev),
            });
        }
        if seq > 0 {
            self.log_one(&ev.board, seq, now, ev.logged(now)).await?;
        }
        if duplicate {
            self.confirm_logged(&ev.board).await?;
        }
        Ok(Submitted {
            member: ev.member.clone(),
            duplicate,
            results,
        })
    }
}
