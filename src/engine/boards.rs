//! Board definitions: create, update, list, measure and delete boards, and keep each board's key
//! index.

use super::defs::{Next, ATTEMPTS};
use super::rebuild::REBUILD_PREFIX;
use super::reply::{as_array, as_str, as_u64, bad_reply, unavailable};
use super::{scripts, BoardInfo, Engine, Op};
use crate::backend::{Call, Reply};
use crate::board::{BoardDef, BoardId};
use crate::error::{Error, Result};

impl Engine {
    /// Creates a board, or updates it where that is safe (see [`BoardDef::check_update`]).
    /// Returns true when the board was created.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad definition or a refused change.
    pub async fn put_board(&self, board: &BoardId, def: BoardDef) -> Result<bool> {
        let def = def.validated()?;
        let json = serde_json::to_string(&def).map_err(|e| Error::Backend(e.to_string()))?;
        for _ in 0..ATTEMPTS {
            let current = self.fetch_def(board).await?;
            if current.is_none() && self.journal.is_some() {
                if let err @ (Error::Unavailable(_) | Error::Rebuilding(_)) =
                    self.missing(board).await
                {
                    return Err(err);
                }
            }
            if current
                .as_ref()
                .is_some_and(|c| c.version.starts_with(REBUILD_PREFIX))
            {
                return Err(Self::rebuilding(board));
            }
            let expected = match &current {
                Some(cur) => {
                    cur.def.check_update(&def)?;
                    cur.version.clone()
                }
                None => String::new(),
            };
            let version = self.new_version();
            let now = self.now_ms();
            let call = self.put_def_call(board, &expected, &version, &json, &self.log_flag(), now);
            match self.exec.eval(call).await {
                Ok(reply) => {
                    self.forget(board);
                    self.registry("add", board).await?;
                    let seq = as_array(&reply)
                        .and_then(|a| a.get(1))
                        .and_then(as_u64)
                        .unwrap_or(0);
                    let op = Op::Define {
                        version,
                        json: json.clone(),
                    };
                    self.log_one(board, seq, now, op).await?;
                    return Ok(current.is_none());
                }
                Err(e) => match self.on_error(board, e) {
                    Next::Retry => continue,
                    Next::Fail(e) => return Err(e),
                },
            }
        }
        Err(Error::Conflict(format!("board {board} kept changing")))
    }

