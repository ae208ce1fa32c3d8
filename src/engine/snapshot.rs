//! Reading every key of a board consistently, for snapshots (and the rebuilds that start from
//! them).

use super::reply::{as_array, as_f64, as_str, as_u64, decode_stored, unavailable};
use super::{scripts, Engine};
use crate::backend::{Call, Reply};
use crate::board::BoardId;
use crate::error::{Error, Result};
use crate::keys::BoardKey;
use crate::window::Window;

/// Entries read per call while a key is dumped in chunks.
const CHUNK: usize = 25_000;
/// Chunked reads tried before falling back (of the whole board, then of each key on its own).
const CHUNKED_TRIES: usize = 3;

/// Most entries a board may hold in all for a snapshot to read it in one atomic call when it never
/// stays quiet for a read in chunks: a call of this many holds Redis (or the embedded engine) for
/// tens of milliseconds, and its reply stays far below the embedded Lua memory limit.
const AT_ONCE: usize = 100_000;

/// One member's row in a key snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapEntry {
    /// Its rank, in the board's rank mode.
    pub rank: u64,
    /// The member.
    pub member: String,
    /// Its score (the value, without the tie-break tick).
    pub score: f64,
    /// The score as the sorted set holds it (the value with the tick folded in, on boards that
    /// break ties by who came first; the value itself otherwise): what a restore writes back.
    pub stored: f64,
}

/// Which key a snapshot holds, and the point of its board's log it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotKey {
    /// The window.
    pub window: Window,
    /// The period id (`all` for the all-time window).
    pub period: String,
    /// The scope; `None` for the global board.
    pub scope: Option<String>,
    /// The board's sequence number the snapshot is consistent at.
    pub seq: u64,
    /// The board definition's version at that point.
    pub version: String,
    /// When the key expires (Unix ms); `None` when it never does.
    pub expire_ms: Option<i64>,
    /// Its members when read.
    pub members: u64,
}

/// One leaderboard key's standing at a point of its board's log.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySnapshot {
    /// The key, and when it was read.
    pub key: SnapshotKey,
    /// Best first.
    pub entries: Vec<SnapEntry>,
}

/// Whether a board's key snapshots were all read at one point of its log: then they, plus the
/// operations after that point, are exactly the board (what a rebuild may start from). The sequence
/// number moves with every logged write, and only engines with a durable store take snapshots: all
/// their writes are logged.
pub fn at_one_point(keys: &[KeySnapshot]) -> Option<(u64, &str)> {
    let first = keys.first()?;
    keys.iter()
        .all(|k| k.key.seq == first.key.seq && k.key.version == first.key.version)
        .then_some((first.key.seq, first.key.version.as_str()))
}

/// Entries of one key of a streamed snapshot, in rank order: `key` indexes the run's keys, in the
/// order they are first sent.
#[derive(Debug)]
pub struct SnapChunk {
    /// Which key of the run.
    pub key: usize,
    /// The next entries of that key.
    pub entries: Vec<SnapEntry>,
}

/// A live key of a board, as the snapshot reads it.
struct Target {
    key: BoardKey,
    window: Window,
    period: String,
    scope: Option<String>,
    bits: u32,
}

impl Engine {
    /// Reads every live key of a board with ranks, in chunks that do not hold Redis for long.
    ///
    /// The whole board is read at one point of its log when it stays quiet for the read (the same
    /// sequence number in every chunk of every key), so that the snapshot can seed a rebuild. A board
    /// that keeps changing is read key by key instead: each key still at one point of the log (a key
    /// that keeps changing is read in one atomic call, which holds Redis for as long as the key takes
    /// to read), though not all keys at the same one.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`], [`Error::Unavailable`].
    pub async fn snapshot_board(&self, board: &BoardId) -> Result<Vec<KeySnapshot>> {
        let d = self.definition(board).await?;
        let (order, mode) = (d.def.order.as_str(), d.def.rank_mode.as_str());
        for _ in 0..CHUNKED_TRIES {
            let targets = self.snapshot_targets(board).await?;
            let mut out = Vec::with_capacity(targets.len());
            for t in &targets {
                match self.read_chunked(board, order, mode, t).await? {
                    Some(k) => out.push(k),
                    None => break,
                }
            }
            if out.len() == targets.len()
                && (out.is_empty() || at_one_point(&out).is_some())
                && self.listed_again(board, &targets).await?
            {
                return Ok(out);
            }
        }
        let targets = self.snapshot_targets(board).await?;
        // A board that never stays quiet for a read in chunks, read whole in one atomic call when
        // it is small enough that the call holds Redis briefly: at one point, so still a base.
        if let Some(out) = self.read_at_once(board, order, mode, &targets).await? {
            if self.listed_again(board, &targets).await? {
                return Ok(out);
            }
        }
        let mut out = Vec::with_capacity(targets.len());
        for t in &targets {
            let mut taken = None;
            for _ in 0..CHUNKED_TRIES {
                taken = self.read_chunked(board, order, mode, t).await?;
                if taken.is_some() {
                    break;
                }
            }
            out.push(match taken {
                Some(k) => k,
                None => {
                    let reply = self
                        .exec
                        .eval(self.snapshot_call(board, order, mode, t, 0, -1))
                        .await
                        .map_err(unavailable)?;
                    let c = parse(&reply, t.bits)?;
                    KeySnapshot {
                        key: t.key(c.seq, c.version, c.expire_ms, c.entries.len() as u64),
                        entries: c.entries,
                    }
                }
            });
        }
        // Keys read at different points are history, not a base. Every key at one point, with a
        // key created meanwhile that the read missed, would pass for a base: not offered at all.
        if !out.is_empty()
            && at_one_point(&out).is_some()
            && !self.listed_again(board, &targets).await?
        {
            return Err(Error::Unavailable(format!(
                "snapshot of {board}: keys were created during the read; taken again next time"
            )));
        }
        Ok(out)
    }

