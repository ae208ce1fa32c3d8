//! Member removal and display data (name and free-form data shown beside a member's rank).

use super::defs::{CachedDef, Next, ATTEMPTS};
use super::reply::{as_array, as_u64, bad_reply};
use super::{scripts, Engine, LoggedOp, Op};
use crate::backend::Call;
use crate::board::{BoardId, Display, Member, Order, RankMode};
use crate::error::{Error, Result};

impl Engine {
    /// The call that removes `member` from every live key of a board, as of `now`.
    async fn remove_call(
        &self,
        board: &BoardId,
        d: &CachedDef,
        member: &Member,
        now: i64,
        log: &str,
    ) -> Result<Call> {
        let zsets = self.live_zsets(board, now).await?;
        let dense = d.def.rank_mode == RankMode::Dense;
        let mut keys = vec![
            self.keys.definition(board),
            self.keys.index(board),
            self.keys.display_names(board),
            self.keys.display_data(board),
            self.keys.sequence(board),
            self.keys.log(board),
        ];
        let mut args = vec![
            d.version.clone(),
            now.to_string(),
            d.def.rank_mode.as_str().into(),
            member.to_string(),
            log.to_owned(),
        ];
        for z in &zsets {
            let (k, window) = self
                .keys
                .from_zset(board, z)
                .ok_or_else(|| Error::Backend(format!("key index holds a foreign key {z}")))?;
            keys.push(k.zset);
            if dense {
                keys.push(k.distinct_values);
                keys.push(k.distinct_counts);
            }
            args.push(d.def.tick_bits(window).to_string());
        }
        keys.push(self.keys.cache_versions(board));
        Ok(Call {
            script: &scripts::REMOVE_MEMBER,
            keys,
            args,
        })
    }

    /// Removes a member from every key of a board, with its display data. Returns how many
    /// leaderboard keys held the member.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn remove_member(&self, board: &BoardId, member: &Member) -> Result<u64> {
        for _ in 0..ATTEMPTS {
            let d = self.definition(board).await?;
            let now = self.now_ms();
            let call = self
                .remove_call(board, &d, member, now, &self.log_flag())
                .await?;
            match self.exec.eval(call).await {
                Ok(r) => {
                    let (removed, seq) = match as_array(&r) {
                        Some([n, seq]) => (as_u64(n), as_u64(seq).unwrap_or(0)),
                        _ => (None, 0),
                    };
                    let removed = removed.ok_or_else(|| bad_reply("remove_member", &r))?;
                    let op = Op::Remove {
                        member: member.to_string(),
                    };
                    self.log_one(board, seq, now, op).await?;
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
        let call = self.remove_call(board, d, member, now, "0").await?;
        self.checked(call).await.map(|_| ())
    }
}
