//! Rebuilding a board from its stored operation log, through the very scripts that first applied
//! it, under a lease that one instance holds at a time.

use std::sync::atomic::{AtomicU64, Ordering};

use super::defs::CachedDef;
use super::reply::{as_u64, fmt_num, unavailable};
use super::submit::{event_print, Prepared, Slots, SubmitReply};
use super::{scripts, Engine, LoggedOp, Op, Submit};
use crate::backend::{Call, ExecError, Refusal, Reply};
use crate::board::{BoardDef, BoardId, EventId, Member, Scope, Score};
use crate::error::{Error, Result};
use crate::window::{Period, Window};

/// Members per restore call (one ZADD of this many pairs, as a raw bulk load would send).
const RESTORE_PAIRS: usize = 1_000;

/// Restore calls sent in one pipeline.
const RESTORE_PIPELINE: usize = 16;

/// A pipeline of restore calls on its way.
type RestoreTask = tokio::task::JoinHandle<
    std::result::Result<Vec<std::result::Result<Reply, ExecError>>, ExecError>,
>;

/// A key's entries as the store reads them: chunks of (member, stored score).
pub type EntryChunks = tokio::sync::mpsc::Receiver<Result<Vec<(String, f64)>>>;

/// Stored operations a rebuild replays, in order, a page at a time as the store reads them: a
/// board's log (or a day of event ids) is never held in memory whole, only the page being replayed
/// and the one read behind it.
pub struct OpPages {
    /// The page to hand out next, read ahead (by [`OpPages::first`]) or given whole.
    next: Option<Vec<LoggedOp>>,
    /// The pages still to come, as the store's reader sends them.
    rest: Option<tokio::sync::mpsc::Receiver<Result<Vec<LoggedOp>>>>,
    /// Whether events are handed out without their event ids (see [`OpPages::without_event_ids`]).
    strip_ids: bool,
}

impl OpPages {
    /// Operations already in memory, as one page.
    pub fn of(ops: Vec<LoggedOp>) -> Self {
        Self {
            next: Some(ops),
            rest: None,
            strip_ids: false,
        }
    }

    /// The pages a reader sends, in order; the reader's error ends them.
    pub fn read(rest: tokio::sync::mpsc::Receiver<Result<Vec<LoggedOp>>>) -> Self {
        Self {
            next: None,
            rest: Some(rest),
            strip_ids: false,
        }
    }

    /// The same operations with every event's id left out. A replay of them keeps no event ids
    /// (nor their prints), so its memory is the board's, not one entry per event replayed. It
    /// applies every event, as the first application did: the log holds only accepted events, and
    /// an id is accepted again only after its dedupe window. For working out scores, as the
    /// snapshot check does; a rebuild that will answer writes needs the ids.
    #[must_use]
    pub fn without_event_ids(mut self) -> Self {
        self.strip_ids = true;
        if let Some(page) = self.next.as_mut() {
            strip_event_ids(page);
        }
        self
    }

    /// The next page, never empty; `None` once every page was handed out.
    ///
    /// # Errors
    /// What the store's reader met.
    pub async fn next_page(&mut self) -> Result<Option<Vec<LoggedOp>>> {
        loop {
            let page = match self.next.take() {
                Some(page) => page,
                // Pages are stripped as they arrive: one read ahead into `next` already was.
                None => match self.rest.as_mut() {
                    Some(rest) => match rest.recv().await {
                        Some(page) => {
                            let mut page = page?;
                            if self.strip_ids {
                                strip_event_ids(&mut page);
                            }
                            page
                        }
                        None => return Ok(None),
                    },
                    None => return Ok(None),
                },
            };
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
    }

    /// The first operation still to come, which stays to come.
    ///
    /// # Errors
    /// What the store's reader met.
    pub async fn first(&mut self) -> Result<Option<&LoggedOp>> {
        if self.next.as_ref().is_none_or(Vec::is_empty) {
            self.next = self.next_page().await?;
        }
        Ok(self.next.as_ref().and_then(|p| p.first()))
    }
}

/// Leaves out the event id of every event of `page`.
fn strip_event_ids(page: &mut [LoggedOp]) {
    for o in page {
        if let Op::Event { event_id, .. } = &mut o.op {
            *event_id = None;
        }
    }
}

impl std::fmt::Debug for OpPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpPages")
            .field("read_ahead", &self.next.as_ref().map(Vec::len))
            .field("reading", &self.rest.is_some())
            .finish()
    }
}

