//! What the Postgres and SQLite stores share: the queries both run as they are (see
//! [`super::sql`]), the decoding of what they read, and the [`super::Store`] implementation that
//! calls their own methods where the two differ.
//!
//! The macros here expand inside a store's module, which names its own `unavailable` (the error of
//! a failed query), `row_to_op` (a row of [`super::sql::OPS_AFTER`]'s columns as an operation),
//! `stream_entries` (reads one snapshot's entries), and `LIVE_BOARDS` and `BOARD_SEQ` (the queries
//! of [`super::sql::LIVE_BOARDS`] and [`super::sql::BOARD_SEQ`]'s rows, which Postgres reads from
//! the numbers its triggers keep).

use sqlx::Row;

use crate::board::BoardId;
use crate::engine::LoggedOp;
use crate::error::Result;

/// The operation a row of [`super::sql::OPS_AFTER`]'s columns holds, with the row's scopes as its
/// store decoded them (each store keeps them its own way).
pub(crate) fn row_to_op<R>(board: &BoardId, r: &R, scopes: Option<Vec<String>>) -> Result<LoggedOp>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let row = super::OpRow {
        kind: r.get::<String, _>("op").trim().to_owned(),
        member: r.get("member"),
        value: r.get("value"),
        event_id: r.get("event_id"),
        at_ms: r.get("at_ms"),
        scopes,
        payload: r.get("payload"),
        extra: r.get("extra"),
    };
    Ok(LoggedOp {
        board: board.clone(),
        seq: r.get::<i64, _>("seq") as u64,
        recv_ms: r.get("recv_ms"),
        op: row.into_op(board)?,
    })
}

/// Runs each statement of `$sqls` on `$conn`, binding the same parameters to each, and returns the
/// error from the enclosing function when one fails.
macro_rules! execute_each {
    ($conn:expr, $sqls:expr $(, $arg:expr)*) => {
        for sql in $sqls {
            sqlx::query(sql)
                $(.bind($arg))*
                .execute($conn)
                .await
                .map_err(unavailable)?;
        }
    };
}
pub(crate) use execute_each;

/// Starts, on `$conn`, a new life of each board a definition of `$ops` at sequence number 1
/// defines (see [`super::sql::NEW_LIFE`]).
macro_rules! new_lives {
    ($conn:expr, $ops:expr) => {
        for (board, version) in $ops.iter().filter_map(|o| match &o.op {
            $crate::engine::Op::Define { version, .. } if o.seq == 1 => Some((&o.board, version)),
            _ => None,
        }) {
            $crate::store::common::execute_each!(
                $conn,
                $crate::store::sql::NEW_LIFE,
                board.as_str(),
                version
            );
        }
    };
}
pub(crate) use new_lives;

/// Inserts or updates the board row of each definition of `$ops` stored at its own number: not one
/// of `$park` (a parked one takes over when it is merged), nor of a board of `$diverged` (boards with
/// parked operations). `$sql` is the store's upsert of board `$1` with definition `$2` of version
/// `$3` at seq `$4`.
macro_rules! upsert_boards {
    ($sql:expr, $conn:expr, $ops:expr, $park:expr, $diverged:expr) => {
        let parked: std::collections::HashSet<(&BoardId, u64)> =
            $park.iter().map(|o| (&o.board, o.seq)).collect();
        for o in $ops {
            let $crate::engine::Op::Define { version, json } = &o.op else {
                continue;
            };
            if parked.contains(&(&o.board, o.seq)) || $diverged.contains(o.board.as_str()) {
                continue;
            }
            sqlx::query($sql)
                .bind(o.board.as_str())
                .bind(json)
                .bind(version)
                .bind(o.seq as i64)
                .execute($conn)
                .await
                .map_err(unavailable)?;
        }
    };
}
pub(crate) use upsert_boards;

/// Lease `$name` for `$holder` until `$now` + `$ms` (all Unix ms), where it is free at `$now` or
/// the holder's already, on `$conn`: whether it was claimed.
macro_rules! try_lease {
    ($conn:expr, $name:expr, $holder:expr, $now:expr, $ms:expr) => {
        sqlx::query($crate::store::sql::TRY_LEASE)
            .bind($name)
            .bind($holder)
            .bind($now + $ms)
            .bind($now)
            .fetch_optional($conn)
            .await
            .map(|row| row.is_some())
            .map_err(unavailable)
    };
}
pub(crate) use try_lease;

