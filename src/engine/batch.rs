//! Batches: many events checked first, then applied in bounded calls, with the exact list of what
//! to resend when some were not.

use std::collections::HashMap;
use std::sync::Arc;

use super::defs::{CachedDef, Next, ATTEMPTS};
use super::reply::{as_array, as_f64, as_str, as_u64, bad_reply, unavailable};
use super::submit::{event_print, Prepared, Refusing, Slots, SubmitReply};
use super::{scripts, BatchOutcome, Engine, LoggedOp, Submit, MAX_BATCH};
use crate::backend::{Call, ExecError, Refusal};
use crate::board::{BoardId, Policy, Scope};
use crate::error::{Error, Invalid, Result};

/// One board of a batch of several calls: what [`Engine::refused_sums`] checks before the batch
/// writes (the sums of a board whose events add up, the scopes of every board).
struct SumSpan {
    board: BoardId,
    def: Arc<CachedDef>,
    /// Whether the board's events add up (policy `incr`).
    incr: bool,
    /// The distinct scopes the batch names on the board.
    scopes: Vec<String>,
    /// The board's leaderboard keys the batch touches, with their tick bits.
    keys: Vec<String>,
    bits: Vec<String>,
    seen: std::collections::HashSet<String>,
    /// Every |value| the batch adds to the board, summed.
    added: f64,
    /// The board's events, in batch order.
    events: Vec<usize>,
}

impl SumSpan {
    pub(super) fn new(board: BoardId, def: Arc<CachedDef>) -> Self {
        Self {
            board,
            incr: def.def.policy == Policy::Incr,
            def,
            scopes: Vec::new(),
            keys: Vec::new(),
            bits: Vec::new(),
            seen: std::collections::HashSet::new(),
            added: 0.0,
            events: Vec::new(),
        }
    }

    /// Adds one call's keys and events.
    fn add(&mut self, slots: &Slots, prepared: &[Prepared], idx: &[usize]) {
        for slot in &slots.keys {
            if self.seen.insert(slot.key.zset.clone()) {
                self.keys.push(slot.key.zset.clone());
                self.bits
                    .push(self.def.def.tick_bits(slot.window).to_string());
                if let Some(s) = &slot.scope {
                    if !self.scopes.iter().any(|x| x == s.as_str()) {
                        self.scopes.push(s.to_string());
                    }
                }
            }
        }
        self.added += prepared.iter().map(|p| p.value.get().abs()).sum::<f64>();
        self.events.extend_from_slice(idx);
    }
}

/// The error of a batch some of whose calls failed for good. When none wrote, it is the failure
/// itself (every refused event listed when those are the reason); otherwise a conflict naming the
/// events that were not applied, so that the client can resend exactly those.
fn partly_applied(wrote: usize, total: usize, left: Left, failure: Option<Error>) -> Error {
    let Left {
        mut unapplied,
        mut unknown,
        mut refused,
    } = left;
    refused.sort_by_key(|(i, _)| *i);
    unapplied.sort_unstable();
    if !unknown.is_empty() {
        // Resending these without their event ids could apply them twice: say so, not "resend".
        unknown.sort_unstable();
        let mut detail = format!(
            "the leaderboard backend did not answer in time for events {}",
            index_ranges(&unknown)
        );
        if !unapplied.is_empty() {
            detail.push_str(&format!(
                ", and events {} were not applied",
                index_ranges(&unapplied)
            ));
        }
        let cause = match failure {
            Some(Error::Unconfirmed { cause, .. }) => cause,
            Some(e) => e.to_string(),
            None => String::new(),
        };
        return Error::Unconfirmed { detail, cause };
    }
    if wrote == 0 {
        return match failure {
            Some(e) if refused.is_empty() => e,
            _ if !refused.is_empty() => Error::InvalidBatch(refused),
            _ => Error::Backend("a batch failed without a reason".into()),
        };
    }
    let why = match (refused.first(), &failure) {
        (Some((i, inv)), _) => format!(
            "a concurrent change to their boards came between this batch's check and its write \
             (events[{i}].{}: {})",
            inv.field, inv.message
        ),
        // What a client may read: no internal detail.
        (None, Some(Error::Unavailable(_))) => {
            "the batch was cut short: the leaderboard backend became unreachable".into()
        }
        (None, Some(Error::Backend(_))) => "the batch was cut short by an internal error".into(),
        (None, Some(e)) => format!("the batch was cut short: {e}"),
        (None, None) => "no reason given".into(),
    };
    Error::Conflict(format!(
        "{} of {total} events were not applied and the others were: {why}; resend events {}",
        unapplied.len(),
        index_ranges(&unapplied)
    ))
}

