//! Board definitions: create, update, list, measure and delete boards, and keep each board's key
//! index.

use super::defs::{Next, ATTEMPTS};
use super::rebuild::REBUILD_PREFIX;
use super::reply::{as_array, as_str, as_u64, bad_reply, strings, unavailable};
use super::{scripts, BoardInfo, Engine, Op, KEY_CHUNK};

/// Most members one call of a trim removes (see lua/trim.lua).
const TRIM_SLICE: usize = 1_000;
use crate::backend::{Call, Refusal, Reply};
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
            let result = self.exec.eval(call).await;
            if let Err(e) = &result {
                if let Some(Refusal::Deleting(token)) = e.refusal() {
                    // The board's previous life is still being deleted: end that first, so that
                    // the new board starts empty.
                    self.end_deletion(board, &token, None).await?;
                    continue;
                }
            }
            match result {
                Ok(reply) => {
                    self.forget(board);
                    self.registry("add", board).await?;
                    let seq = as_array(&reply)
                        .and_then(|a| a.get(1))
                        .and_then(as_u64)
                        .unwrap_or(0);
                    let op = Op::Define {
                        version: version.clone(),
                        json: json.clone(),
                    };
                    self.log_one(board, seq, now, op).await?;
                    let lowered =
                        match (current.as_ref().map(|c| c.def.max_members), def.max_members) {
                            (Some(None), Some(_)) => true,
                            (Some(Some(old)), Some(new)) => new < old,
                            _ => false,
                        };
                    if lowered {
                        self.trim_keys(board, &version, &def).await?;
                    }
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

    /// Trims every key of a board to the max members of its definition `def` (version `version`),
    /// [`KEY_CHUNK`] keys and at most [`TRIM_SLICE`] members a call (see lua/trim.lua). Stops early
    /// when the definition changes again: the change that follows trims for itself.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached: the keys left over the limit are
    /// trimmed a slice at each of their writes.
    async fn trim_keys(&self, board: &BoardId, version: &str, def: &BoardDef) -> Result<()> {
        let Some(max) = def.max_members else {
            return Ok(());
        };
        let dense = def.rank_mode == crate::board::RankMode::Dense;
        let mut from = 0;
        loop {
            let page = self.index_page(board, self.now_ms(), from).await?;
            if page.is_empty() {
                return Ok(());
            }
            from += page.len();
            let zsets: Vec<String> = page
                .into_iter()
                .filter(|(_, live)| *live)
                .map(|(z, _)| z)
                .collect();
            let mut keys = vec![self.keys.definition(board)];
            let mut args = vec![
                version.to_owned(),
                max.to_string(),
                def.order.as_str().into(),
                def.rank_mode.as_str().into(),
                TRIM_SLICE.to_string(),
            ];
            for z in &zsets {
                let Some((k, window)) = self.keys.from_zset(board, z) else {
                    continue;
                };
                keys.push(k.zset);
                if dense {
                    keys.extend([k.distinct_values, k.distinct_counts]);
                }
                args.push(def.tick_bits(window).to_string());
            }
            keys.push(self.keys.cache_versions(board));
            loop {
                let call = Call {
                    script: &scripts::TRIM,
                    keys: keys.clone(),
                    args: args.clone(),
                };
                match self.exec.eval(call).await {
                    Ok(r) if as_u64(&r) == Some(0) => break,
                    Ok(r) if as_u64(&r).is_some() => {}
                    Ok(r) => return Err(bad_reply("trim", &r)),
                    Err(e) if matches!(e.refusal(), Some(Refusal::Stale(_) | Refusal::NoBoard)) => {
                        return Ok(())
                    }
                    Err(e) => return Err(unavailable(e)),
                }
            }
        }
    }

    /// Every key a board owns, given its live leaderboard sets: its own keys first (definition,
    /// dedupe, key index, display data, event prints, sequence, log, scope index, removals), then
    /// each leaderboard with its dense indexes.
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
            self.keys.scopes(board),
            self.keys.removals(board),
        ];
        for z in zsets {
            if let Some((k, _)) = self.keys.from_zset(board, z) {
                keys.extend([k.zset, k.distinct_values, k.distinct_counts]);
            }
        }
        keys
    }

    /// The live leaderboards of a board (expired ones forgotten first), read from its key index
    /// [`KEY_CHUNK`] a call: a board may list millions.
    pub(super) async fn live_zsets(&self, board: &BoardId, now: i64) -> Result<Vec<String>> {
        self.prune_expired(board, now).await?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut from = 0;
        loop {
            let page = self.index_page(board, now, from).await?;
            if page.is_empty() {
                return Ok(out);
            }
            from += page.len();
            for (z, live) in page {
                // A key added above the walk meanwhile shifts it: a key may come twice.
                if live && seen.insert(z.clone()) {
                    out.push(z);
                }
            }
        }
    }

    /// [`KEY_CHUNK`] entries of a board's key index from position `from`, counted from its last
    /// (latest to expire), each with whether it is live at `now`.
    async fn index_page(
        &self,
        board: &BoardId,
        now: i64,
        from: usize,
    ) -> Result<Vec<(String, bool)>> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::KEY_INDEX,
                keys: vec![self.keys.index(board)],
                args: vec![
                    now.to_string(),
                    "page".into(),
                    from.to_string(),
                    KEY_CHUNK.to_string(),
                ],
            })
            .await
            .map_err(unavailable)?;
        let flat = strings(&reply).ok_or_else(|| bad_reply("key_index", &reply))?;
        Ok(flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [z, at] => {
                    let live = at == "inf" || at.parse::<f64>().is_ok_and(|t| t > now as f64);
                    Some((z.clone(), live))
                }
                _ => None,
            })
            .collect())
    }

    /// Deletes a board: its definition at once, then every key it owns, in calls of bounded work
    /// (see lua/delete_board.lua). A board whose deletion another call began and did not end (its
    /// process stopped) is ended here.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`].
    pub async fn delete_board(&self, board: &BoardId) -> Result<()> {
        for _ in 0..ATTEMPTS {
            let Some(def) = self.fetch_def(board).await? else {
                if let Some(token) = self.deletion_token(board).await? {
                    self.end_deletion(board, &token, None).await?;
                    return self.deleted(board).await;
                }
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
            let token = self.new_version();
            let call = Call {
                script: &scripts::DELETE_BOARD,
                keys: vec![
                    self.keys.definition(board),
                    self.keys.index(board),
                    self.keys.cache_versions(board),
                ],
                args: vec![
                    "start".into(),
                    def.version.clone(),
                    KEY_CHUNK.to_string(),
                    token.clone(),
                ],
            };
            match self.exec.eval(call).await {
                Ok(first) => {
                    self.forget(board);
                    self.end_deletion(board, &token, Some(first)).await?;
                    return self.deleted(board).await;
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

    /// What follows a deletion's last key: the store learns it ended, and the registry forgets the
    /// board unless it was defined again meanwhile.
    async fn deleted(&self, board: &BoardId) -> Result<()> {
        if let Some(j) = &self.journal {
            j.board_deleted(board).await?;
        }
        self.registry("remove", board).await?;
        // Defined again meanwhile by someone else: keep it listed.
        if self.fetch_def(board).await?.is_some() {
            self.registry("add", board).await?;
        }
        Ok(())
    }

    /// The token of a deletion of `board` under way (begun and not ended), if any.
    async fn deletion_token(&self, board: &BoardId) -> Result<Option<String>> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::BOARD_GET,
                keys: vec![self.keys.definition(board)],
                args: vec![],
            })
            .await
            .map_err(unavailable)?;
        Ok(match as_array(&reply) {
            Some([Reply::Nil, _, _, Reply::Bulk(token)]) => Some(token.clone()),
            _ => None,
        })
    }

    /// Removes the keys of a board whose deletion began under `token`, [`KEY_CHUNK`] leaderboards
    /// a call, then its own keys and what is left of its definition. `first` is the first chunk
    /// to remove, as the deletion's start answered it (`None`: read it). Returns once the deletion
    /// has ended, by this call or by another (then the next chunk finds the token gone).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached: the deletion stays under way, and ends
    /// at the next deletion or definition of the board.
    pub(super) async fn end_deletion(
        &self,
        board: &BoardId,
        token: &str,
        first: Option<Reply>,
    ) -> Result<()> {
        let def = self.keys.definition(board);
        let index = self.keys.index(board);
        let chunk = |zsets: &[String]| {
            let mut keys = vec![def.clone(), index.clone()];
            let mut args = vec!["chunk".into(), token.to_owned(), KEY_CHUNK.to_string()];
            for z in zsets {
                if let Some((k, _)) = self.keys.from_zset(board, z) {
                    keys.extend([k.zset, k.distinct_values, k.distinct_counts]);
                }
                args.push(z.clone());
            }
            Call {
                script: &scripts::DELETE_BOARD,
                keys,
                args,
            }
        };
        let mut page = match first {
            Some(r) => Ok(r),
            None => self.exec.eval(chunk(&[])).await,
        }
        .map_err(|e| self.deletion_error(e));
        loop {
            let reply = match page {
                Ok(r) => r,
                Err(None) => return Ok(()),
                Err(Some(e)) => return Err(e),
            };
            let zsets = strings(&reply).ok_or_else(|| bad_reply("delete_board", &reply))?;
            if zsets.is_empty() {
                break;
            }
            page = self
                .exec
                .eval(chunk(&zsets))
                .await
                .map_err(|e| self.deletion_error(e));
        }
        let mut keys = self.every_key(board, &[]);
        // The definition goes last, with the key index: its token is what each call checks.
        keys.retain(|k| *k != def && *k != index);
        keys.insert(0, index.clone());
        keys.insert(0, def.clone());
        match self
            .exec
            .eval(Call {
                script: &scripts::DELETE_BOARD,
                keys,
                args: vec!["finish".into(), token.to_owned()],
            })
            .await
            .map_err(|e| self.deletion_error(e))
        {
            Ok(_) | Err(None) => Ok(()),
            Err(Some(e)) => Err(e),
        }
    }

    /// A failed step of a deletion: `None` when the deletion is no longer under way (another call
    /// ended it), else the error.
    fn deletion_error(&self, e: crate::backend::ExecError) -> Option<Error> {
        match e.refusal() {
            Some(Refusal::Stale(_)) => None,
            _ => Some(unavailable(e)),
        }
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

    /// Enters in a board's scope index the scopes of the keys it holds, when its keys were written
    /// before the index existed (its definition lacks the mark `sx` that boards created with the
    /// index carry): until then `max_scopes` counts only the scopes written since. A page of the key
    /// index a call. Returns whether it walked the board.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn backfill_scopes(&self, board: &BoardId) -> Result<bool> {
        let def = self.keys.definition(board);
        let held = self
            .exec
            .hash_fields(&def, &["v".to_owned(), "sx".to_owned()])
            .await
            .map_err(unavailable)?;
        if !matches!(held.as_slice(), [Some(_), None]) {
            return Ok(false);
        }
        let head = self.keys.leaderboard_head(board);
        let mut from = 0;
        loop {
            let reply = self
                .exec
                .eval(Call {
                    script: &scripts::SCOPE_BACKFILL,
                    keys: vec![def.clone(), self.keys.index(board), self.keys.scopes(board)],
                    args: vec![
                        head.clone(),
                        from.to_string(),
                        KEY_CHUNK.to_string(),
                        self.now_ms().to_string(),
                    ],
                })
                .await
                .map_err(unavailable)?;
            let n = as_u64(&reply).ok_or_else(|| bad_reply("scope_backfill", &reply))? as usize;
            if n < KEY_CHUNK {
                return Ok(true);
            }
            from += n;
        }
    }

    /// [`Engine::backfill_scopes`] of every board; returns how many it walked.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn backfill_all_scopes(&self) -> Result<usize> {
        let mut walked = 0;
        for info in self.boards().await? {
            if self.backfill_scopes(&info.board).await? {
                walked += 1;
            }
        }
        Ok(walked)
    }

    /// Forgets expired keys from a board's key index; returns how many live keys it lists.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn prune_index(&self, board: &BoardId) -> Result<usize> {
        Ok(self.live_zsets(board, self.now_ms()).await?.len())
    }

    /// Forgets the keys of a board's index (and the scopes of its scope index) that expired by
    /// `now`; returns how many keys.
    async fn prune_expired(&self, board: &BoardId, now: i64) -> Result<u64> {
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::KEY_INDEX,
                keys: vec![self.keys.index(board), self.keys.scopes(board)],
                args: vec![now.to_string(), "prune".into()],
            })
            .await
            .map_err(unavailable)?;
        as_u64(&reply).ok_or_else(|| bad_reply("key_index", &reply))
    }

    /// Forgets expired keys from a board's key index, without listing the live ones: what the
    /// server does for every board at each metrics sample, so the index never holds more than a
    /// sample's worth of expired keys. Returns how many it forgot.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn forget_expired_keys(&self, board: &BoardId) -> Result<u64> {
        self.prune_expired(board, self.now_ms()).await
    }
}