    /// Reads every live key of a board in chunks and sends them as they come, for a store to write
    /// while the rest is read. Returns each key's account when every chunk of every key was read at
    /// one point of the board's log; `None` when the board changed during the read (or the receiver
    /// went away), and then what was sent must be thrown away.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`], [`Error::Unavailable`].
    pub async fn stream_snapshot(
        &self,
        board: &BoardId,
        tx: tokio::sync::mpsc::Sender<SnapChunk>,
    ) -> Result<Option<Vec<SnapshotKey>>> {
        let targets = self.snapshot_targets(board).await?;
        let d = self.definition(board).await?;
        let (order, mode) = (d.def.order.as_str(), d.def.rank_mode.as_str());
        let mut point = None;
        let mut out = Vec::with_capacity(targets.len());
        let tx = &tx;
        for (key, t) in targets.iter().enumerate() {
            let sent = self
                .read_key(board, order, mode, t, &mut point, |entries| async move {
                    tx.send(SnapChunk { key, entries }).await.is_ok()
                })
                .await?;
            match sent {
                Some(k) => out.push(k),
                None => return Ok(None),
            }
        }
        if !self.listed_again(board, &targets).await? {
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Whether the board's live keys are still `targets`. Every key read at one point is not yet
    /// the board at that point: an event between the listing and the reads may have created a key
    /// the reads never saw (a new scope, a new period), and that key exists still, or the listing
    /// differs for another reason; either way the read is not offered as one point.
    async fn listed_again(&self, board: &BoardId, targets: &[Target]) -> Result<bool> {
        let mut now: Vec<String> = self
            .snapshot_targets(board)
            .await?
            .into_iter()
            .map(|t| t.key.zset)
            .collect();
        let mut then: Vec<&str> = targets.iter().map(|t| t.key.zset.as_str()).collect();
        now.sort_unstable();
        then.sort_unstable();
        Ok(now.iter().map(String::as_str).eq(then))
    }

    /// The live keys of a board, as a snapshot reads them.
    async fn snapshot_targets(&self, board: &BoardId) -> Result<Vec<Target>> {
        let d = self.definition(board).await?;
        let now = self.now_ms();
        let mut targets = Vec::new();
        for z in self.live_zsets(board, now).await? {
            let (Some((key, window)), Some((_, period, scope))) = (
                self.keys.from_zset(board, &z),
                self.keys.describe(board, &z),
            ) else {
                continue;
            };
            targets.push(Target {
                key,
                window,
                period,
                scope,
                bits: d.def.tick_bits(window),
            });
        }
        Ok(targets)
    }

    fn snapshot_call(
        &self,
        board: &BoardId,
        order: &str,
        mode: &str,
        t: &Target,
        first: usize,
        count: i64,
    ) -> Call {
        Call {
            script: &scripts::SNAPSHOT_KEY,
            keys: vec![
                self.keys.definition(board),
                self.keys.sequence(board),
                t.key.zset.clone(),
                t.key.distinct_values.clone(),
                self.keys.index(board),
            ],
            args: vec![
                order.into(),
                mode.into(),
                t.bits.to_string(),
                first.to_string(),
                count.to_string(),
            ],
        }
    }

    /// Every key of `targets` in one atomic call (lua/snapshot_board.lua), so all at one point of
    /// the board's log; `None` when they hold more than [`AT_ONCE`] entries in all (nothing is
    /// read then) or the board is gone.
    async fn read_at_once(
        &self,
        board: &BoardId,
        order: &str,
        mode: &str,
        targets: &[Target],
    ) -> Result<Option<Vec<KeySnapshot>>> {
        if targets.is_empty() {
            return Ok(None);
        }
        let mut keys = vec![
            self.keys.definition(board),
            self.keys.sequence(board),
            self.keys.index(board),
        ];
        let mut args = vec![order.to_owned(), mode.to_owned(), AT_ONCE.to_string()];
        for t in targets {
            keys.extend([t.key.zset.clone(), t.key.distinct_values.clone()]);
            args.push(t.bits.to_string());
        }
        let reply = self
            .exec
            .eval(Call {
                script: &scripts::SNAPSHOT_BOARD,
                keys,
                args,
            })
            .await
            .map_err(unavailable)?;
        let per_key = as_array(&reply)
            .ok_or_else(|| Error::Backend(format!("unexpected snapshot_board reply: {reply:?}")))?;
        if per_key.len() != targets.len() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(targets.len());
        for (t, r) in targets.iter().zip(per_key) {
            let c = parse(r, t.bits)?;
            out.push(KeySnapshot {
                key: t.key(c.seq, c.version, c.expire_ms, c.entries.len() as u64),
                entries: c.entries,
            });
        }
        Ok(Some(out))
    }

    /// One key in chunks; `None` when the board changed between its chunks.
    async fn read_chunked(
        &self,
        board: &BoardId,
        order: &str,
        mode: &str,
        t: &Target,
    ) -> Result<Option<KeySnapshot>> {
        let mut entries = Vec::new();
        let key = self
            .read_key(board, order, mode, t, &mut None, |chunk| {
                entries.extend(chunk);
                std::future::ready(true)
            })
            .await?;
        Ok(key.map(|key| KeySnapshot { key, entries }))
    }

    /// Reads one key in chunks that do not hold Redis for long, handing each chunk's entries to
    /// `sink` as it comes. Every chunk must be read at `point` (the board's sequence number and
    /// definition version; the first chunk read sets it when `None`). Returns the key's account;
    /// `None` when a chunk was read at another point (the board changed) or `sink` refused one.
    async fn read_key<F, Fut>(
        &self,
        board: &BoardId,
        order: &str,
        mode: &str,
        t: &Target,
        point: &mut Option<(u64, String)>,
        mut sink: F,
    ) -> Result<Option<SnapshotKey>>
    where
        F: FnMut(Vec<SnapEntry>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut first = 0;
        let mut expire_ms = None;
        loop {
            let reply = self
                .exec
                .eval(self.snapshot_call(board, order, mode, t, first, CHUNK as i64))
                .await
                .map_err(unavailable)?;
            let c = parse(&reply, t.bits)?;
            match point {
                None => *point = Some((c.seq, c.version.clone())),
                Some((seq, version)) if *seq == c.seq && *version == c.version => {}
                Some(_) => return Ok(None),
            }
            if first == 0 {
                expire_ms = c.expire_ms;
            }
            first += c.entries.len();
            let done = c.entries.is_empty() || first as u64 >= c.total;
            if !c.entries.is_empty() && !sink(c.entries).await {
                return Ok(None);
            }
            if done {
                break;
            }
        }
        let (seq, version) = point.clone().unwrap_or_default();
        Ok(Some(t.key(seq, version, expire_ms, first as u64)))
    }
}

impl Target {
    fn key(&self, seq: u64, version: String, expire_ms: Option<i64>, members: u64) -> SnapshotKey {
        SnapshotKey {
            window: self.window,
            period: self.period.clone(),
            scope: self.scope.clone(),
            seq,
            version,
            expire_ms,
            members,
        }
    }
}

/// One snapshot_key reply.
struct Chunk {
    seq: u64,
    total: u64,
    entries: Vec<SnapEntry>,
    version: String,
    expire_ms: Option<i64>,
}

fn parse(reply: &Reply, bits: u32) -> Result<Chunk> {
    let bad = || Error::Backend(format!("unexpected snapshot_key reply: {reply:?}"));
    let items = as_array(reply).ok_or_else(bad)?;
    let [seq, total, Reply::Array(flat), rest @ ..] = items else {
        return Err(bad());
    };
    let (version, expire_ms) = match rest {
        [v, e] => {
            let e = as_f64(e).ok_or_else(bad)?;
            (
                as_str(v).ok_or_else(bad)?.to_owned(),
                e.is_finite().then_some(e as i64),
            )
        }
        // The board is gone.
        _ => (String::new(), None),
    };
    let mut entries = Vec::with_capacity(flat.len() / 3);
    for e in flat.chunks(3) {
        let [m, s, r] = e else { return Err(bad()) };
        let stored = as_f64(s).ok_or_else(bad)?;
        entries.push(SnapEntry {
            rank: as_u64(r).ok_or_else(bad)?,
            member: as_str(m).ok_or_else(bad)?.to_owned(),
            score: decode_stored(stored, bits),
            stored,
        });
    }
    Ok(Chunk {
        seq: as_u64(seq).ok_or_else(bad)?,
        total: as_u64(total).ok_or_else(bad)?,
        entries,
        version,
        expire_ms,
    })
}
