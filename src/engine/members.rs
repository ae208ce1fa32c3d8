//! Member removal and display data (name and free-form data shown beside a member's rank).

use super::defs::{CachedDef, Next, ATTEMPTS};
use super::reply::{as_array, as_int, as_str, as_u64, strings};
use super::{scripts, Engine, LoggedOp, Op, KEY_CHUNK};
use crate::backend::{Call, ExecError, Reply};
use crate::board::{BoardId, Display, Member, Order, RankMode};
use crate::error::{Error, Result};

/// How a removal's steps read the time: the clock at each step, or one time throughout (a replay,
/// at the time the removal was logged).
#[derive(Clone, Copy)]
enum At {
    Now,
    Logged(i64),
}

/// Rounds of a removal's finish that may each find keys written meanwhile before it gives up: a
/// client writing the member as fast as it is removed.
const FINISH_ROUNDS: usize = 16;

impl Engine {
    fn at(&self, at: At) -> i64 {
        match at {
            At::Now => self.now_ms(),
            At::Logged(t) => t,
        }
    }

    /// One step of lua/remove_member.lua; `zsets` are the chunk's leaderboards, `page` the index
    /// entries to answer and `from` where they start (chunk), or `log` (finish).
    #[allow(clippy::too_many_arguments)]
    fn removal_step(
        &self,
        board: &BoardId,
        d: &CachedDef,
        member: &Member,
        step: &str,
        now: i64,
        zsets: &[String],
        page: usize,
        from: usize,
        log: &str,
    ) -> Call {
        let mut keys = vec![
            self.keys.definition(board),
            self.keys.index(board),
            self.keys.removals(board),
        ];
        let mut args = vec![
            step.to_owned(),
            d.version.clone(),
            now.to_string(),
            member.to_string(),
            d.def.rank_mode.as_str().into(),
        ];
        match step {
            "start" => args.push(page.to_string()),
            "chunk" => {
                args.push(page.to_string());
                args.push(from.to_string());
                let dense = d.def.rank_mode == RankMode::Dense;
                for z in zsets {
                    // The index holds only the board's leaderboards; anything else is skipped.
                    let Some((k, window)) = self.keys.from_zset(board, z) else {
                        continue;
                    };
                    keys.push(k.zset);
                    if dense {
                        keys.push(k.distinct_values);
                        keys.push(k.distinct_counts);
                    }
                    args.push(d.def.tick_bits(window).to_string());
                }
                keys.push(self.keys.cache_versions(board));
            }
            _ => {
                keys.extend([
                    self.keys.display_names(board),
                    self.keys.display_data(board),
                    self.keys.sequence(board),
                    self.keys.log(board),
                ]);
                args.push(log.to_owned());
            }
        }
        Call {
            script: &scripts::REMOVE_MEMBER,
            keys,
            args,
        }
    }

    /// Removes `member` from every key of a board in steps of bounded work (see
    /// lua/remove_member.lua): a start, then a chunk per [`KEY_CHUNK`] keys of the key index, then
    /// the keys written for the member meanwhile, until the finish finds none and logs the removal
    /// as one operation. Returns how many leaderboard keys held the member, the removal's sequence
    /// number (0 without log) and the time it was logged with.
    async fn remove_in_chunks(
        &self,
        board: &BoardId,
        d: &CachedDef,
        member: &Member,
        at: At,
        log: &str,
    ) -> std::result::Result<(u64, u64, i64), ExecError> {
        let bad =
            |what: &str, r: &Reply| ExecError::Reply(format!("unexpected {what} reply: {r:?}"));
        let step = |name: &str, zsets: &[String], page: usize, from: usize| {
            self.removal_step(board, d, member, name, self.at(at), zsets, page, from, log)
        };
        let finish = |now: i64| self.removal_step(board, d, member, "finish", now, &[], 0, 0, log);
        let first = self.exec.eval(step("start", &[], KEY_CHUNK, 0)).await?;
        let mut zsets = strings(&first).ok_or_else(|| bad("remove_member", &first))?;
        let mut from = zsets.len();
        let mut removed = 0;
        while !zsets.is_empty() {
            let r = self
                .exec
                .eval(step("chunk", &zsets, KEY_CHUNK, from))
                .await?;
            let (n, next) = match as_array(&r) {
                Some([n, rest @ ..]) => (as_u64(n), rest),
                _ => (None, &[][..]),
            };
            removed += n.ok_or_else(|| bad("remove_member", &r))?;
            zsets = next
                .iter()
                .filter_map(|z| as_str(z).map(str::to_owned))
                .collect();
            from += zsets.len();
        }
        for _ in 0..FINISH_ROUNDS {
            let now = self.at(at);
            let r = self.exec.eval(finish(now)).await?;
            match as_array(&r) {
                Some([done, seq]) if as_int(done) == Some(1) => {
                    return Ok((removed, as_u64(seq).unwrap_or(0), now));
                }
                Some([_, noted @ ..]) => {
                    let mut seen = std::collections::HashSet::new();
                    let noted: Vec<String> = noted
                        .iter()
                        .filter_map(|z| as_str(z).map(str::to_owned))
                        .filter(|z| seen.insert(z.clone()))
                        .collect();
                    for part in noted.chunks(KEY_CHUNK) {
                        let r = self.exec.eval(step("chunk", part, 0, 0)).await?;
                        removed += as_array(&r)
                            .and_then(|a| as_u64(a.first()?))
                            .ok_or_else(|| bad("remove_member", &r))?;
                    }
                }
                _ => return Err(bad("remove_member", &r)),
            }
        }
        // The lease runs out and the next attempt begins again.
        Err(ExecError::Reply(
            "RANKD_RETRY the member kept being written while it was removed".into(),
        ))
    }

