//! Snapshots: every key's standing, copied into the store for history and trends, and as the bases
//! rebuilds start from once checked against the stored log ([`make_base`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use sqlx::postgres::PgPoolCopyExt;

use super::postgres::PgStore;
use super::{Store, Written};
use crate::board::BoardId;
use crate::engine::{at_one_point, Engine, KeySnapshot, SnapChunk, SnapEntry, SnapshotKey};
use crate::error::{Error, Result};

/// What one snapshot run wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Keys snapshotted.
    pub keys: usize,
    /// Entries written.
    pub entries: usize,
    /// Boards whose snapshot became a rebuild base (see [`make_base`]).
    pub bases: usize,
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(format!("store: {e}"))
}

/// Bytes of COPY data sent at a time.
const COPY_BUFFER: usize = 256 * 1024;

/// COPY text format: backslash, tab, newline and carriage return escaped.
fn copy_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// One entry as a row of COPY text, written straight into the buffer (no allocation per row);
/// `stored` only where it differs from the score (boards that break ties by time).
fn copy_row(buf: &mut String, id: &str, e: &SnapEntry) {
    let _ = write!(buf, "{id}\t{}\t", e.rank);
    copy_text(buf, &e.member);
    if e.stored == e.score {
        let _ = writeln!(buf, "\t{:?}\t\\N", e.score);
    } else {
        let _ = writeln!(buf, "\t{:?}\t{:?}", e.score, e.stored);
    }
}

/// Snapshot entry rows on their way into one COPY, sent in buffers of about [`COPY_BUFFER`] bytes.
struct EntryCopy<'c> {
    copy: sqlx::postgres::PgCopyIn<&'c mut sqlx::PgConnection>,
    buf: String,
}

impl<'c> EntryCopy<'c> {
    async fn start(conn: &'c mut sqlx::PgConnection) -> Result<Self> {
        let copy = conn
            .copy_in_raw(
                "COPY rankd_snapshot_entries (snapshot_id, rank, member, score, stored) FROM STDIN",
            )
            .await
            .map_err(unavailable)?;
        Ok(Self {
            copy,
            buf: String::with_capacity(COPY_BUFFER + 1024),
        })
    }

    async fn push(&mut self, id: &str, e: &SnapEntry) -> Result<()> {
        copy_row(&mut self.buf, id, e);
        if self.buf.len() > COPY_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.copy
                .send(self.buf.as_bytes())
                .await
                .map_err(unavailable)?;
            self.buf.clear();
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        self.copy.finish().await.map_err(unavailable)?;
        Ok(())
    }
}

