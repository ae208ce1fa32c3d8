//! `verify`: with Redis, Redis against the store (each board's stored log worked out in this
//! process's memory and compared with what Redis holds); without, the store against itself (each
//! board rebuilt from its latest rebuild base, as a start of the embedded engine does, and compared
//! with its whole log replayed). Nothing is written to Redis.

use std::collections::{BTreeMap, BTreeSet};

use super::maintain::{history_start_missing, rebuild_here};
use super::{Admin, Failure, DIFFERENCES, OK};
use crate::board::BoardId;
use crate::engine::{KeySnapshot, RedisState, SnapEntry};
use crate::error::Error;

/// The two sides a comparison names.
struct Sides {
    got: &'static str,
    want: &'static str,
}

impl Admin {
    /// Compares Redis with the store, or the store with itself without Redis. Prints each
    /// difference; returns [`DIFFERENCES`] when there is any, else [`OK`].
    ///
    /// # Errors
    /// [`Failure::UnknownBoard`]; unreachable services.
    pub async fn verify(&self, board: Option<&str>, dry_run: bool) -> Result<u8, Failure> {
        if self.redis.is_none() {
            return self.verify_store(board, dry_run).await;
        }
        let store = self.store()?;
        let engine = &self.redis()?.engine;
        // A board Redis has and the store does not is a difference, not an unknown board.
        if let Some(b) = board {
            let id = BoardId::parse(b)?;
            if !store.has_board(&id).await? && engine.redis_state(&id).await? != RedisState::Missing
            {
                self.report.line(format!(
                    "{id}: in Redis, but the store holds no definition of it"
                ));
                return Ok(DIFFERENCES);
            }
        }
        let boards: Vec<BoardId> = self
            .stored_boards(board)
            .await?
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        if dry_run {
            for b in &boards {
                self.report.line(format!("would verify {b}"));
            }
            return Ok(OK);
        }
        if let Err(Error::Unavailable(why)) = store.check_identity().await {
            self.report.line(why);
            return Ok(DIFFERENCES);
        }
        let mut differences = 0usize;
        let mut differ = |line: String| {
            self.report.line(line);
            differences += 1;
        };
        if board.is_none() {
            for b in engine.boards().await? {
                if !boards.contains(&b.board) {
                    differ(format!(
                        "{}: in Redis, but the store holds no definition of it",
                        b.board
                    ));
                }
            }
        }
        self.catch_up(&boards).await?;
        let sides = Sides {
            got: "Redis",
            want: "the store",
        };
        self.report.begin(boards.len() as u64);
        for b in &boards {
            self.report.working_on(format!("verify {b}"));
            if store.diverged(b).await? {
                differ(format!(
                    "{b}: Redis numbered operations again after losing others; they are parked until \
                     the board is resynchronised (rankd serve does it within ten seconds)"
                ));
                self.report.step();
                continue;
            }
            // Read a page at a time: a board's log is never held whole.
            let mut ops = store.op_pages(b, 0, u64::MAX);
            if let Some(missing) = history_start_missing(b, ops.first().await?) {
                differ(format!("{b}: {missing}"));
                self.report.step();
                continue;
            }
            // The log worked out in this process's memory: no scratch copy in Redis to leave behind.
            let scratch = engine.scratch().await?;
            scratch.replay(b, ops).await?;
            let want = scratch.snapshot_board(b).await?;
            drop(scratch);
            match engine.snapshot_board(b).await {
                Err(Error::BoardNotFound(_)) => differ(format!("{b}: missing from Redis")),
                Err(e) => return Err(e.into()),
                Ok(got) => compare(b, &got, &want, &sides)
                    .into_iter()
                    .for_each(&mut differ),
            }
            self.report.step();
        }
        self.report.end();
        if differences == 0 {
            self.report.line("Redis and the store agree");
            Ok(OK)
        } else {
            Ok(DIFFERENCES)
        }
    }

    /// Copies what the Redis logs hold that the store does not yet (so that a check compares like
    /// with like).
    async fn catch_up(&self, boards: &[BoardId]) -> Result<(), Failure> {
        let (store, engine) = (self.store()?, &self.redis()?.engine);
        for b in boards {
            loop {
                let pending = engine.log_pending(b, 1000).await?;
                if pending.is_empty() {
                    break;
                }
                store.insert_ops(&pending).await?;
                engine.log_confirm(&pending).await?;
            }
        }
        Ok(())
    }