/// The statements of one row each that both stores run as they are: (what they bind) on `$conn`.
macro_rules! execute_one {
    ($conn:expr, $sql:expr $(, $arg:expr)*) => {
        sqlx::query($sql)
            $(.bind($arg))*
            .execute($conn)
            .await
            .map(drop)
            .map_err(unavailable)
    };
}
pub(crate) use execute_one;

/// The methods of `$store` that read with the queries both stores share (on its `pool`, checking
/// identities with its `expected`, reading snapshot entries with its module's `stream_entries`),
/// and its [`super::Store`] implementation: those methods, and its own methods of the same names
/// for the rest (`migrate`, `insert_ops`, `merge_parked`, `tombstone`, `purge`, `write_snapshots`,
/// `mark_base`, `prune_snapshots`, `try_lease`, `release_lease`, `describe`). `$migrations` is the
/// folder of its migrations; `$own` trait methods it overrides besides.
macro_rules! sql_store {
    ($store:ident, $migrations:tt, { $($own:tt)* }) => {
        impl $store {
            /// Whether `board` has parked operations (see [`super::Store::insert_ops`]).
            ///
            /// # Errors
            /// [`Error::Unavailable`].
            pub async fn diverged(&self, board: &BoardId) -> Result<bool> {
                let row = sqlx::query($crate::store::sql::DIVERGED)
                    .bind(board.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(row.is_some())
            }

            /// Live boards (not deleted) with their highest stored sequence number.
            ///
            /// # Errors
            /// [`Error::Unavailable`].
            pub async fn boards(&self) -> Result<Vec<(BoardId, u64)>> {
                let rows = sqlx::query_as(LIVE_BOARDS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                $crate::store::live_boards(rows)
            }

            /// The highest stored sequence number of a live `board`; `None` when none is stored.
            ///
            /// # Errors
            /// [`Error::Unavailable`].
            pub async fn board_seq(&self, board: &BoardId) -> Result<Option<u64>> {
                let seq: Option<i64> = sqlx::query_scalar(BOARD_SEQ)
                    .bind(board.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(seq.map(|s| s as u64))
            }

            /// Deleted boards whose deletion may not have reached Redis yet.
            ///
            /// # Errors
            /// [`Error::Unavailable`].
            pub async fn tombstones(&self) -> Result<Vec<BoardId>> {
                let rows = sqlx::query_as($crate::store::sql::TOMBSTONES)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok($crate::store::tombstones(rows))
            }

            /// Whether the store holds a live board of this id.
            ///
            /// # Errors
            /// [`Error::Unavailable`].
            pub async fn has_board(&self, board: &BoardId) -> Result<bool> {
                let row = sqlx::query($crate::store::sql::HAS_BOARD)
                    .bind(board.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(row.is_some())
            }

            /// A board's operations in order, held whole: for tests and small boards; rebuilds
            /// and the admin tools read [`Self::op_pages`].
            ///
            /// # Errors
            /// [`Error::Unavailable`]; [`Error::Backend`] for a row that does not decode.
            pub async fn ops(&self, board: &BoardId) -> Result<Vec<LoggedOp>> {
                let rows = sqlx::query($crate::store::sql::OPS_AFTER)
                    .bind(board.as_str())
                    .bind(0i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                rows.iter().map(|r| row_to_op(board, r)).collect()
            }

            /// See [`super::Store::op_pages`].
            pub fn op_pages(
                &self,
                board: &BoardId,
                after: u64,
                upto: u64,
            ) -> $crate::engine::OpPages {
                self.pages($crate::store::sql::OPS_PAGE, board, after, upto, None)
            }

            /// See [`super::Store::ops_count`].
            ///
            /// # Errors
            /// [`Error::Unavailable`].
            pub async fn ops_count(&self, board: &BoardId, after: u64, upto: u64) -> Result<u64> {
                let (n,): (i64,) = sqlx::query_as($crate::store::sql::OPS_COUNT)
                    .bind(board.as_str())
                    .bind(after.min(i64::MAX as u64) as i64)
                    .bind(upto.min(i64::MAX as u64) as i64)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(n as u64)
            }

            /// The rows of `sql` (board `$1`, after `$2`, up to `$3`, then `since` as `$4` when
            /// given, and the page's size last), a page at a time from a task of their own, one
            /// page read ahead of the one handed out.
            fn pages(
                &self,
                sql: &'static str,
                board: &BoardId,
                after: u64,
                upto: u64,
                since: Option<i64>,
            ) -> $crate::engine::OpPages {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let (pool, board) = (self.pool.clone(), board.clone());
                let upto = upto.min(i64::MAX as u64) as i64;
                tokio::spawn(async move {
                    let mut after = after.min(i64::MAX as u64) as i64;
                    loop {
                        let query = sqlx::query(sql)
                            .bind(board.as_str())
                            .bind(after)
                            .bind(upto);
                        let query = match since {
                            Some(since) => query.bind(since),
                            None => query,
                        };
                        let page = query
                            .bind($crate::store::OP_PAGE as i64)
                            .fetch_all(&pool)
                            .await
                            .map_err(unavailable)
                            .and_then(|rows| {
                                rows.iter()
                                    .map(|r| row_to_op(&board, r))
                                    .collect::<Result<Vec<_>>>()
                            });
                        let next = match &page {
                            Ok(p) if p.len() == $crate::store::OP_PAGE => {
                                p.last().map(|o| o.seq as i64)
                            }
                            _ => None,
                        };
                        if matches!(&page, Ok(p) if p.is_empty()) || tx.send(page).await.is_err() {
                            return;
                        }
                        match next {
                            Some(seq) => after = seq,
                            None => return,
                        }
                    }
                });
                $crate::engine::OpPages::read(rx)
            }

            /// See [`super::Store::restore_base`].
            ///
            /// # Errors
            /// [`Error::Unavailable`]; [`Error::Backend`] for a row that does not decode.
            pub async fn restore_base(
                &self,
                board: &BoardId,
                upto: u64,
                dedupe_since: i64,
            ) -> Result<Option<$crate::engine::Base>> {
                let pool = &self.pool;
                let run: Option<(i64, i64, String)> =
                    sqlx::query_as($crate::store::sql::LATEST_BASE)
                        .bind(board.as_str())
                        .bind(upto as i64)
                        .fetch_optional(pool)
                        .await
                        .map_err(unavailable)?;
                let Some((run, seq, version)) = run else {
                    return Ok(None);
                };
                // The definition in force at seq must be the one the run recorded: snapshots of an
                // earlier board of the same name (deleted, then created again) never qualify.
                let def: Option<(String, Option<String>)> = sqlx::query_as(
                    "SELECT payload, extra FROM rankd_ops WHERE board = $1 AND op = 'd' AND seq <= $2
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(board.as_str())
                .bind(seq)
                .fetch_optional(pool)
                .await
                .map_err(unavailable)?;
                let Some((definition, Some(def_version))) = def else {
                    return Ok(None);
                };
                if def_version != version {
                    return Ok(None);
                }
                let removed: Vec<(String, i64)> =
                    sqlx::query_as($crate::store::sql::LAST_REMOVALS)
                        .bind(board.as_str())
                        .bind(seq)
                        .fetch_all(pool)
                        .await
                        .map_err(unavailable)?;
                let before = self.pages(
                    $crate::store::sql::BEFORE_PAGE,
                    board,
                    0,
                    seq as u64,
                    Some(dedupe_since),
                );
                let keys = self.run_key_rows(board, run).await?;
                let pool = pool.clone();
                $crate::store::base(seq, version, definition, removed, before, keys, move |id| {
                    stream_entries(pool.clone(), id)
                })
                .map(Some)
            }

            /// The keys of `board`'s snapshot run `run`.
            async fn run_key_rows(
                &self,
                board: &BoardId,
                run: i64,
            ) -> Result<Vec<$crate::store::RunKey>> {
                sqlx::query_as($crate::store::sql::RUN_KEYS)
                    .bind(board.as_str())
                    .bind(run)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)
            }

            /// See [`super::Store::run_keys`].
            async fn run_keys(
                &self,
                board: &BoardId,
                run: i64,
            ) -> Result<Vec<$crate::engine::BaseKey>> {
                let keys = self.run_key_rows(board, run).await?;
                let pool = self.pool.clone();
                $crate::store::base_keys(keys, move |id| stream_entries(pool.clone(), id))
            }

            /// See [`super::Store::base_seq`].
            async fn base_seq(&self, board: &BoardId) -> Result<Option<u64>> {
                let run: Option<(i64, i64, String)> =
                    sqlx::query_as($crate::store::sql::LATEST_BASE)
                        .bind(board.as_str())
                        .bind(i64::MAX)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(unavailable)?;
                Ok(run.map(|(_, seq, _)| seq as u64))
            }

            /// See [`super::Store::pending_migrations`].
            async fn pending_migrations(&self) -> Result<Vec<String>> {
                let applied: Vec<i64> =
                    sqlx::query_as::<_, (i64,)>($crate::store::APPLIED_MIGRATIONS)
                        .fetch_all(&self.pool)
                        .await
                        .map(|rows| rows.into_iter().map(|(v,)| v).collect())
                        .unwrap_or_default();
                Ok($crate::store::pending(&sqlx::migrate!($migrations), &applied))
            }

            /// See [`super::Store::store_id`].
            async fn store_id(&self) -> Result<String> {
                sqlx::query_scalar($crate::store::sql::STORE_ID)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)
            }

            /// See [`super::Store::check_identity`].
            async fn check_identity(&self) -> Result<()> {
                $crate::store::identity_check!(self.expected, &self.pool);
                Ok(())
            }

            /// See [`super::Store::has_ops`].
            async fn has_ops(&self, board: &BoardId) -> Result<bool> {
                Ok(sqlx::query($crate::store::sql::HAS_OPS)
                    .bind(board.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?
                    .is_some())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn migrate(&self) -> Result<()> {
                $store::migrate(self).await
            }
            async fn insert_ops(&self, ops: &[LoggedOp]) -> Result<Vec<BoardId>> {
                $store::insert_ops(self, ops).await
            }
            async fn diverged(&self, board: &BoardId) -> Result<bool> {
                $store::diverged(self, board).await
            }
            async fn merge_parked(&self, board: &BoardId) -> Result<u64> {
                $store::merge_parked(self, board).await
            }
            async fn store_id(&self) -> Result<String> {
                $store::store_id(self).await
            }
            fn expect_id(&self, id: String) {
                self.expected.set(id);
            }
            async fn check_identity(&self) -> Result<()> {
                $store::check_identity(self).await
            }
            async fn has_ops(&self, board: &BoardId) -> Result<bool> {
                $store::has_ops(self, board).await
            }
            async fn tombstone(&self, board: &BoardId) -> Result<()> {
                $store::tombstone(self, board).await
            }
            async fn purge(&self, board: &BoardId) -> Result<()> {
                $store::purge(self, board).await
            }
            async fn boards(&self) -> Result<Vec<(BoardId, u64)>> {
                $store::boards(self).await
            }
            async fn board_seq(&self, board: &BoardId) -> Result<Option<u64>> {
                $store::board_seq(self, board).await
            }
            async fn tombstones(&self) -> Result<Vec<BoardId>> {
                $store::tombstones(self).await
            }
            async fn has_board(&self, board: &BoardId) -> Result<bool> {
                $store::has_board(self, board).await
            }
            async fn ops(&self, board: &BoardId) -> Result<Vec<LoggedOp>> {
                $store::ops(self, board).await
            }
            async fn write_snapshots(
                &self,
                board: &BoardId,
                keys: &[$crate::engine::KeySnapshot],
            ) -> Result<Option<i64>> {
                $store::write_snapshots(self, board, keys).await
            }
            async fn run_keys(
                &self,
                board: &BoardId,
                run: i64,
            ) -> Result<Vec<$crate::engine::BaseKey>> {
                $store::run_keys(self, board, run).await
            }
            async fn mark_base(&self, board: &BoardId, run: i64) -> Result<()> {
                $store::mark_base(self, board, run).await
            }
            async fn restore_base(
                &self,
                board: &BoardId,
                upto: u64,
                dedupe_since: i64,
            ) -> Result<Option<$crate::engine::Base>> {
                $store::restore_base(self, board, upto, dedupe_since).await
            }
            fn op_pages(
                &self,
                board: &BoardId,
                after: u64,
                upto: u64,
            ) -> $crate::engine::OpPages {
                $store::op_pages(self, board, after, upto)
            }
            async fn ops_count(&self, board: &BoardId, after: u64, upto: u64) -> Result<u64> {
                $store::ops_count(self, board, after, upto).await
            }
            async fn prune_snapshots(&self, keep_days: u32) -> Result<u64> {
                $store::prune_snapshots(self, keep_days).await
            }
            async fn last_snapshot_age_secs(&self) -> Result<Option<i64>> {
                $store::last_snapshot_age_secs(self).await
            }
            async fn try_lease(&self, name: &str, holder: &str, ms: i64) -> Result<bool> {
                $store::try_lease(self, name, holder, ms).await
            }
            async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
                $store::release_lease(self, name, holder).await
            }
            async fn pending_migrations(&self) -> Result<Vec<String>> {
                $store::pending_migrations(self).await
            }
            async fn base_seq(&self, board: &BoardId) -> Result<Option<u64>> {
                $store::base_seq(self, board).await
            }
            async fn describe(&self) -> Result<Vec<String>> {
                $store::describe(self).await
            }
            $($own)*
        }
    };
}
pub(crate) use sql_store;
