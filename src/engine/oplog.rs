//! The operation log: what the engine hands the journal, and the Redis log of a board that the
//! store drains and trims.

use super::rebuild::{step, RedisState};
use super::reply::{as_array, unavailable};
use super::{scripts, Engine, LoggedOp, Op};
use crate::backend::{Call, Reply};
use crate::board::BoardId;
use crate::error::{Error, Result};

/// Most operations a duplicate's confirmation commits (see [`Engine::confirm_logged`]); a board
/// with more waiting for the store answers the duplicate 503 `unconfirmed`.
const CONFIRM_MAX: u64 = 50_000;

/// Sequence numbers one log trim call forgets.
const TRIM_CHUNK: usize = 1_000;

/// One operation read back from a board's Redis log.
fn stream_op(board: &BoardId, entry: &Reply) -> Option<LoggedOp> {
    let [_, Reply::Array(fields)] = as_array(entry)? else {
        return None;
    };
    let mut get = std::collections::HashMap::new();
    for pair in fields.chunks(2) {
        if let [Reply::Bulk(k), Reply::Bulk(v)] = pair {
            get.insert(k.as_str(), v.as_str());
        }
    }
    let text = |k: &str| get.get(k).map(|s| (*s).to_owned());
    let opt = |k: &str| text(k).filter(|s| !s.is_empty());
    let op = match *get.get("o")? {
        "d" => Op::Define {
            version: text("x")?,
            json: text("j")?,
        },
        "e" => Op::Event {
            member: text("m")?,
            value: get.get("v")?.parse().ok()?,
            event_id: opt("i"),
            at_ms: get.get("a")?.parse().ok()?,
            scopes: get
                .get("c")
                .map(|c| {
                    c.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        },
        "r" => Op::Remove { member: text("m")? },
        "p" => Op::Display {
            member: text("m")?,
            name: opt("d"),
            data: opt("j"),
        },
        _ => return None,
    };
    Some(LoggedOp {
        board: board.clone(),
        seq: get.get("s")?.parse().ok()?,
        recv_ms: get.get("n")?.parse().ok()?,
        op,
    })
}

impl Engine {
    pub(super) fn log_flag(&self) -> String {
        if self.journal.is_some() { "1" } else { "0" }.into()
    }

    /// Hands operations Redis applied to the journal. In sync mode a store that cannot commit them
    /// fails the request, yet Redis holds them and its log keeps them for the sweep to store: the
    /// answer must not say they were not applied.
    pub(super) async fn journal(&self, ops: Vec<LoggedOp>) -> Result<()> {
        match &self.journal {
            Some(j) if !ops.is_empty() => j.record(ops).await.map_err(|e| Error::Unconfirmed {
                detail: "the write was applied, but the durable store did not confirm it; it is \
                         stored once the store is back"
                    .into(),
                cause: e.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Hands one operation Redis applied as number `seq` of `board`'s log to the journal; `seq` 0
    /// means the script logged nothing (no journal, or nothing changed).
    pub(super) async fn log_one(&self, board: &BoardId, seq: u64, now: i64, op: Op) -> Result<()> {
        if seq == 0 {
            return Ok(());
        }
        self.journal(vec![LoggedOp {
            board: board.clone(),
            seq,
            recv_ms: now,
            op,
        }])
        .await
    }

    /// Before a duplicate is answered in sync mode: makes sure the operation it repeats is
    /// committed. The first acceptance of an event id may have been answered 503 `unconfirmed`
    /// (the store out of reach) and still be only in the board's Redis log, which keeps every
    /// operation until the store has it; a 200 for its retry must mean it is stored. Everything the
    /// log holds up to the board's current number is committed (offering stored operations again is
    /// harmless); an empty log, the usual case, costs one read.
    ///
    /// # Errors
    /// [`Error::Unconfirmed`] when that cannot be committed (or read) now.
    pub(super) async fn confirm_logged(&self, board: &BoardId) -> Result<()> {
        match &self.journal {
            Some(j) if j.confirms() => {}
            _ => return Ok(()),
        }
        let unconfirmed = |cause: String| Error::Unconfirmed {
            detail: "the event was applied before, but the durable store has not confirmed it \
                     yet; resend it with the same event_id"
                .into(),
            cause,
        };
        let head = self
            .log_pending(board, 1)
            .await
            .map_err(|e| unconfirmed(e.to_string()))?;
        let Some(first) = head.first() else {
            return Ok(());
        };
        let upto = match self.redis_state(board).await {
            Ok(RedisState::Live(seq)) => seq,
            Ok(_) => return Err(unconfirmed("the board is being rebuilt".into())),
            Err(e) => return Err(unconfirmed(e.to_string())),
        };
        let span = upto.saturating_sub(first.seq) + 1;
        if span > CONFIRM_MAX {
            return Err(unconfirmed(format!(
                "{span} operations of the board wait for the store"
            )));
        }
        let mut ops = self
            .log_pending(board, span as usize)
            .await
            .map_err(|e| unconfirmed(e.to_string()))?;
        ops.retain(|o| o.seq <= upto);
        self.journal(ops).await
    }

    /// Stores what the journal still holds of answered writes; called at shutdown.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached.
    pub async fn flush_journal(&self) -> Result<()> {
        match &self.journal {
            Some(j) => j.flush().await,
            None => Ok(()),
        }
    }

    pub(super) async fn raw(&self, call: Call) -> Result<Reply> {
        self.exec.eval(call).await.map_err(unavailable)
    }

    /// The oldest operations still in a board's Redis log (not yet confirmed by the store).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn log_pending(&self, board: &BoardId, max: usize) -> Result<Vec<LoggedOp>> {
        self.log_pending_after(board, 0, max).await
    }

    /// [`Engine::log_pending`] after sequence number `after` (0: from the oldest): a reader going
    /// through a long log reads each entry once, not the pages before it again.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn log_pending_after(
        &self,
        board: &BoardId,
        after: u64,
        max: usize,
    ) -> Result<Vec<LoggedOp>> {
        let reply = self
            .raw(Call {
                script: &scripts::LOG_READ,
                keys: vec![self.keys.log(board)],
                args: vec![max.to_string(), after.to_string()],
            })
            .await?;
        Ok(as_array(&reply)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| stream_op(board, e))
            .collect())
    }

    /// Forgets operations the store committed, from their boards' Redis logs (one pipeline).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn log_confirm(&self, ops: &[LoggedOp]) -> Result<()> {
        let mut by_board: std::collections::BTreeMap<&BoardId, Vec<String>> = Default::default();
        for o in ops {
            by_board
                .entry(&o.board)
                .or_default()
                .push(o.seq.to_string());
        }
        // Bounded calls: each holds Redis briefly, and passes Lua's unpack far fewer values than
        // its limit (about 8,000).
        let calls = by_board
            .into_iter()
            .flat_map(|(b, seqs)| {
                let key = self.keys.log(b);
                seqs.chunks(TRIM_CHUNK)
                    .map(|part| Call {
                        script: &scripts::LOG_TRIM,
                        keys: vec![key.clone()],
                        args: part.to_vec(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for r in self.exec.eval_many(calls).await.map_err(unavailable)? {
            r.map_err(unavailable)?;
        }
        // Saving a seized board's log is rebuild work too (see Engine::beating).
        step();
        Ok(())
    }
}