/// The events of a batch that an attempt left unapplied.
struct Left {
    /// Not applied: a failed call, or one never made.
    unapplied: Vec<usize>,
    /// Sent and not answered: applied or not, nobody can say.
    unknown: Vec<usize>,
    /// Refused, with the reason (also not applied).
    refused: Vec<(usize, Invalid)>,
}

/// Sorted indexes as ranges: "0-4, 7, 9-10".
fn index_ranges(ix: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ix.len() {
        let mut j = i;
        while j + 1 < ix.len() && ix[j + 1] == ix[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        if j == i {
            out.push_str(&ix[i].to_string());
        } else {
            out.push_str(&format!("{}-{}", ix[i], ix[j]));
        }
        i = j + 1;
    }
    out
}

impl Engine {
    /// Checks events of a batch against their boards without writing anything: every event that
    /// names an undefined board, a value its board cannot hold or a time outside its periods, with
    /// the index it was given. Events refused by a cached definition are judged again should
    /// another instance have changed the board since (see [`Engine::newer_def`]).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when definitions cannot be read.
    pub async fn check_batch(&self, events: &[(usize, Submit)]) -> Result<Vec<(usize, Invalid)>> {
        let now = self.now_ms();
        let mut rechecked = false;
        loop {
            let mut defs: HashMap<&BoardId, Option<Arc<CachedDef>>> = HashMap::new();
            let mut out = Vec::new();
            let mut refusing = Refusing::default();
            for (i, ev) in events {
                if !defs.contains_key(&ev.board) {
                    let d = match self.definition(&ev.board).await {
                        Ok(d) => Some(d),
                        Err(Error::BoardNotFound(_)) => None,
                        Err(e) => return Err(e),
                    };
                    defs.insert(&ev.board, d);
                }
                match &defs[&ev.board] {
                    None => out.push((
                        *i,
                        Invalid::new("board", format!("board {} is not defined", ev.board)),
                    )),
                    Some(d) => {
                        if let Err(e) =
                            self.prepare(&ev.board, &d.def, ev, now, &mut Slots::default())
                        {
                            out.push((*i, e));
                            refusing.add(&ev.board, d);
                        }
                    }
                }
            }
            if rechecked || refusing.is_empty() || !self.changed_since_cached(refusing).await? {
                return Ok(out);
            }
            rechecked = true;
        }
    }

    /// Whether any board whose cached definition refused an event has another definition now
    /// (then cached, or forgotten when the board is gone).
    async fn changed_since_cached(&self, refusing: Refusing<'_>) -> Result<bool> {
        let mut changed = false;
        for (board, cached) in refusing.boards {
            match self.newer_def(board, &cached).await {
                Ok(Some(_)) | Err(Error::BoardNotFound(_)) => changed = true,
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// Applies many events, possibly of many boards, as if submitted one by one in the order given,
    /// in one pipeline of script calls (each a chunk of one board's events).
    ///
    /// The whole batch is checked before anything is written: any invalid event fails it with
    /// [`Error::InvalidBatch`], listing every one. That includes sums that would leave a board's
    /// exact range, which only the current scores tell: a batch of several calls has them checked
    /// first (see [`Engine::refused_sums`]), since each call is atomic but the pipeline is not.
    /// Should a concurrent write still make a call fail after others were written, what was
    /// written is journaled and the answer is a [`Error::Conflict`] naming the events not applied.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`], [`Error::Invalid`] naming `events` when there are too many,
    /// [`Error::Conflict`] for a batch only partly applied.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn submit_batch(&self, events: &[Submit]) -> Result<BatchOutcome> {
        if events.len() > MAX_BATCH {
            return Err(Invalid::new(
                "events",
                format!("at most {MAX_BATCH} events per batch, got {}", events.len()),
            )
            .into());
        }
        let now = self.now_ms();
        // Events by board, in order.
        let mut order: Vec<BoardId> = Vec::new();
        let mut by_board: HashMap<BoardId, Vec<usize>> = HashMap::new();
        for (i, ev) in events.iter().enumerate() {
            by_board
                .entry(ev.board.clone())
                .or_insert_with(|| {
                    order.push(ev.board.clone());
                    Vec::new()
                })
                .push(i);
        }
        let mut pending: Vec<(BoardId, Vec<usize>)> = Vec::new();
        for b in &order {
            for chunk in by_board[b].chunks(self.config.batch_chunk.max(1)) {
                pending.push((b.clone(), chunk.to_vec()));
            }
        }
        let mut outcome = BatchOutcome::default();
        let mut logged: Vec<LoggedOp> = Vec::new();
        // Boards where events were answered as duplicates: see Engine::confirm_logged.
        let mut repeated: Vec<BoardId> = Vec::new();
        // Calls that wrote, over every attempt.
        let mut wrote = 0usize;
        let mut rechecked = false;
        for _ in 0..ATTEMPTS {
            let mut defs: HashMap<BoardId, Arc<CachedDef>> = HashMap::new();
            let mut invalid: Vec<(usize, Invalid)> = Vec::new();
            for (b, idx) in &pending {
                if !defs.contains_key(b) {
                    match self.definition(b).await {
                        Ok(d) => {
                            defs.insert(b.clone(), d);
                        }
                        Err(Error::BoardNotFound(_)) => {}
                        Err(e) => {
                            return Err(self
                                .cut_short(e, wrote, events.len(), &pending, logged)
                                .await)
                        }
                    }
                }
                if !defs.contains_key(b) {
                    let why = || Invalid::new("board", format!("board {b} is not defined"));
                    invalid.extend(idx.iter().map(|&i| (i, why())));
                }
            }
            let mut calls = Vec::with_capacity(pending.len());
            // Per board whose events add up: the keys its calls touch, and what its events add.
            let mut sums: Vec<SumSpan> = Vec::new();
            // Checked while nothing is written yet: the whole batch is still to come.
            let several = wrote == 0 && pending.len() > 1;
            let mut refusing = Refusing::default();
            for (b, idx) in &pending {
                let Some(d) = defs.get(b) else { continue };
                let mut slots = Slots::default();
                let mut prepared = Vec::with_capacity(idx.len());
                for &i in idx {
                    match self.prepare(b, &d.def, &events[i], now, &mut slots) {
                        Ok(p) => prepared.push(p),
                        Err(e) => {
                            invalid.push((i, e));
                            refusing.add(b, d);
                        }
                    }
                }
                if several {
                    let span = match sums.iter_mut().position(|s| &s.board == b) {
                        Some(at) => &mut sums[at],
                        None => {
                            sums.push(SumSpan::new(b.clone(), d.clone()));
                            sums.last_mut().expect("just pushed")
                        }
                    };
                    span.add(&slots, &prepared, idx);
                }
                calls.push(self.submit_call(b, d, &slots, &prepared, SubmitReply::Count, now));
            }
            if !invalid.is_empty() && !rechecked && !refusing.is_empty() {
                rechecked = true;
                match self.changed_since_cached(refusing).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        return Err(self
                            .cut_short(e, wrote, events.len(), &pending, logged)
                            .await)
                    }
                }
            }
            if !invalid.is_empty() {
                invalid.sort_by_key(|(i, _)| *i);
                let e = Error::InvalidBatch(invalid);
                return Err(self
                    .cut_short(e, wrote, events.len(), &pending, logged)
                    .await);
            }
            if several {
                if let Some(e) = self.reused_ids(events, &pending, now).await? {
                    return Err(e);
                }
                let refused = self.refused_sums(sums, events, now).await?;
                if !refused.is_empty() {
                    return Err(Error::InvalidBatch(refused));
                }
            }
            let results = match self.exec.eval_many(calls).await {
                Ok(r) => r,
                // A backend that cannot say which calls ran: each may have.
                Err(ExecError::Unanswered(m)) => {
                    self.journal(logged).await?;
                    let unknown = pending
                        .iter()
                        .flat_map(|(_, i)| i.iter().copied())
                        .collect();
                    return Err(partly_applied(
                        wrote,
                        events.len(),
                        Left {
                            unapplied: Vec::new(),
                            unknown,
                            refused: Vec::new(),
                        },
                        Some(Error::Unavailable(m)),
                    ));
                }
                Err(e) => {
                    let e = unavailable(e);
                    return Err(self
                        .cut_short(e, wrote, events.len(), &pending, logged)
                        .await);
                }
            };
            let mut retry = Vec::new();
            // Calls that failed for good: the events they held, and the first reason.
            let mut unapplied: Vec<usize> = Vec::new();
            let mut refused: Vec<(usize, Invalid)> = Vec::new();
            let mut failure: Option<Error> = None;
            // Calls sent and not answered: the events they held may or may not have been applied.
            let mut unknown: Vec<usize> = Vec::new();
            for ((b, idx), r) in pending.into_iter().zip(results) {
                match r {
                    Ok(reply) => match as_array(&reply) {
                        Some([acc, dup, first, flags]) => {
                            wrote += 1;
                            outcome.accepted += as_u64(acc).unwrap_or(0);
                            let dups = as_u64(dup).unwrap_or(0);
                            outcome.duplicates += dups;
                            if dups > 0 && !repeated.contains(&b) {
                                repeated.push(b.clone());
                            }
                            let first = as_u64(first).unwrap_or(0);
                            if first > 0 {
                                let flags = as_str(flags).unwrap_or_default().as_bytes();
                                let accepted = idx.iter().zip(flags).filter(|(_, f)| **f == b'1');
                                for (n, (&i, _)) in accepted.enumerate() {
                                    let ev = &events[i];
                                    logged.push(LoggedOp {
                                        board: b.clone(),
                                        seq: first + n as u64,
                                        recv_ms: now,
                                        op: ev.logged(now),
                                    });
                                }
                            }
                        }
                        _ => {
                            failure.get_or_insert_with(|| bad_reply("submit", &reply));
                            unapplied.extend(&idx);
                        }
                    },
                    Err(e) => match (e.refusal(), self.on_error(&b, e)) {
                        (_, Next::Retry) => retry.push((b, idx)),
                        (refusal, Next::Fail(Error::Invalid(inv))) => {
                            // The script names the event by its index within the chunk.
                            let local = match refusal {
                                Some(Refusal::Range { index, .. }) => index,
                                _ => 0,
                            };
                            refused.push((idx.get(local).copied().unwrap_or(idx[0]), inv));
                            unapplied.extend(&idx);
                        }
                        (_, Next::Fail(e @ Error::Unconfirmed { .. })) => {
                            failure = Some(e);
                            unknown.extend(&idx);
                        }
                        (refusal, Next::Fail(Error::EventIdReused { event_id, .. })) => {
                            // The script names the event by its index within the chunk.
                            let local = match refusal {
                                Some(Refusal::Reused { index, .. }) => index,
                                _ => 0,
                            };
                            let i = idx.get(local).copied().unwrap_or(idx[0]);
                            failure.get_or_insert(Error::EventIdReused {
                                field: format!("events[{i}].event_id"),
                                event_id,
                            });
                            unapplied.extend(&idx);
                        }
                        (_, Next::Fail(e)) => {
                            failure.get_or_insert(e);
                            unapplied.extend(&idx);
                        }
                    },
                }
            }
            if failure.is_none() && refused.is_empty() && retry.is_empty() {
                self.journal(logged).await?;
                for b in &repeated {
                    self.confirm_logged(b).await?;
                }
                return Ok(outcome);
            }
            if failure.is_some() || !refused.is_empty() {
                // Whatever was written stays written, and the durable log must hold it too.
                self.journal(logged).await?;
                unapplied.extend(retry.into_iter().flat_map(|(_, idx)| idx));
                return Err(partly_applied(
                    wrote,
                    events.len(),
                    Left {
                        unapplied,
                        unknown,
                        refused,
                    },
                    failure,
                ));
            }
            pending = retry;
        }
        self.journal(logged).await?;
        Err(Error::Conflict(format!(
            "boards of this batch kept changing; {}",
            if wrote == 0 {
                "nothing was written".to_owned()
            } else {
                format!(
                    "{} of {} events were applied",
                    outcome.accepted + outcome.duplicates,
                    events.len()
                )
            }
        )))
    }

    /// Ends a batch that stopped with `e` on an attempt after earlier attempts wrote `wrote`
    /// calls: what was written is journaled, and the answer names the events of `pending` as not
    /// applied rather than claim that nothing was. With nothing written, `e` is the answer.
    async fn cut_short(
        &self,
        e: Error,
        wrote: usize,
        total: usize,
        pending: &[(BoardId, Vec<usize>)],
        logged: Vec<LoggedOp>,
    ) -> Error {
        if wrote == 0 {
            return e;
        }
        if let Err(j) = self.journal(logged).await {
            return j;
        }
        let unapplied = pending.iter().flat_map(|(_, idx)| idx.clone()).collect();
        let (refused, failure) = match e {
            Error::InvalidBatch(list) => (list, None),
            e => (Vec::new(), Some(e)),
        };
        partly_applied(
            wrote,
            total,
            Left {
                unapplied,
                unknown: Vec::new(),
                refused,
            },
            failure,
        )
    }

    /// Finds, before anything is written, the first event of a batch of several calls whose id
    /// stands for another event: one its board remembers with another print, or an earlier event of
    /// the batch carries with another (see [`event_print`]). Each call checks its own events as it
    /// runs, but a later call's refusal would come after earlier calls wrote.
    async fn reused_ids(
        &self,
        events: &[Submit],
        pending: &[(BoardId, Vec<usize>)],
        now: i64,
    ) -> Result<Option<Error>> {
        // Per board, each id's first print in the batch, in order of first use.
        let mut claims: Vec<(&BoardId, Vec<(&str, String)>)> = Vec::new();
        // Where each (board, id) stands in `claims`: found in constant time, as a batch may carry
        // thousands of ids.
        let mut claimed: HashMap<(&BoardId, &str), (usize, usize)> = HashMap::new();
        let mut first: Option<(usize, &str)> = None;
        for (b, idx) in pending {
            let at = match claims.iter().position(|(cb, _)| *cb == b) {
                Some(at) => at,
                None => {
                    claims.push((b, Vec::new()));
                    claims.len() - 1
                }
            };
            for &i in idx {
                let ev = &events[i];
                let Some(id) = ev.event_id.as_ref().map(|id| id.as_str()) else {
                    continue;
                };
                let print = event_print(
                    ev.member.as_str(),
                    ev.value.get(),
                    ev.scopes.iter().map(Scope::as_str),
                );
                match claimed.get(&(b, id)) {
                    Some(&(a, n)) if claims[a].1[n].1 != print => {
                        if first.is_none_or(|(f, _)| i < f) {
                            first = Some((i, id));
                        }
                    }
                    Some(_) => {}
                    None => {
                        claimed.insert((b, id), (at, claims[at].1.len()));
                        claims[at].1.push((id, print));
                    }
                }
            }
        }
        claims.retain(|(_, ids)| !ids.is_empty());
        let calls = claims
            .iter()
            .map(|(b, ids)| Call {
                script: &scripts::DEDUPE_GET,
                keys: vec![self.keys.dedupe(b), self.keys.event_prints(b)],
                args: std::iter::once(now.to_string())
                    .chain(ids.iter().map(|(id, _)| (*id).to_owned()))
                    .collect(),
            })
            .collect();
        let replies = self.exec.eval_many(calls).await.map_err(unavailable)?;
        for ((b, ids), r) in claims.iter().zip(replies) {
            // A read: nothing was written either way.
            let reply = r.map_err(unavailable)?;
            let known = as_array(&reply).ok_or_else(|| bad_reply("dedupe_get", &reply))?;
            for ((id, print), theirs) in ids.iter().zip(known) {
                let theirs = as_str(theirs).unwrap_or_default();
                if theirs.is_empty() || theirs == print {
                    continue;
                }
                // The first event of the board carrying the id is refused.
                let i = pending
                    .iter()
                    .filter(|(pb, _)| pb == *b)
                    .flat_map(|(_, idx)| idx.iter().copied())
                    .find(|&i| {
                        events[i]
                            .event_id
                            .as_ref()
                            .is_some_and(|e| e.as_str() == *id)
                    })
                    .unwrap_or(0);
                if first.is_none_or(|(f, _)| i < f) {
                    first = Some((i, id));
                }
            }
        }
        Ok(first.map(|(i, id)| Error::EventIdReused {
            field: format!("events[{i}].event_id"),
            event_id: id.to_owned(),
        }))
    }

    /// Finds, before anything is written, the events of a batch of several calls whose sums would
    /// leave their board's exact range, or whose scopes would pass their board's `max_scopes`:
    /// [`Engine::submit_batch`] must not write some calls and then have another refused. A board's
    /// events are cleared at once when the largest |value| its keys hold plus every |value| the
    /// batch adds stays in range (lua/score_span.lua) and it has room for every scope the batch
    /// names (lua/scope_count.lua), one cheap read each; otherwise all of its events are checked in
    /// one call that writes nothing (lua/submit.lua in check mode), each as if the ones before it
    /// were applied.
    async fn refused_sums(
        &self,
        sums: Vec<SumSpan>,
        events: &[Submit],
        now: i64,
    ) -> Result<Vec<(usize, Invalid)>> {
        let sums: Vec<SumSpan> = sums
            .into_iter()
            .filter(|s| s.incr || !s.scopes.is_empty())
            .collect();
        if sums.is_empty() {
            return Ok(Vec::new());
        }
        // Per board, one read of its largest |value| (boards whose events add up) and one of its
        // scopes (boards whose events name scopes), in one pipeline.
        let mut reads = Vec::new();
        for s in &sums {
            if s.incr {
                reads.push(Call {
                    script: &scripts::SCORE_SPAN,
                    keys: s.keys.clone(),
                    args: s.bits.clone(),
                });
            }
            if !s.scopes.is_empty() {
                reads.push(Call {
                    script: &scripts::SCOPE_COUNT,
                    keys: vec![self.keys.scopes(&s.board)],
                    args: std::iter::once(now.to_string())
                        .chain(s.scopes.iter().cloned())
                        .collect(),
                });
            }
        }
        let mut held = self
            .exec
            .eval_many(reads)
            .await
            .map_err(unavailable)?
            .into_iter();
        let mut checks = Vec::new();
        let mut checked = Vec::new();
        for s in sums {
            let mut fits = true;
            if s.incr {
                let most = match held.next() {
                    Some(Ok(reply)) => {
                        as_f64(&reply).ok_or_else(|| bad_reply("score_span", &reply))?
                    }
                    // A read: nothing was written either way.
                    Some(Err(e)) => return Err(unavailable(e)),
                    None => return Err(Error::Backend("score_span went unanswered".into())),
                };
                let bound = s.def.def.score_bound().unwrap_or(f64::MAX);
                let reach = most + s.added;
                fits = reach.is_finite() && reach <= bound;
            }
            if !s.scopes.is_empty() {
                let counts = match held.next() {
                    Some(Ok(reply)) => as_array(&reply)
                        .and_then(|a| Some((as_u64(a.first()?)?, as_u64(a.get(1)?)?)))
                        .ok_or_else(|| bad_reply("scope_count", &reply))?,
                    Some(Err(e)) => return Err(unavailable(e)),
                    None => return Err(Error::Backend("scope_count went unanswered".into())),
                };
                fits = fits && counts.0 + counts.1 <= u64::from(s.def.def.max_scopes);
            }
            if fits {
                continue;
            }
            let mut slots = Slots::default();
            let mut prepared = Vec::with_capacity(s.events.len());
            for &i in &s.events {
                prepared.push(self.prepare(&s.board, &s.def.def, &events[i], now, &mut slots)?);
            }
            checks.push(self.submit_call(
                &s.board,
                &s.def,
                &slots,
                &prepared,
                SubmitReply::Check,
                now,
            ));
            checked.push(s.events);
        }
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.exec.eval_many(checks).await.map_err(unavailable)?;
        let mut refused = Vec::new();
        for (idx, r) in checked.into_iter().zip(replies) {
            let reply = match r {
                Ok(reply) => reply,
                // Check mode writes nothing, answered or not.
                Err(ExecError::Unavailable(m) | ExecError::Unanswered(m)) => {
                    return Err(Error::Unavailable(m))
                }
                // A definition changed meanwhile: the writes will find out and retry.
                Err(ExecError::Reply(_)) => continue,
            };
            let list = as_array(&reply).ok_or_else(|| bad_reply("submit check", &reply))?;
            for pair in list.chunks(2) {
                let [at, why] = pair else {
                    return Err(bad_reply("submit check", &reply));
                };
                let local = as_u64(at).ok_or_else(|| bad_reply("submit check", &reply))?;
                let why = Invalid::from_reason(as_str(why).unwrap_or_default());
                let i = idx
                    .get(local as usize)
                    .copied()
                    .ok_or_else(|| bad_reply("submit check", &reply))?;
                refused.push((i, why));
            }
        }
        refused.sort_by_key(|(i, _)| *i);
        Ok(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_ranges_join_runs() {
        assert_eq!(index_ranges(&[]), "");
        assert_eq!(index_ranges(&[4]), "4");
        assert_eq!(index_ranges(&[0, 1, 2, 3, 4, 7, 9, 10]), "0-4, 7, 9-10");
    }

    fn left(unapplied: Vec<usize>, unknown: Vec<usize>, refused: Vec<(usize, Invalid)>) -> Left {
        Left {
            unapplied,
            unknown,
            refused,
        }
    }

    #[test]
    fn a_batch_partly_applied_names_what_to_resend() {
        let refused = || vec![(7, Invalid::new("value", "too big"))];
        // Nothing written: the refusals themselves, as an invalid batch.
        let e = partly_applied(0, 10, left(vec![5, 6, 7], vec![], refused()), None);
        assert!(
            matches!(&e, Error::InvalidBatch(l) if l.len() == 1 && l[0].0 == 7),
            "{e}"
        );
        // Nothing written and no refusal: the failure as it is.
        let gone = || Some(Error::Unavailable("gone".into()));
        let e = partly_applied(0, 10, left(vec![0], vec![], vec![]), gone());
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        // Some calls wrote: a conflict naming the events not applied and why.
        let e = partly_applied(2, 10, left(vec![7, 5, 6, 9], vec![], refused()), None);
        let Error::Conflict(m) = &e else {
            panic!("{e}")
        };
        assert!(m.starts_with("4 of 10 events were not applied"), "{m}");
        assert!(m.contains("events[7].value: too big"), "{m}");
        assert!(m.ends_with("resend events 5-7, 9"), "{m}");
        // Cut short by Redis going away: said so, without its internal message.
        let e = partly_applied(2, 10, left(vec![8, 9], vec![], vec![]), gone());
        let Error::Conflict(m) = &e else {
            panic!("{e}")
        };
        assert!(m.contains("became unreachable"), "{m}");
        assert!(!m.contains("gone"), "{m}");
        assert!(m.ends_with("resend events 8-9"), "{m}");
    }

    #[test]
    fn a_batch_call_not_answered_is_not_offered_for_resending() {
        let e = partly_applied(
            1,
            10,
            left(vec![9], vec![5, 6, 7, 8], vec![]),
            Some(Error::unanswered("Request timed out.".into())),
        );
        let Error::Unconfirmed { detail, cause } = &e else {
            panic!("{e}")
        };
        assert_eq!(
            detail,
            "the leaderboard backend did not answer in time for events 5-8, and events 9 were not applied"
        );
        assert_eq!(cause, "Request timed out.");
    }
}