/// One key of the snapshot a rebuild starts from.
pub struct BaseKey {
    /// The window.
    pub window: Window,
    /// The period id (`all` for the all-time window).
    pub period: String,
    /// The scope; `None` for the global board.
    pub scope: Option<String>,
    /// When the key expires (Unix ms); `None` when it never does.
    pub expire_ms: Option<i64>,
    /// Starts reading the key's entries; they are written while the rest is still being read.
    pub entries: Box<dyn FnOnce() -> EntryChunks + Send>,
}

/// A snapshot of a whole board taken at one point of its log, for [`Engine::restore`].
pub struct Base {
    /// The board's sequence number at the snapshot.
    pub seq: u64,
    /// The definition's version at `seq`.
    pub version: String,
    /// The definition (JSON) at `seq`.
    pub definition: String,
    /// Every live key at `seq`.
    pub keys: Vec<BaseKey>,
    /// The sequence number of each member's last removal up to `seq`: display data set before it
    /// was dropped with the member.
    pub removed: std::collections::HashMap<String, u64>,
    /// The operations up to `seq` whose effect a snapshot does not hold, in order: display data,
    /// and the events whose ids are still in the dedupe window.
    pub before: OpPages,
}

impl std::fmt::Debug for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Base")
            .field("seq", &self.seq)
            .field("version", &self.version)
            .field("keys", &self.keys.len())
            .field("removed", &self.removed.len())
            .finish()
    }
}

pub(super) fn parse_def(board: &BoardId, json: &str) -> Result<BoardDef> {
    serde_json::from_str::<BoardDef>(json)
        .map_err(|e| Error::Backend(format!("stored definition of {board}: {e}")))
}

tokio::task_local! {
    /// The calls the rebuild this task runs has completed (see [`Engine::beating`]).
    static REBUILD_STEPS: std::sync::Arc<AtomicU64>;
}

/// Counts a completed call of the rebuild this task runs, if it runs one.
pub(super) fn step() {
    let _ = REBUILD_STEPS.try_with(|s| s.fetch_add(1, Ordering::Relaxed));
}

/// A live board a rebuild took ([`Engine::seize`]): its rebuild token, and the definition it had.
#[derive(Debug, Clone)]
pub struct Seized {
    token: String,
    version: String,
    json: String,
}

impl Seized {
    /// The rebuild token the board carries.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// Prefix of the version a board's definition carries while it is being rebuilt. Requests that meet
/// it answer 503 with Retry-After rather than a rank computed from half a board.
pub const REBUILD_PREFIX: &str = "rebuild:";

/// How long a rebuild may hold a board without renewing its hold before another instance may take
/// it over (a crashed rebuild), by default: see [`super::EngineConfig::rebuild_lease`].
pub const REBUILD_LEASE_MS: i64 = 60_000;

/// What Redis holds of a board, next to what the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisState {
    /// No definition: the board is gone from Redis.
    Missing,
    /// A rebuild holds it, started at this time (Unix ms).
    Rebuilding(i64),
    /// Live, with its sequence counter.
    Live(u64),
}