/// Inserts one key's row of a snapshot run, under `id` or the next one, and returns its id.
async fn insert_key_row(
    conn: &mut sqlx::PgConnection,
    id: Option<i64>,
    board: &BoardId,
    key: &SnapshotKey,
    run: i64,
) -> Result<i64> {
    super::insert_key_row!(
        "INSERT INTO rankd_snapshots
           (id, board, window_name, period, scope, seq, members, run_id, version, expire_ms)
         VALUES (COALESCE($1, nextval(pg_get_serial_sequence('rankd_snapshots', 'id'))),
                 $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING id",
        conn,
        id,
        board,
        key,
        run
    )
}

impl PgStore {
    /// Writes a snapshot run of one board: a row per key, then every key's entries through one
    /// COPY, in one transaction (a run is whole or absent, so a rebuild can start from it once
    /// [`make_base`] found it to hold what the log implies). Returns the run's id; `None` when
    /// there were no keys.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn write_snapshots(
        &self,
        board: &BoardId,
        keys: &[KeySnapshot],
    ) -> Result<Option<i64>> {
        if keys.is_empty() {
            return Ok(None);
        }
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        let (run,): (i64,) =
            sqlx::query_as("SELECT nextval(pg_get_serial_sequence('rankd_snapshots', 'id'))")
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        let mut ids = Vec::with_capacity(keys.len());
        for snap in keys {
            let id = insert_key_row(&mut tx, None, board, &snap.key, run).await?;
            ids.push(id.to_string());
        }
        let mut copy = EntryCopy::start(&mut tx).await?;
        for (snap, id) in keys.iter().zip(&ids) {
            for e in &snap.entries {
                copy.push(id, e).await?;
            }
        }
        copy.finish().await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(run))
    }

    /// Snapshots a board while it is read: entries go into one COPY as the engine reads them from
    /// Redis, and the keys' rows follow once the read proved to be at one point of the board's log.
    /// `None` (and nothing written) when the board changed during the read.
    ///
    /// # Errors
    /// [`Error::Unavailable`]; what [`Engine::stream_snapshot`] returns.
    pub async fn snapshot_streamed(
        &self,
        engine: &Engine,
        board: &BoardId,
    ) -> Result<Option<Written>> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SnapChunk>(4);
        let read = engine.stream_snapshot(board, tx);
        let write = async {
            let mut txn = self.pool().begin().await.map_err(unavailable)?;
            let mut copy = EntryCopy::start(&mut txn).await?;
            let mut ids: Vec<String> = Vec::new();
            while let Some(chunk) = rx.recv().await {
                // Ids come from the sequence over another connection: this one is busy copying.
                while ids.len() <= chunk.key {
                    ids.push(self.next_snapshot_id().await?.to_string());
                }
                let id = &ids[chunk.key];
                for e in &chunk.entries {
                    copy.push(id, e).await?;
                }
            }
            copy.finish().await?;
            Ok::<_, Error>((txn, ids))
        };
        let (read, write) = tokio::join!(read, write);
        let (Some(keys), (mut txn, ids)) = (read?, write?) else {
            // Dropping the transaction rolls the copied rows back.
            return Ok(None);
        };
        let mut ids: Vec<i64> = ids.iter().filter_map(|i| i.parse().ok()).collect();
        while ids.len() < keys.len() {
            ids.push(self.next_snapshot_id().await?);
        }
        let Some(&run) = ids.first() else {
            return Ok(Some(Written::default()));
        };
        for (k, &id) in keys.iter().zip(&ids) {
            insert_key_row(&mut txn, Some(id), board, k, run).await?;
        }
        txn.commit().await.map_err(unavailable)?;
        Ok(Some(Written {
            run: Some(run),
            // Every chunk of every key was read at one point.
            seq: keys.first().map(|k| k.seq),
            keys: keys.len(),
            entries: keys.iter().map(|k| k.members as usize).sum(),
        }))
    }

    async fn next_snapshot_id(&self) -> Result<i64> {
        let (id,): (i64,) =
            sqlx::query_as("SELECT nextval(pg_get_serial_sequence('rankd_snapshots', 'id'))")
                .fetch_one(self.pool())
                .await
                .map_err(unavailable)?;
        Ok(id)
    }

    /// Deletes snapshots taken more than `keep_days` days ago.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn prune_snapshots(&self, keep_days: u32) -> Result<u64> {
        // Entries first, in the same transaction: they hold no foreign key (see migrations/).
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        sqlx::query(
            "DELETE FROM rankd_snapshot_entries WHERE snapshot_id IN
               (SELECT id FROM rankd_snapshots WHERE taken_at < now() - make_interval(days => $1))",
        )
        .bind(keep_days as i32)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let r = sqlx::query(
            "DELETE FROM rankd_snapshots WHERE taken_at < now() - make_interval(days => $1)",
        )
        .bind(keep_days as i32)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(r.rows_affected())
    }

    /// How many seconds ago the latest snapshot was taken; `None` when the store holds none.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn last_snapshot_age_secs(&self) -> Result<Option<i64>> {
        let (age,): (Option<i64>,) = sqlx::query_as(
            "SELECT EXTRACT(EPOCH FROM now() - max(taken_at))::bigint FROM rankd_snapshots",
        )
        .fetch_one(self.pool())
        .await
        .map_err(unavailable)?;
        Ok(age)
    }

    /// A raw COPY of rows shaped like snapshot entries, for the benchmark's twin.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn raw_copy(&self, table: &str, rows: &[SnapEntry]) -> Result<u64> {
        let mut copy = self
            .pool()
            .copy_in_raw(&format!(
                "COPY {table} (snapshot_id, rank, member, score) FROM STDIN"
            ))
            .await
            .map_err(unavailable)?;
        let mut buf = String::new();
        for e in rows {
            let _ = write!(buf, "0\t{}\t", e.rank);
            copy_text(&mut buf, &e.member);
            let _ = writeln!(buf, "\t{:?}", e.score);
            if buf.len() > COPY_BUFFER {
                copy.send(buf.as_bytes()).await.map_err(unavailable)?;
                buf.clear();
            }
        }
        copy.send(buf.as_bytes()).await.map_err(unavailable)?;
        copy.finish().await.map_err(unavailable)
    }
}