    /// Removes a member from every key of a board, with its display data, in calls of bounded
    /// work. Returns how many leaderboard keys held the member.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn remove_member(&self, board: &BoardId, member: &Member) -> Result<u64> {
        for _ in 0..ATTEMPTS {
            let d = self.definition(board).await?;
            match self
                .remove_in_chunks(board, &d, member, At::Now, &self.log_flag())
                .await
            {
                Ok((removed, seq, at)) => {
                    let op = Op::Remove {
                        member: member.to_string(),
                    };
                    self.log_one(board, seq, at, op).await?;
                    return Ok(removed);
                }
                Err(e) => match self.on_error(board, e) {
                    Next::Retry => continue,
                    Next::Fail(e) => return Err(e),
                },
            }
        }
        Err(Error::Conflict(format!("board {board} kept changing")))
    }

    /// Sets a member's display data (replacing what was there; absent fields are cleared).
    ///
    /// # Errors
    /// [`Error::Invalid`] for data over the limits, [`Error::BoardNotFound`].
    pub async fn put_display(
        &self,
        board: &BoardId,
        member: &Member,
        display: Display,
    ) -> Result<()> {
        let display = display.validated()?;
        let data = match &display.data {
            Some(d) => serde_json::to_string(d).map_err(|e| Error::Backend(e.to_string()))?,
            None => String::new(),
        };
        let now = self.now_ms();
        let (_, reply, ()) = self
            .call_board(board, |d| {
                Ok((
                    self.display_call(
                        board,
                        &d.version,
                        Some(d.def.order),
                        member.as_str(),
                        display.display_name.as_deref(),
                        Some(data.as_str()),
                        &self.log_flag(),
                        now,
                    ),
                    (),
                ))
            })
            .await?;
        let seq = as_u64(&reply).unwrap_or(0);
        let op = Op::Display {
            member: member.to_string(),
            name: display.display_name.clone(),
            data: (!data.is_empty()).then_some(data),
        };
        self.log_one(board, seq, now, op).await
    }

    /// The display_put call that sets a member's display name and data, under definition version
    /// `version`; `log` is "1" to append it to the board's log, "0" for a replay. With the board's
    /// `order`, a name change moves the versions of the cached pages that show the member; a replay
    /// passes none, as the rebuild that makes it changes every cached page of the board anyway.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn display_call(
        &self,
        board: &BoardId,
        version: &str,
        order: Option<Order>,
        member: &str,
        name: Option<&str>,
        data: Option<&str>,
        log: &str,
        now: i64,
    ) -> Call {
        Call {
            script: &scripts::DISPLAY_PUT,
            keys: vec![
                self.keys.definition(board),
                self.keys.display_names(board),
                self.keys.display_data(board),
                self.keys.sequence(board),
                self.keys.log(board),
                self.keys.cache_versions(board),
            ],
            args: vec![
                version.to_owned(),
                member.to_owned(),
                name.unwrap_or_default().to_owned(),
                data.unwrap_or_default().to_owned(),
                log.to_owned(),
                now.to_string(),
                order.map_or("", Order::as_str).to_owned(),
            ],
        }
    }

    /// The call that replays a stored display operation `o` under rebuild token `token` (nothing
    /// logged again); `None` when `o` is not one.
    pub(super) fn replay_display(
        &self,
        board: &BoardId,
        token: &str,
        o: &LoggedOp,
    ) -> Option<Call> {
        let Op::Display { member, name, data } = &o.op else {
            return None;
        };
        Some(self.display_call(
            board,
            token,
            None,
            member,
            name.as_deref(),
            data.as_deref(),
            "0",
            o.recv_ms,
        ))
    }

    pub(super) async fn replay_remove(
        &self,
        board: &BoardId,
        d: &CachedDef,
        member: &Member,
        now: i64,
    ) -> Result<()> {
        self.remove_in_chunks(board, d, member, At::Logged(now), "0")
            .await
            .map(|_| ())
            .map_err(Error::from)
    }
}