impl Engine {
    /// What Redis holds of a board.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn redis_state(&self, board: &BoardId) -> Result<RedisState> {
        let Some(d) = self.fetch_def_raw(board).await? else {
            return Ok(RedisState::Missing);
        };
        if let Some(rest) = d.version.strip_prefix(REBUILD_PREFIX) {
            let started: i64 = rest
                .split(':')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            // A rebuild still working renews its hold (see Engine::beating).
            let renewed = self
                .raw(Call {
                    script: &scripts::REBUILD_BEAT,
                    keys: vec![self.keys.definition(board)],
                    args: vec![String::new(), String::new()],
                })
                .await?;
            let renewed = as_u64(&renewed).unwrap_or(0) as i64;
            return Ok(RedisState::Rebuilding(started.max(renewed)));
        }
        let reply = self
            .raw(Call {
                script: &scripts::LOG_SEQ,
                keys: vec![self.keys.sequence(board)],
                args: vec![String::new()],
            })
            .await?;
        Ok(RedisState::Live(as_u64(&reply).unwrap_or(0)))
    }

    /// Removes every key of a board from Redis without recording a deletion: the first step of
    /// rebuilding a board whose Redis copy lost acknowledged writes.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn discard(&self, board: &BoardId) -> Result<()> {
        self.discard_held(board, None).await.map(|_| ())
    }

    /// [`Engine::discard`] of a board while it carries the version `held` (a rebuild's token):
    /// false, and nothing more removed, once it does not (another instance took it over).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn discard_held(&self, board: &BoardId, held: Option<&str>) -> Result<bool> {
        self.forget(board);
        let now = self.now_ms();
        let zsets = self.live_zsets(board, now).await?;
        let def = self.keys.definition(board);
        let rest: Vec<String> = self
            .every_key(board, &zsets)
            .into_iter()
            .filter(|k| *k != def)
            .collect();
        let call = |chunk: &[String], last: bool| {
            let mut keys = Vec::with_capacity(chunk.len() + 1);
            keys.push(def.clone());
            keys.extend_from_slice(chunk);
            Call {
                script: &scripts::DISCARD,
                keys,
                args: vec![
                    held.unwrap_or("").to_owned(),
                    if last { "1" } else { "0" }.into(),
                ],
            }
        };
        let chunks: Vec<&[String]> = rest.chunks(512).collect();
        let calls: Vec<Call> = if held.is_none() {
            // Unconditional (a deletion finishing): the definition first, so that the board reads
            // as gone at once, whatever becomes of the rest.
            std::iter::once(call(&[], true))
                .chain(chunks.iter().map(|c| call(c, false)))
                .collect()
        } else if chunks.is_empty() {
            vec![call(&[], true)]
        } else {
            // The definition last, with the final chunk: every chunk checks it first.
            chunks
                .iter()
                .enumerate()
                .map(|(i, c)| call(c, i + 1 == chunks.len()))
                .collect()
        };
        for r in self.exec.eval_many(calls).await.map_err(unavailable)? {
            match r {
                Ok(_) => {}
                Err(e) if matches!(e.refusal(), Some(Refusal::Stale(_))) => return Ok(false),
                Err(e) => return Err(Error::Backend(format!("discard {board}: {e}"))),
            }
        }
        Ok(true)
    }

    /// Rebuilds a board Redis lacks from its stored operations, in order, through the same scripts.
    /// Returns false when the board is already present in Redis (live, or another rebuild holds it).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached; [`Error::Backend`] when the operations
    /// do not replay (a corrupt log).
    pub async fn replay(&self, board: &BoardId, mut ops: OpPages) -> Result<bool> {
        let first = match ops.first().await? {
            Some(LoggedOp {
                op: Op::Define { json, .. },
                ..
            }) => json.clone(),
            _ => {
                return Err(Error::Backend(format!(
                    "the stored log of {board} does not start with its definition"
                )))
            }
        };
        let now = self.now_ms();
        let Some(token) = self.claim(board, &first, now).await? else {
            return Ok(false);
        };
        let work = async {
            let mut current = CachedDef {
                version: token.clone(),
                def: parse_def(board, &first)?,
                created_ms: now,
            };
            let mut final_version = None;
            let last = self
                .replay_pages(board, ops, &token, &mut current, &mut final_version)
                .await?;
            self.hand_back(
                board,
                &token,
                &current,
                final_version,
                last.unwrap_or(0),
                now,
            )
            .await
        };
        let r = self.beating(board, &token, work).await;
        self.settle(board, &token, r).await
    }

    /// Rebuilds a board Redis lacks from a snapshot of it and the operations after that snapshot:
    /// the snapshot's keys are written back as they were (stored scores, with their tie-break ticks),
    /// with the event ids still in the dedupe window and the display data up to the snapshot, then
    /// `tail` replays through the scripts. Exactly the board a full replay would give, at the cost of
    /// writing its members once. Returns false when the board is already present in Redis.
    ///
    /// # Errors
    /// As [`Engine::replay`]; also when the store fails while the snapshot is read.
    pub async fn restore(&self, board: &BoardId, base: Base, tail: OpPages) -> Result<bool> {
        let now = self.now_ms();
        let Some(token) = self.claim(board, &base.definition, now).await? else {
            return Ok(false);
        };
        let work = async {
            let mut current = CachedDef {
                version: token.clone(),
                def: parse_def(board, &base.definition)?,
                created_ms: now,
            };
            let mut final_version = Some(base.version.clone());
            for key in base.keys {
                self.restore_key(board, &token, &current.def, key, now)
                    .await?;
            }
            self.restore_before(board, &token, base.before, &base.removed, now)
                .await?;
            let last = self
                .replay_pages(board, tail, &token, &mut current, &mut final_version)
                .await?;
            let last = last.map_or(base.seq, |l| l.max(base.seq));
            self.hand_back(board, &token, &current, final_version, last, now)
                .await
        };
        let r = self.beating(board, &token, work).await;
        self.settle(board, &token, r).await
    }

    /// Runs a rebuild's `work`, renewing its hold on the board every quarter of the lease while the
    /// work makes progress (its own Redis calls complete), so that another instance takes the board
    /// over only from a rebuild that stopped or hangs (on a store that no longer answers, say),
    /// however long a working one takes.
    pub(super) async fn beating(
        &self,
        board: &BoardId,
        token: &str,
        work: impl std::future::Future<Output = Result<()>>,
    ) -> Result<()> {
        let every = std::time::Duration::from_millis((self.rebuild_lease_ms() / 4).max(1) as u64);
        let done = std::sync::Arc::new(AtomicU64::new(0));
        let work = REBUILD_STEPS.scope(done.clone(), work);
        let renew = async {
            let mut seen = 0;
            loop {
                tokio::time::sleep(every).await;
                let steps = done.load(Ordering::Relaxed);
                if steps == seen {
                    tracing::debug!(%board, "a rebuild made no progress; its hold is not renewed");
                    continue;
                }
                seen = steps;
                let call = Call {
                    script: &scripts::REBUILD_BEAT,
                    keys: vec![self.keys.definition(board)],
                    args: vec![token.to_owned(), self.now_ms().to_string()],
                };
                if let Err(e) = self.exec.eval(call).await {
                    tracing::debug!(%board, error = %e, "could not renew a rebuild's hold");
                }
            }
        };
        tokio::select! {
            r = work => r,
            () = renew => unreachable!("the renewal loop never ends"),
        }
    }

    /// The version a board's definition carries (a rebuild's token while one holds it); `None`
    /// when the board is gone.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn held_by(&self, board: &BoardId) -> Result<Option<String>> {
        Ok(self.fetch_def_raw(board).await?.map(|d| d.version.clone()))
    }

    /// Takes a live board for a rebuild: its definition moves under a rebuild token, as a claimed
    /// board's does, so that from here writes answer 503 (every write script checks the
    /// definition's version) rather than land in Redis between the saving of its log and the
    /// discard, where the discard would lose them. `None` when the board is gone or another
    /// rebuild holds it.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached or the definition kept changing.
    pub async fn seize(&self, board: &BoardId) -> Result<Option<Seized>> {
        for _ in 0..8 {
            let Some(d) = self.fetch_def_raw(board).await? else {
                return Ok(None);
            };
            if d.version.starts_with(REBUILD_PREFIX) {
                return Ok(None);
            }
            let now = self.now_ms();
            let token = format!("{REBUILD_PREFIX}{now}:{}", self.new_version());
            let json = serde_json::to_string(&d.def).map_err(|e| Error::Backend(e.to_string()))?;
            let call = self.put_def_call(board, &d.version, &token, &json, "0", now);
            match self.exec.eval(call).await {
                Ok(_) => {
                    self.forget(board);
                    return Ok(Some(Seized {
                        token,
                        version: d.version.clone(),
                        json,
                    }));
                }
                // Its definition changed meanwhile: take the new one.
                Err(e) if matches!(e.refusal(), Some(Refusal::Stale(_))) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(Error::Unavailable(format!(
            "{board}: its definition kept changing; the rebuild waits for the next check"
        )))
    }

    /// Runs `work` on a seized board, its hold renewed while the work makes progress; when the
    /// work fails, the board goes back to the version it had, as it was (nothing was discarded).
    ///
    /// # Errors
    /// What `work` returns.
    pub async fn while_seized(
        &self,
        board: &BoardId,
        seized: &Seized,
        work: impl std::future::Future<Output = Result<()>>,
    ) -> Result<()> {
        let r = self.beating(board, &seized.token, work).await;
        if r.is_err() {
            let now = self.now_ms();
            let call = self.put_def_call(
                board,
                &seized.token,
                &seized.version,
                &seized.json,
                "0",
                now,
            );
            if let Err(e) = self.exec.eval(call).await {
                tracing::warn!(%board, error = %e, "could not hand a seized board back; its hold will expire");
            }
        }
        r
    }

    /// Claims a board Redis lacks for a rebuild: creates its definition under a rebuild token, which
    /// fails when the board is live or another rebuild holds it (`None`).
    async fn claim(&self, board: &BoardId, json: &str, now: i64) -> Result<Option<String>> {
        let token = format!("{REBUILD_PREFIX}{now}:{}", self.new_version());
        match self
            .exec
            .eval(self.put_def_call(board, "", &token, json, "0", now))
            .await
        {
            Ok(_) => {
                self.forget(board);
                Ok(Some(token))
            }
            Err(e) if matches!(e.refusal(), Some(Refusal::Exists(_))) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A rebuild that fails half-way (Redis went away again) must not leave the board held by its
    /// token until the lease runs out: drop what it wrote so the next attempt starts at once. Only
    /// while the board is still held by `token`, though: a rebuild that failed because another
    /// instance took over its expired lease, or a board already handed back, is someone else's.
    async fn settle(&self, board: &BoardId, token: &str, r: Result<()>) -> Result<bool> {
        match r {
            Ok(()) => Ok(true),
            Err(e) => {
                let ours = match self.fetch_def_raw(board).await {
                    Ok(Some(d)) => d.version == token,
                    Ok(None) => false,
                    Err(_) => true,
                };
                if ours {
                    if let Err(d) = self.discard_held(board, Some(token)).await {
                        tracing::warn!(%board, error = %d, "could not drop a failed rebuild; its lease will expire");
                    }
                } else {
                    tracing::warn!(%board, error = %e, "a rebuild lost its hold on the board; leaving it to the holder");
                }
                Err(e)
            }
        }
    }

    /// Replays stored operations page by page, in order, into a board the rebuild holds under
    /// `token`. Returns the sequence number of the last one (`None`: there was none).
    async fn replay_pages(
        &self,
        board: &BoardId,
        mut ops: OpPages,
        token: &str,
        current: &mut CachedDef,
        final_version: &mut Option<String>,
    ) -> Result<Option<u64>> {
        let mut last = None;
        while let Some(page) = ops.next_page().await? {
            last = page.last().map(|o| o.seq);
            self.replay_ops(board, &page, token, current, final_version)
                .await?;
        }
        Ok(last)
    }

    /// Replays stored operations, in order, into a board the rebuild holds under `token`.
    async fn replay_ops(
        &self,
        board: &BoardId,
        ops: &[LoggedOp],
        token: &str,
        current: &mut CachedDef,
        final_version: &mut Option<String>,
    ) -> Result<()> {
        let mut pending: Vec<Call> = Vec::new();
        let mut i = 0;
        while i < ops.len() {
            match &ops[i].op {
                Op::Define { version, json } => {
                    self.flush(board, &mut pending).await?;
                    self.checked(self.put_def_call(board, token, token, json, "0", ops[i].recv_ms))
                        .await?;
                    current.def = parse_def(board, json)?;
                    *final_version = Some(version.clone());
                    i += 1;
                }
                Op::Event { .. } => {
                    // Consecutive events replay together, each with the time it was received (the
                    // script decides duplicates by each event's own time).
                    let recv = ops[i].recv_ms;
                    let mut j = i;
                    let mut events = Vec::new();
                    let mut ids = std::collections::HashSet::new();
                    while j < ops.len() && events.len() < 500 {
                        let Op::Event {
                            member,
                            value,
                            event_id,
                            at_ms,
                            scopes,
                        } = &ops[j].op
                        else {
                            break;
                        };
                        if let Some(id) = event_id {
                            // A repeated id inside one call counts as a duplicate: keep calls apart.
                            if !ids.insert(id.clone()) {
                                break;
                            }
                        }
                        let parsed = (|| -> std::result::Result<Submit, crate::error::Invalid> {
                            Ok(Submit {
                                board: board.clone(),
                                member: Member::parse(member)?,
                                value: Score::new("value", *value)?,
                                scopes: scopes
                                    .iter()
                                    .map(|s| Scope::parse(s))
                                    .collect::<std::result::Result<_, _>>()?,
                                event_id: event_id.as_deref().map(EventId::parse).transpose()?,
                                at_ms: Some(*at_ms),
                            })
                        })()
                        .map_err(|e| {
                            Error::Backend(format!("stored event {} of {board}: {e}", ops[j].seq))
                        })?;
                        events.push((parsed, ops[j].recv_ms));
                        j += 1;
                    }
                    let mut slots = Slots::default();
                    let prepared: Vec<Prepared> = events
                        .iter()
                        .map(|(ev, at)| self.prepare(board, &current.def, ev, *at, &mut slots))
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|e| {
                            Error::Backend(format!("stored events of {board} no longer apply: {e}"))
                        })?;
                    pending.push(self.submit_call(
                        board,
                        current,
                        &slots,
                        &prepared,
                        SubmitReply::Replay,
                        recv,
                    ));
                    if pending.len() >= 256 {
                        self.flush(board, &mut pending).await?;
                    }
                    i = j;
                }
                Op::Remove { member } => {
                    self.flush(board, &mut pending).await?;
                    let member =
                        Member::parse(member).map_err(|e| Error::Backend(e.to_string()))?;
                    self.replay_remove(board, current, &member, ops[i].recv_ms)
                        .await?;
                    i += 1;
                }
                Op::Display { .. } => {
                    self.flush(board, &mut pending).await?;
                    if let Some(call) = self.replay_display(board, token, &ops[i]) {
                        self.checked(call).await?;
                    }
                    i += 1;
                }
            }
        }
        self.flush(board, &mut pending).await
    }

    /// Ends a rebuild: sets the sequence counter to the last operation applied and hands the board
    /// back under the version it had, so caches elsewhere stay valid.
    async fn hand_back(
        &self,
        board: &BoardId,
        token: &str,
        current: &CachedDef,
        final_version: Option<String>,
        last: u64,
        now: i64,
    ) -> Result<()> {
        self.checked(Call {
            script: &scripts::LOG_SEQ,
            keys: vec![self.keys.sequence(board)],
            args: vec![last.to_string()],
        })
        .await?;
        let json =
            serde_json::to_string(&current.def).map_err(|e| Error::Backend(e.to_string()))?;
        let version = final_version.unwrap_or_else(|| self.new_version());
        self.checked(self.put_def_call(board, token, &version, &json, "0", now))
            .await?;
        self.forget(board);
        self.registry("add", board).await?;
        Ok(())
    }

    /// Writes one key of a snapshot back, chunk by chunk as the store reads it, several chunks to a
    /// pipeline. A key whose period has expired since is skipped.
    async fn restore_key(
        &self,
        board: &BoardId,
        token: &str,
        def: &BoardDef,
        key: BaseKey,
        now: i64,
    ) -> Result<()> {
        if key.expire_ms.is_some_and(|e| e <= now) {
            return Ok(());
        }
        let bad = |e: String| Error::Backend(format!("snapshot key of {board}: {e}"));
        let period = Period::parse(key.window, &key.period).map_err(|e| bad(e.to_string()))?;
        let scope = key
            .scope
            .as_deref()
            .map(Scope::parse)
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        let k = self.keys.leaderboard(board, &period, scope.as_ref());
        let head = vec![
            token.to_owned(),
            "zset".into(),
            key.expire_ms.unwrap_or(0).to_string(),
            self.now_ms().to_string(),
            def.rank_mode.as_str().into(),
            def.tick_bits(key.window).to_string(),
            scope.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        ];
        let call = |pairs: &[(String, f64)]| {
            let mut args = head.clone();
            args.reserve(pairs.len() * 2);
            for (member, stored) in pairs {
                args.push(fmt_num(*stored));
                args.push(member.clone());
            }
            Call {
                script: &scripts::RESTORE,
                keys: vec![
                    self.keys.definition(board),
                    self.keys.index(board),
                    k.zset.clone(),
                    k.distinct_values.clone(),
                    k.distinct_counts.clone(),
                    self.keys.scopes(board),
                ],
                args,
            }
        };
        // Pipelines go out from tasks of their own, two at a time, so that Redis works through one
        // while the next is read from the store and encoded.
        let mut chunks = (key.entries)();
        let mut pending = Vec::new();
        let mut inflight = std::collections::VecDeque::new();
        loop {
            let chunk = chunks.recv().await;
            let done = chunk.is_none();
            if let Some(chunk) = chunk {
                for part in chunk?.chunks(RESTORE_PAIRS) {
                    pending.push(call(part));
                }
            }
            if pending.len() >= RESTORE_PIPELINE || (done && !pending.is_empty()) {
                if inflight.len() >= 2 {
                    self.restored(board, inflight.pop_front()).await?;
                }
                let (exec, calls) = (self.exec.clone(), std::mem::take(&mut pending));
                inflight.push_back(tokio::spawn(async move { exec.eval_many(calls).await }));
            }
            if done {
                break;
            }
        }
        while let Some(h) = inflight.pop_front() {
            self.restored(board, Some(h)).await?;
        }
        Ok(())
    }

    /// Waits for one pipeline of restore calls and checks every reply.
    async fn restored(&self, board: &BoardId, h: Option<RestoreTask>) -> Result<()> {
        let Some(h) = h else { return Ok(()) };
        let replies = h
            .await
            .map_err(|e| Error::Backend(format!("restore of {board}: {e}")))?
            .map_err(unavailable)?;
        step();
        for r in replies {
            r.map_err(|e| Error::Backend(format!("restore of {board}: {e}")))?;
        }
        Ok(())
    }

    /// Restores what a snapshot does not hold, as of its point: the event ids still in the dedupe
    /// window, and each member's display data since its last removal.
    async fn restore_before(
        &self,
        board: &BoardId,
        token: &str,
        mut before: OpPages,
        removed: &std::collections::HashMap<String, u64>,
        now: i64,
    ) -> Result<()> {
        let ttl = self.config.dedupe_window.as_millis() as i64;
        let target = |kind: &str, key: String, pairs: Vec<String>| {
            let mut args = vec![
                token.to_owned(),
                kind.to_owned(),
                "0".into(),
                "0".into(),
                String::new(),
                "0".into(),
                String::new(),
            ];
            args.extend(pairs);
            Call {
                script: &scripts::RESTORE,
                keys: vec![
                    self.keys.definition(board),
                    self.keys.index(board),
                    key.clone(),
                    key.clone(),
                    key.clone(),
                    key,
                ],
                args,
            }
        };
        while let Some(page) = before.next_page().await? {
            let ids: Vec<(i64, &str, String)> = page
                .iter()
                .filter_map(|o| match &o.op {
                    Op::Event {
                        event_id: Some(id),
                        member,
                        value,
                        scopes,
                        ..
                    } if o.recv_ms + ttl > now => Some((
                        o.recv_ms + ttl,
                        id.as_str(),
                        event_print(member, *value, scopes.iter().map(String::as_str)),
                    )),
                    _ => None,
                })
                .collect();
            let mut pending = Vec::new();
            for part in ids.chunks(RESTORE_PAIRS) {
                let remembered = part
                    .iter()
                    .flat_map(|(forget_at, id, _)| [forget_at.to_string(), (*id).to_owned()])
                    .collect();
                pending.push(target("dedupe", self.keys.dedupe(board), remembered));
                let prints = part
                    .iter()
                    .flat_map(|(_, id, print)| [(*id).to_owned(), print.clone()])
                    .collect();
                pending.push(target("prints", self.keys.event_prints(board), prints));
            }
            // A removal drops a member's display data: only what was set after the last one counts.
            for o in &page {
                if let Op::Display { member, .. } = &o.op {
                    if removed.get(member.as_str()).is_none_or(|&r| r < o.seq) {
                        pending.extend(self.replay_display(board, token, o));
                    }
                }
            }
            // In pipelines of a bounded size, in order: a day of event ids on a busy board is many
            // calls, and each pipeline done is progress that keeps the rebuild's hold.
            while !pending.is_empty() {
                let rest = pending.split_off(pending.len().min(RESTORE_PIPELINE * 16));
                self.flush(board, &mut pending).await?;
                pending = rest;
            }
        }
        Ok(())
    }

    pub(super) async fn checked(&self, call: Call) -> Result<Reply> {
        let r = self.exec.eval(call).await.map_err(unavailable);
        step();
        r
    }

    pub(super) async fn flush(&self, board: &BoardId, pending: &mut Vec<Call>) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let calls = std::mem::take(pending);
        let replies = self.exec.eval_many(calls).await.map_err(unavailable)?;
        step();
        for r in replies {
            r.map_err(|e| Error::Backend(format!("replay of {board}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, id: Option<&str>) -> LoggedOp {
        LoggedOp {
            board: BoardId::parse("b").unwrap(),
            seq,
            recv_ms: 1,
            op: Op::Event {
                member: "m".into(),
                value: 1.0,
                event_id: id.map(str::to_owned),
                at_ms: 1,
                scopes: vec![],
            },
        }
    }

    fn ids(page: &[LoggedOp]) -> Vec<Option<String>> {
        page.iter()
            .map(|o| match &o.op {
                Op::Event { event_id, .. } => event_id.clone(),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn pages_without_event_ids_hand_out_every_operation_without_its_id() {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(Ok(vec![event(1, Some("a")), event(2, None)]))
            .await
            .unwrap();
        tx.send(Ok(vec![event(3, Some("c"))])).await.unwrap();
        drop(tx);
        let mut pages = OpPages::read(rx).without_event_ids();
        let first = pages.first().await.unwrap().unwrap();
        assert_eq!(
            (first.seq, ids(std::slice::from_ref(first))),
            (1, vec![None])
        );
        let one = pages.next_page().await.unwrap().unwrap();
        assert_eq!(one.iter().map(|o| o.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(ids(&one), [None, None]);
        let two = pages.next_page().await.unwrap().unwrap();
        assert_eq!((two[0].seq, ids(&two)), (3, vec![None]));
        assert!(pages.next_page().await.unwrap().is_none());
        // Without the call, the ids stay.
        let mut kept = OpPages::of(vec![event(1, Some("a"))]);
        assert_eq!(
            ids(&kept.next_page().await.unwrap().unwrap()),
            [Some("a".to_owned())]
        );
    }
}