    /// Without Redis: each board rebuilt here as a start of rankd serve does (its latest rebuild
    /// base and the operations after it) against its whole stored log replayed.
    async fn verify_store(&self, board: Option<&str>, dry_run: bool) -> Result<u8, Failure> {
        let boards = self.stored_boards(board).await?;
        self.report.line(
            "no Redis (RANKD_REDIS_URL is not set): verifying the store on its own, each board's \
             rebuild base against its log (the embedded engine's boards live in rankd serve's \
             memory, rebuilt from the store at every start)",
        );
        if dry_run {
            for (b, seq) in &boards {
                self.report
                    .line(format!("would verify {b} up to seq {seq}"));
            }
            return Ok(OK);
        }
        let sides = Sides {
            got: "its rebuild base and the operations after it",
            want: "its whole log",
        };
        let mut differences = 0usize;
        self.report.begin(boards.len() as u64);
        for (b, upto) in &boards {
            self.report.working_on(format!("verify {b}"));
            differences += self.verify_stored_board(b, *upto, &sides).await?.len();
            self.report.step();
        }
        self.report.end();
        if differences == 0 {
            self.report.line(
                "the store agrees with itself: every board's log replays, and its rebuild base \
                 holds what the log implies",
            );
            Ok(OK)
        } else {
            Ok(DIFFERENCES)
        }
    }

    /// One board of [`Admin::verify_store`]: prints its line(s); returns its differences.
    async fn verify_stored_board(
        &self,
        b: &BoardId,
        upto: u64,
        sides: &Sides,
    ) -> Result<Vec<String>, Failure> {
        let store = self.store()?;
        let mut diffs = Vec::new();
        if store.diverged(b).await? {
            diffs.push(format!(
                "{b}: operations Redis numbered again are parked, awaiting the board's \
                 resynchronisation by rankd serve"
            ));
        }
        let mut ops = store.op_pages(b, 0, upto);
        let held = store.ops_count(b, 0, upto).await?;
        if let Some(missing) = history_start_missing(b, ops.first().await?) {
            diffs.push(format!("{b}: {missing}"));
        } else if held != upto {
            diffs.push(format!(
                "{b}: the stored log lacks {} of its operations up to seq {upto}",
                upto.saturating_sub(held)
            ));
        } else {
            let whole = self.local_engine().await?;
            whole.replay(b, ops).await?;
            let based = self.local_engine().await?;
            match rebuild_here(&based, store, b, upto).await? {
                None => self.report.line(format!(
                    "{b}: its {upto} operations replay; no rebuild base yet, so a start replays \
                     them all"
                )),
                Some(seq) => {
                    let found = compare(
                        b,
                        &based.snapshot_board(b).await?,
                        &whole.snapshot_board(b).await?,
                        sides,
                    );
                    if found.is_empty() {
                        self.report.line(format!(
                            "{b}: its rebuild base (seq {seq}) holds what its log implies; a start \
                             replays the {} operations after it",
                            upto - seq
                        ));
                    }
                    diffs.extend(found);
                }
            }
        }
        for d in &diffs {
            self.report.line(d);
        }
        Ok(diffs)
    }
}

/// An entry in words.
fn entry(e: &SnapEntry) -> String {
    format!("{} at rank {} with {}", e.member, e.rank, e.score)
}

/// The differences between a board's keys on two sides (Redis and the keys its stored log
/// implies, or a rebuild from a base and the whole log).
fn compare(
    board: &BoardId,
    got: &[KeySnapshot],
    want: &[KeySnapshot],
    sides: &Sides,
) -> Vec<String> {
    let key = |k: &KeySnapshot| {
        format!(
            "{} {} {}",
            k.key.window,
            k.key.period,
            k.key.scope.as_deref().unwrap_or("-")
        )
    };
    let got: BTreeMap<String, &KeySnapshot> = got.iter().map(|k| (key(k), k)).collect();
    let want: BTreeMap<String, &KeySnapshot> = want.iter().map(|k| (key(k), k)).collect();
    let (g_side, w_side) = (sides.got, sides.want);
    let mut out = Vec::new();
    for name in got.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
        match (got.get(name), want.get(name)) {
            (Some(g), Some(w)) if g.entries != w.entries => {
                let sum = |k: &KeySnapshot| k.entries.iter().map(|e| e.score).sum::<f64>();
                let first = match g.entries.iter().zip(&w.entries).find(|(a, b)| a != b) {
                    Some((a, b)) => format!(
                        "first difference: {g_side} has {}, {w_side} {}",
                        entry(a),
                        entry(b)
                    ),
                    None => "first difference: one side has more members".to_owned(),
                };
                out.push(format!(
                    "{board} {name}: {g_side} {} members (sum {}), {w_side} {} members (sum {}); {first}",
                    g.entries.len(),
                    sum(g),
                    w.entries.len(),
                    sum(w)
                ));
            }
            (Some(g), None) => out.push(format!(
                "{board} {name}: {} members in {g_side}, none in {w_side}",
                g.entries.len()
            )),
            (None, Some(w)) => out.push(format!(
                "{board} {name}: {} members in {w_side}, none in {g_side}",
                w.entries.len()
            )),
            _ => {}
        }
    }
    out
}
