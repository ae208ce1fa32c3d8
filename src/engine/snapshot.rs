//! Reading every key of a board consistently, for snapshots.

use super::{as_array, as_f64, as_str, as_u64, decode_stored, scripts, Engine};
use crate::backend::{Call, ExecError, Reply};
use crate::board::BoardId;
use crate::error::{Error, Result};
use crate::window::Window;

/// Entries read per call while a key is dumped in chunks.
const CHUNK: usize = 25_000;
/// Chunked dumps tried before one atomic dump of the key.
const CHUNKED_TRIES: usize = 3;

/// One leaderboard key's standing at a point of its board's log.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySnapshot {
    /// The window.
    pub window: Window,
    /// The period id (`all` for the all-time window).
    pub period: String,
    /// The scope; `None` for the global board.
    pub scope: Option<String>,
    /// The board's sequence number the snapshot is consistent at.
    pub seq: u64,
    /// (rank, member, score), best first.
    pub entries: Vec<(u64, String, f64)>,
}

impl Engine {
    /// Reads every live key of a board with ranks. Each key is read in chunks while the board stays
    /// quiet (the same sequence number before and after); a key that keeps changing is read in one
    /// atomic call instead, which holds Redis for as long as the key takes to read.
    ///
    /// # Errors
    /// [`Error::BoardNotFound`], [`Error::Unavailable`].
    pub async fn snapshot_board(&self, board: &BoardId) -> Result<Vec<KeySnapshot>> {
        let d = self.definition(board).await?;
        let now = self.now_ms();
        let mut out = Vec::new();
        for z in self.live_zsets(board, now).await? {
            let (Some((key, window)), Some((_, period, scope))) = (
                self.keys.from_zset(board, &z),
                self.keys.describe(board, &z),
            ) else {
                continue;
            };
            let bits = d.def.tick_bits(window);
            let call = |first: usize, count: i64| Call {
                script: &scripts::SNAPSHOT_KEY,
                keys: vec![
                    self.keys.definition(board),
                    self.keys.sequence(board),
                    key.zset.clone(),
                    key.distinct_values.clone(),
                ],
                args: vec![
                    d.def.order.as_str().into(),
                    d.def.rank_mode.as_str().into(),
                    bits.to_string(),
                    first.to_string(),
                    count.to_string(),
                ],
            };
            let mut taken = None;
            for _ in 0..CHUNKED_TRIES {
                let mut entries = Vec::new();
                let mut seqs = Vec::new();
                let mut first = 0;
                loop {
                    let reply = self
                        .exec
                        .eval(call(first, CHUNK as i64))
                        .await
                        .map_err(unavailable)?;
                    let (seq, total, chunk) = parse(&reply, bits)?;
                    seqs.push(seq);
                    first += chunk.len();
                    entries.extend(chunk);
                    if first as u64 >= total || first == 0 {
                        break;
                    }
                }
                if seqs.iter().all(|s| *s == seqs[0]) {
                    taken = Some((seqs[0], entries));
                    break;
                }
            }
            let (seq, entries) = match taken {
                Some(t) => t,
                None => {
                    let reply = self.exec.eval(call(0, -1)).await.map_err(unavailable)?;
                    let (seq, _, entries) = parse(&reply, bits)?;
                    (seq, entries)
                }
            };
            out.push(KeySnapshot {
                window,
                period,
                scope,
                seq,
                entries,
            });
        }
        Ok(out)
    }
}

fn unavailable(e: ExecError) -> Error {
    match e {
        ExecError::Unavailable(m) => Error::Unavailable(m),
        ExecError::Reply(m) => Error::Backend(m),
    }
}

type Chunk = (u64, u64, Vec<(u64, String, f64)>);

fn parse(reply: &Reply, bits: u32) -> Result<Chunk> {
    let bad = || Error::Backend(format!("unexpected snapshot_key reply: {reply:?}"));
    let [seq, total, Reply::Array(flat)] = as_array(reply).ok_or_else(bad)? else {
        return Err(bad());
    };
    let mut entries = Vec::with_capacity(flat.len() / 3);
    for e in flat.chunks(3) {
        let [m, s, r] = e else { return Err(bad()) };
        entries.push((
            as_u64(r).ok_or_else(bad)?,
            as_str(m).ok_or_else(bad)?.to_owned(),
            decode_stored(as_f64(s).ok_or_else(bad)?, bits),
        ));
    }
    Ok((
        as_u64(seq).ok_or_else(bad)?,
        as_u64(total).ok_or_else(bad)?,
        entries,
    ))
}