    /// The id of the durable store this Redis feeds; pairs it with `store` first when it feeds
    /// none (`None`: only reads), or whatever it feeds with `replace`. `None` when it is paired
    /// with none.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn store_pairing(
        &self,
        store: Option<&str>,
        replace: bool,
    ) -> Result<Option<String>> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::STORE_PAIR,
                keys: vec![self.keys.store_pairing()],
                args: vec![
                    store.unwrap_or_default().to_owned(),
                    if replace { "1" } else { "0" }.to_owned(),
                ],
            })
            .await
            .map_err(unavailable)?;
        Ok(as_str(&reply)
            .filter(|id| !id.is_empty())
            .map(str::to_owned))
    }

    pub(super) async fn registry(&self, op: &str, board: &BoardId) -> Result<Reply> {
        self.exec
            .eval(Call {
                script: &scripts::REGISTRY,
                keys: vec![self.keys.registry()],
                args: vec![op.to_owned(), board.to_string()],
            })
            .await
            .map_err(Error::from)
    }

    /// A board's definition, read from Redis (not from the cache).
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn board(&self, board: &BoardId) -> Result<BoardInfo> {
        let d = self
            .fetch_def(board)
            .await?
            .ok_or_else(|| Error::BoardNotFound(board.clone()))?;
        Ok(BoardInfo {
            board: board.clone(),
            definition: d.def.clone(),
            created_at_ms: d.created_ms,
        })
    }

    /// Every defined board, by id.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn boards(&self) -> Result<Vec<BoardInfo>> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::REGISTRY,
                keys: vec![self.keys.registry()],
                args: vec!["list".into()],
            })
            .await
            .map_err(unavailable)?;
        let mut ids: Vec<BoardId> = as_array(&reply)
            .ok_or_else(|| bad_reply("registry", &reply))?
            .iter()
            .filter_map(|r| as_str(r).and_then(|s| BoardId::parse(s).ok()))
            .collect();
        ids.sort();
        let calls = ids
            .iter()
            .map(|b| Call {
                script: &scripts::BOARD_GET,
                keys: vec![self.keys.definition(b)],
                args: vec![],
            })
            .collect();
        let replies = self.exec.eval_many(calls).await.map_err(unavailable)?;
        let mut out = Vec::with_capacity(ids.len());
        for (board, r) in ids.into_iter().zip(replies) {
            let r = r.map_err(unavailable)?;
            // A board deleted while it was listed: its id may linger in the registry for a moment.
            if let Some(d) = Self::parse_def(&r)? {
                out.push(BoardInfo {
                    board,
                    definition: d.def.clone(),
                    created_at_ms: d.created_ms,
                });
            }
        }
        Ok(out)
    }

    /// Bytes a board's keys take in the backend (Redis samples big sorted sets), or `None` where the
    /// backend cannot say.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn board_memory(&self, board: &BoardId) -> Result<Option<u64>> {
        let zsets = self.live_zsets(board, self.now_ms()).await?;
        self.exec
            .memory_usage(&self.every_key(board, &zsets))
            .await
            .map_err(unavailable)
    }

    /// Every key a board owns, given its live leaderboard sets: its own keys first (definition,
    /// dedupe, key index, display data, event prints, sequence, log), then each leaderboard with its
    /// dense indexes.
    pub(super) fn every_key(&self, board: &BoardId, zsets: &[String]) -> Vec<String> {
        let mut keys = vec![
            self.keys.definition(board),
            self.keys.dedupe(board),
            self.keys.index(board),
            self.keys.display_names(board),
            self.keys.display_data(board),
            self.keys.event_prints(board),
            self.keys.sequence(board),
            self.keys.log(board),
            self.keys.cache_versions(board),
        ];
        for z in zsets {
            if let Some((k, _)) = self.keys.from_zset(board, z) {
                keys.extend([k.zset, k.distinct_values, k.distinct_counts]);
            }
        }
        keys
    }

    pub(super) async fn live_zsets(&self, board: &BoardId, now: i64) -> Result<Vec<String>> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::KEY_INDEX,
                keys: vec![self.keys.index(board)],
                args: vec![now.to_string()],
            })
            .await
            .map_err(Error::from)?;
        Ok(as_array(&reply)
            .ok_or_else(|| bad_reply("key_index", &reply))?
            .iter()
            .filter_map(|r| as_str(r).map(str::to_owned))
            .collect())
    }

    /// Deletes a board: its definition and every key it owns.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn delete_board(&self, board: &BoardId) -> Result<()> {
        for _ in 0..ATTEMPTS {
            let Some(def) = self.fetch_def(board).await? else {
                // Redis may have lost a board the store still holds: deleting it is still a delete.
                if let Some(j) = &self.journal {
                    if j.board_deleting(board).await? {
                        j.board_deleted(board).await?;
                        return Ok(());
                    }
                }
                return Err(Error::BoardNotFound(board.clone()));
            };
            if def.version.starts_with(REBUILD_PREFIX) {
                return Err(Self::rebuilding(board));
            }
            if let Some(j) = &self.journal {
                // The tombstone makes the deletion durable before any key goes: from here on the
                // board is deleted, whatever the script meets (see `finish_delete`).
                j.board_deleting(board).await?;
            }
            let now = self.now_ms();
            let zsets = self.live_zsets(board, now).await?;
            let keys = self.every_key(board, &zsets);
            let mut args = vec![def.version.clone(), now.to_string()];
            args.extend(zsets);
            match self
                .exec
                .eval(Call {
                    script: &scripts::DELETE_BOARD,
                    keys,
                    args,
                })
                .await
            {
                Ok(_) => {
                    self.forget(board);
                    if let Some(j) = &self.journal {
                        j.board_deleted(board).await?;
                    }
                    self.registry("remove", board).await?;
                    // Defined again meanwhile by someone else: keep it listed.
                    if self.fetch_def(board).await?.is_some() {
                        self.registry("add", board).await?;
                    }
                    return Ok(());
                }
                Err(e) => match self.on_error(board, e) {
                    Next::Retry => continue,
                    Next::Fail(_) if self.journal.is_some() => {
                        return self.finish_delete(board).await
                    }
                    Next::Fail(e) => return Err(e),
                },
            }
        }
        if self.journal.is_some() {
            return self.finish_delete(board).await;
        }
        Err(Error::Conflict(format!("board {board} kept changing")))
    }

    /// Ends a deletion the store has recorded (its tombstone is committed) when the script could
    /// not: the board is deleted either way, since the store's check would finish it within
    /// seconds, so the keys go now, as that check removes them, rather than answer that nothing
    /// happened while writes acknowledged meanwhile are about to vanish.
    ///
    /// # Errors
    /// [`Error::Unconfirmed`] when Redis cannot be reached: the deletion completes once it can.
    async fn finish_delete(&self, board: &BoardId) -> Result<()> {
        let done = async {
            self.discard(board).await?;
            if let Some(j) = &self.journal {
                j.board_deleted(board).await?;
            }
            self.registry("remove", board).await?;
            Ok::<_, Error>(())
        };
        done.await.map_err(|e| Error::Unconfirmed {
            detail: "the board's deletion is recorded, and completes once the leaderboard \
                     backend answers"
                .into(),
            cause: e.to_string(),
        })
    }

    /// The board_put call that sets a board's definition when its current version is `expected`
    /// ("" to create it); `log` is "1" to append it to the board's log, "0" for a replay.
    pub(super) fn put_def_call(
        &self,
        board: &BoardId,
        expected: &str,
        version: &str,
        json: &str,
        log: &str,
        now: i64,
    ) -> Call {
        Call {
            script: &scripts::BOARD_PUT,
            keys: vec![
                self.keys.definition(board),
                self.keys.sequence(board),
                self.keys.log(board),
                self.keys.cache_versions(board),
            ],
            args: vec![
                expected.into(),
                version.into(),
                json.into(),
                now.to_string(),
                log.into(),
            ],
        }
    }

    /// Forgets expired keys from a board's key index; returns how many live keys it lists.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn prune_index(&self, board: &BoardId) -> Result<usize> {
        Ok(self.live_zsets(board, self.now_ms()).await?.len())
    }

    /// Forgets expired keys from a board's key index, without listing the live ones: what the
    /// server does for every board at each metrics sample, so the index never holds more than a
    /// sample's worth of expired keys. Returns how many it forgot.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn forget_expired_keys(&self, board: &BoardId) -> Result<u64> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::KEY_INDEX,
                keys: vec![self.keys.index(board)],
                args: vec![self.now_ms().to_string(), "prune".into()],
            })
            .await
            .map_err(unavailable)?;
        as_u64(&reply).ok_or_else(|| bad_reply("key_index", &reply))
    }
}