/// Snapshots every key of `board` (or of every board).
///
/// # Errors
/// When Redis or Postgres cannot be reached.
pub async fn snapshot(
    engine: &Engine,
    store: &dyn Store,
    board: Option<&BoardId>,
) -> Result<SnapshotReport> {
    let boards = match board {
        Some(b) => vec![b.clone()],
        None => engine
            .boards()
            .await?
            .into_iter()
            .map(|b| b.board)
            .collect(),
    };
    let mut report = SnapshotReport::default();
    for b in boards {
        let started = Instant::now();
        // Written while read where the store can; else (or when the board changed during that
        // read) read whole, then written.
        let written = match store.snapshot_streamed(engine, &b).await? {
            Some(w) => w,
            None => {
                let keys = match engine.snapshot_board(&b).await {
                    Ok(keys) => keys,
                    // This board, this time (it kept changing, or Redis is out of reach): the
                    // other boards are still taken.
                    Err(Error::Unavailable(e)) => {
                        tracing::warn!(board = %b, error = %e, "snapshot skipped");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                Written {
                    run: store.write_snapshots(&b, &keys).await?,
                    seq: at_one_point(&keys).map(|(seq, _)| seq),
                    keys: keys.len(),
                    entries: keys.iter().map(|k| k.entries.len()).sum::<usize>(),
                }
            }
        };
        let base = match (written.run, written.seq) {
            (Some(run), Some(seq)) => match make_base(engine, store, &b, run, seq).await {
                Ok(base) => base,
                Err(e) => {
                    tracing::warn!(board = %b, error = %e, "snapshot not checked against the stored log; kept as history, not as a rebuild base");
                    false
                }
            },
            _ => false,
        };
        report.keys += written.keys;
        report.entries += written.entries;
        report.bases += usize::from(base);
        tracing::info!(board = %b, keys = written.keys, entries = written.entries, base, ms = started.elapsed().as_millis() as u64, "snapshot taken");
    }
    Ok(report)
}

/// Whether a snapshot run holds what the stored log implies at its point.
enum Verdict {
    /// Every key, member and stored score as the log implies.
    Holds,
    /// The store does not hold every operation up to the run's point yet (or holds operations
    /// Redis numbered again aside), so the log does not say yet what the board was there.
    NotStored,
    /// The first difference found.
    Differs(String),
}

/// Makes `board`'s snapshot run `run`, read at `seq` of the board's log, a rebuild base when it
/// holds what the stored log implies there. A run holds what Redis held, and Redis may hold what no
/// stored operation implies (a score written into it directly, a fault): a rebuild starting from
/// such a run would bring it back. So the log up to `seq` is worked out on a scratch engine
/// ([`Engine::scratch`]; nothing reaches Redis), from the latest base before the run (itself
/// checked so) and the operations after it, at the cost of one rebuild of the board in rankd's
/// memory; and every key of the run is compared with it, member by member, by the stored score a
/// restore would write. A run that differs, or whose operations are not all stored yet, stays
/// history. Returns whether the run became a base.
///
/// # Errors
/// When the store cannot be reached, or the stored log does not replay.
pub async fn make_base(
    engine: &Engine,
    store: &dyn Store,
    board: &BoardId,
    run: i64,
    seq: u64,
) -> Result<bool> {
    match verdict(engine, store, board, run, seq).await? {
        Verdict::Holds => {
            store.mark_base(board, run).await?;
            Ok(true)
        }
        Verdict::NotStored => {
            tracing::debug!(%board, seq, "snapshot taken before the store held every operation up to it; kept as history, not as a rebuild base");
            Ok(false)
        }
        Verdict::Differs(first) => {
            tracing::error!(%board, seq, first_difference = %first, "Redis holds this board otherwise than its stored log implies; the snapshot is kept as history, not as a rebuild base (`rankd admin verify` compares the board with its log)");
            Ok(false)
        }
    }
}

async fn verdict(
    engine: &Engine,
    store: &dyn Store,
    board: &BoardId,
    run: i64,
    seq: u64,
) -> Result<Verdict> {
    if store.diverged(board).await? {
        return Ok(Verdict::NotStored);
    }
    // No event ids, from the base nor from the log: duplicates do not show in a snapshot.
    let base = store.restore_base(board, seq, i64::MAX).await?;
    let from = base.as_ref().map_or(0, |b| b.seq);
    // Redis numbers a board's operations one after another: every number up to seq is stored, or
    // the log does not say yet what Redis held there.
    if store.ops_count(board, from, seq).await? != seq.saturating_sub(from) {
        return Ok(Verdict::NotStored);
    }
    // Scores only: without event ids the scratch board holds its members, not an id per event
    // since the base (the log holds accepted events only, so each applies either way).
    let ops = store.op_pages(board, from, seq).without_event_ids();
    let scratch = engine.scratch().await?;
    match base {
        Some(base) => scratch.restore(board, base, ops).await?,
        None => scratch.replay(board, ops).await?,
    };
    let key = |window, period: &str, scope: Option<&str>| {
        format!("{window} {period} {}", scope.unwrap_or("-"))
    };
    let mut implied: BTreeMap<String, BTreeMap<String, f64>> = scratch
        .snapshot_board(board)
        .await?
        .into_iter()
        .map(|k| {
            let name = key(k.key.window, &k.key.period, k.key.scope.as_deref());
            (
                name,
                k.entries
                    .into_iter()
                    .map(|e| (e.member, e.stored))
                    .collect(),
            )
        })
        .collect();
    let now = engine.now_ms();
    for k in store.run_keys(board, run).await? {
        // Gone by now, from the scratch engine too.
        if k.expire_ms.is_some_and(|at| at <= now) {
            continue;
        }
        let name = key(k.window, &k.period, k.scope.as_deref());
        let mut held = BTreeMap::new();
        let mut chunks = (k.entries)();
        while let Some(chunk) = chunks.recv().await {
            held.extend(chunk?);
        }
        let Some(want) = implied.remove(&name) else {
            return Ok(Verdict::Differs(format!(
                "{name}: {} members in the snapshot, none in the log",
                held.len()
            )));
        };
        if let Some(m) = held
            .keys()
            .chain(want.keys())
            .find(|m| held.get(*m) != want.get(*m))
        {
            return Ok(Verdict::Differs(format!(
                "{name} {m}: {:?} in the snapshot, {:?} in the log",
                held.get(m),
                want.get(m)
            )));
        }
    }
    Ok(match implied.into_iter().next() {
        Some((name, want)) => Verdict::Differs(format!(
            "{name}: {} members in the log, none in the snapshot",
            want.len()
        )),
        None => Verdict::Holds,
    })
}

/// The lease a snapshot run holds while it runs, periodic or `rankd admin snapshot` alike: two runs
/// at once would each write every key.
pub const RUN_LEASE: &str = "snapshot-run";

/// How long a snapshot run's lease lasts without renewal. A run renews it every quarter of this
/// while it works ([`renewing`]), however long one board takes, so the lease lapses this long after
/// a run that died (a server killed mid-run): the next run, on that server's next start too, waits
/// no longer than that.
pub const RUN_LEASE_MS: i64 = 20 * 1000;

/// Runs `work`, renewing `holder`'s [`RUN_LEASE`] every quarter of [`RUN_LEASE_MS`] meanwhile.
pub async fn renewing<T>(
    store: &dyn Store,
    holder: &str,
    work: impl std::future::Future<Output = T>,
) -> T {
    let renew = async {
        let every = std::time::Duration::from_millis((RUN_LEASE_MS / 4) as u64);
        loop {
            tokio::time::sleep(every).await;
            match store.try_lease(RUN_LEASE, holder, RUN_LEASE_MS).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("another snapshot run took the lease over while this one ran")
                }
                Err(e) => tracing::debug!(error = %e, "could not renew the snapshot run lease"),
            }
        }
    };
    tokio::select! {
        r = work => r,
        () = renew => unreachable!("the renewal loop never ends"),
    }
}

/// [`RUN_LEASE`], held: renew it as the run goes, and release it when the run ends.
#[derive(Debug)]
pub struct RunLease {
    holder: String,
}

impl RunLease {
    /// Claims the run lease for `holder`; `None` while another run holds it.
    ///
    /// # Errors
    /// When the store cannot be reached.
    pub async fn claim(store: &dyn Store, holder: &str) -> Result<Option<Self>> {
        Ok(store
            .try_lease(RUN_LEASE, holder, RUN_LEASE_MS)
            .await?
            .then(|| Self {
                holder: holder.to_owned(),
            }))
    }

    /// Extends the lease by [`RUN_LEASE_MS`] from now.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached, or another run took the lease
    /// over (this one went [`RUN_LEASE_MS`] without renewing it).
    pub async fn renew(&self, store: &dyn Store) -> Result<()> {
        if store
            .try_lease(RUN_LEASE, &self.holder, RUN_LEASE_MS)
            .await?
        {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "another snapshot run took the lease over".into(),
            ))
        }
    }

    /// Gives the lease up.
    ///
    /// # Errors
    /// When the store cannot be reached (the lease then lapses after [`RUN_LEASE_MS`]).
    pub async fn release(self, store: &dyn Store) -> Result<()> {
        store.release_lease(RUN_LEASE, &self.holder).await
    }
}

/// Snapshots `boards` one after another under a claimed [`RunLease`], renewing it after each board.
///
/// # Errors
/// As [`snapshot`], and when the lease cannot be renewed.
pub async fn snapshot_leased(
    engine: &Engine,
    store: &dyn Store,
    lease: &RunLease,
    boards: &[BoardId],
) -> Result<SnapshotReport> {
    let mut report = SnapshotReport::default();
    for b in boards {
        let r = snapshot(engine, store, Some(b)).await?;
        report.keys += r.keys;
        report.entries += r.entries;
        report.bases += r.bases;
        lease.renew(store).await?;
    }
    Ok(report)
}

/// A periodic snapshot, taken by whichever instance holds the snapshot lease (any store one server
/// owns needs none), and skipped while another run (`rankd admin snapshot`) holds [`RUN_LEASE`].
///
/// # Errors
/// When Redis or the store cannot be reached.
pub async fn periodic(
    engine: &Engine,
    store: &dyn Store,
    holder: &str,
    keep_days: u32,
) -> Result<Option<SnapshotReport>> {
    // The lease outlives one run comfortably; the holder renews it at its next run.
    if !store.single_server() && !store.try_lease("snapshots", holder, 30 * 60 * 1000).await? {
        return Ok(None);
    }
    let Some(lease) = RunLease::claim(store, holder).await? else {
        tracing::info!("another snapshot run is in progress; this periodic snapshot is skipped");
        return Ok(None);
    };
    let boards: Vec<BoardId> = match engine.boards().await {
        Ok(boards) => boards.into_iter().map(|b| b.board).collect(),
        Err(e) => {
            let _ = lease.release(store).await;
            return Err(e);
        }
    };
    let r = renewing(
        store,
        holder,
        snapshot_leased(engine, store, &lease, &boards),
    )
    .await;
    let released = lease.release(store).await;
    let r = r?;
    released?;
    store.prune_snapshots(keep_days).await?;
    Ok(Some(r))
}
