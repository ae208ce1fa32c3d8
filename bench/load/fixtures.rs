//! The boards under load: their members and scores, loaded fast, and rankd's own calls captured
//! for the raw twin.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use async_trait::async_trait;
use fred::prelude::{Client, ClientLike, LuaInterface, Value};
use rankd::backend::{BackendStats, Call, ExecError, Executor, Reply, Script};
use rankd::board::{BoardDef, BoardId, Member, Scope};
use rankd::engine::{Submit, View};
use rankd::window::{Period, Window};

use crate::client::{cmd, post_req};
use crate::report::{size_label, thousands};
use crate::{Bench, BATCH_EVENTS, SCOPE};

/// xorshift64*: the same seeds give both sides the same sequence of members.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(splitmix(seed) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Member `i` of every board.
pub(crate) fn member(i: u64) -> String {
    format!("u{i}")
}

/// Member `i` as `redis-benchmark -r` writes its `__rand_int__`: twelve digits, zero-padded.
pub(crate) fn padded_member(i: u64) -> String {
    format!("u{i:012}")
}

/// The least script that does a single submit's work on Redis: on each key, add the value to the
/// member's score and read its rank. The floor of what any submit script can cost (bench/README.md).
pub(crate) const LEAST_SCRIPT: &str = "\
local out = {}
for i = 1, #KEYS do
  out[i] = {redis.call('ZINCRBY', KEYS[i], ARGV[1], ARGV[2]), redis.call('ZREVRANK', KEYS[i], ARGV[2])}
end
return out
";

/// Member `i`'s score as loaded: integers below 10^9, spread by a hash.
pub(crate) fn score_of(i: u64) -> i64 {
    (splitmix(i ^ 0x5eed) % 1_000_000_000) as i64
}

/// Wraps the Redis executor and keeps the script calls the engine made, so that the raw twin sends
/// exactly the KEYS and ARGV rankd sends.
pub(crate) struct Recorder {
    inner: Arc<dyn Executor>,
    /// Every single call since the last `take_eval`.
    eval: Mutex<Vec<Call>>,
    many: Mutex<Option<Vec<Call>>>,
}

impl Recorder {
    pub(crate) fn new(inner: Arc<dyn Executor>) -> Self {
        Self {
            inner,
            eval: Mutex::new(Vec::new()),
            many: Mutex::new(None),
        }
    }

    /// The last single call of `script` since the last take (forgetting every other).
    fn take_eval(&self, script: &str) -> Option<Call> {
        let calls = std::mem::take(&mut *self.eval.lock().expect("recorder"));
        calls.into_iter().rev().find(|c| c.script.name() == script)
    }

    fn take_many(&self) -> Option<Vec<Call>> {
        self.many.lock().expect("recorder").take()
    }
}

#[async_trait]
impl Executor for Recorder {
    async fn load(&self, scripts: &[&'static Script]) -> Result<(), ExecError> {
        self.inner.load(scripts).await
    }

    async fn eval(&self, call: Call) -> Result<Reply, ExecError> {
        self.eval.lock().expect("recorder").push(call.clone());
        self.inner.eval(call).await
    }

    async fn eval_many(
        &self,
        calls: Vec<Call>,
    ) -> Result<Vec<Result<Reply, ExecError>>, ExecError> {
        *self.many.lock().expect("recorder") = Some(calls.clone());
        self.inner.eval_many(calls).await
    }

    async fn ping(&self) -> Result<(), ExecError> {
        self.inner.ping().await
    }

    async fn stats(&self) -> Result<BackendStats, ExecError> {
        self.inner.stats().await
    }
}

/// One size's boards, loaded.
pub(crate) struct Fixture {
    pub(crate) n: u64,
    /// One scope, two windows (all, weekly): a submit with its scope touches 4 keys.
    pub(crate) main: BoardId,
    /// The all-time global key of `main`: what the reads read.
    pub(crate) zset: String,
    /// Every leaderboard key of `main`.
    pub(crate) main_keys: Vec<String>,
    /// The submit rankd sends for member `u0`, and where the member sits in its ARGV.
    pub(crate) submit: Option<(Call, usize)>,
    /// The SHA1 of [`LEAST_SCRIPT`], loaded.
    pub(crate) least_sha: String,
    /// The `read_members` call rankd sends to read member `u0` alone, and where the member sits.
    pub(crate) standing: Option<(Call, usize)>,
    /// One window, no scope (issue 3's batch figure).
    batch: Option<BoardId>,
    pub(crate) batches: Vec<BatchReq>,
}

pub(crate) struct BatchReq {
    pub(crate) http: Vec<u8>,
    pub(crate) calls: Vec<Call>,
    /// The key every event of the batch lands in, and the events' members (each with value 1).
    pub(crate) key: String,
    pub(crate) members: Vec<String>,
}

/// Loads `n` members into `key` with pipelined ZADDs of 1000 members each.
pub(crate) async fn zadd_bulk(clients: &[Client], key: &str, n: u64) -> Result<()> {
    zadd_bulk_named(clients, key, n, member).await
}

/// [`zadd_bulk`] with members named by `name`.
pub(crate) async fn zadd_bulk_named(
    clients: &[Client],
    key: &str,
    n: u64,
    name: fn(u64) -> String,
) -> Result<()> {
    const PER_CMD: u64 = 1000;
    const PER_PIPE: u64 = 50;
    let par = clients.len().clamp(1, 2) as u64;
    let mut tasks = Vec::new();
    for t in 0..par {
        let c = clients[t as usize].clone();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut start = t * PER_CMD * PER_PIPE;
            while start < n {
                let end = (start + PER_CMD * PER_PIPE).min(n);
                let pipe = c.pipeline();
                let mut i = start;
                while i < end {
                    let stop = (i + PER_CMD).min(end);
                    let mut args: Vec<Value> = Vec::with_capacity(1 + 2 * (stop - i) as usize);
                    args.push(key.as_str().into());
                    for j in i..stop {
                        args.push(Value::Integer(score_of(j)));
                        args.push(name(j).into());
                    }
                    pipe.custom::<(), Value>(cmd("ZADD"), args).await?;
                    i = stop;
                }
                let _: Vec<Value> = pipe.all().await?;
                start += par * PER_CMD * PER_PIPE;
            }
            Ok::<(), fred::error::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Copies a loaded key (COPY, else a fresh load).
pub(crate) async fn copy_key(clients: &[Client], from: &str, to: &str, n: u64) -> Result<()> {
    let copied: Result<i64, _> = clients[0]
        .custom(cmd("COPY"), vec![from.to_owned(), to.to_owned()])
        .await;
    match copied {
        Ok(1) => Ok(()),
        _ => zadd_bulk(clients, to, n).await,
    }
}

/// Registers loaded keys in the board's key index as the submit script would, with their expiry.
pub(crate) async fn index_keys(
    c: &Client,
    index: &str,
    keys: &[(String, Option<i64>)],
) -> Result<()> {
    for (k, expire) in keys {
        let score = expire.map_or_else(|| "+inf".to_owned(), |e| e.to_string());
        let _: Value = c
            .custom(
                cmd("ZADD"),
                vec![index.to_owned(), score.clone(), k.clone()],
            )
            .await?;
        if let Some(e) = expire {
            let _: Value = c
                .custom(cmd("PEXPIREAT"), vec![k.clone(), e.to_string()])
                .await?;
        }
    }
    Ok(())
}

/// Unlinks every key under `prefix`; answers how many.
pub(crate) async fn unlink_prefix(c: &Client, prefix: &str) -> Result<u64> {
    let pattern = format!("{prefix}*");
    let mut cursor = "0".to_owned();
    let mut gone = 0u64;
    // SCAN visits every key once in a bounded number of steps; the bound here only guards a server
    // that never answers cursor 0.
    for _ in 0..10_000_000u64 {
        let v: Value = c
            .custom(
                cmd("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    pattern.clone(),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await?;
        let mut parts = v.into_array().into_iter();
        let next = parts
            .next()
            .and_then(|v| v.as_string())
            .ok_or_else(|| anyhow!("SCAN answered no cursor"))?;
        let keys: Vec<Value> = parts.next().map(|v| v.into_array()).unwrap_or_default();
        if !keys.is_empty() {
            let n: i64 = c.custom(cmd("UNLINK"), keys).await?;
            gone += n as u64;
        }
        if next == "0" {
            return Ok(gone);
        }
        cursor = next;
    }
    bail!("SCAN of {pattern} did not finish")
}

impl Bench {
    /// Defines `board` with the defaults and answers its keys with their expiry: with writes, two
    /// windows (all, weekly) and the global and scope `s1` key of each, the 4 keys a single submit
    /// touches; else the all-time global key alone.
    async fn define(
        &self,
        board: &BoardId,
        with_writes: bool,
        now: i64,
    ) -> Result<Vec<(String, Option<i64>)>> {
        let windows = if with_writes {
            vec![Window::All, Window::Weekly]
        } else {
            vec![Window::All]
        };
        let def = BoardDef {
            windows: windows.clone(),
            ..BoardDef::default()
        };
        self.setup.put_board(board, def.clone()).await?;
        let scope = Scope::parse(SCOPE)?;
        let mut keys: Vec<(String, Option<i64>)> = Vec::new();
        for &w in &windows {
            let period = Period::containing(w, now)?;
            let expire = period.expires_at_ms(def.retention_periods);
            let scopes: Vec<Option<&Scope>> = if with_writes {
                vec![None, Some(&scope)]
            } else {
                vec![None]
            };
            for s in scopes {
                keys.push((self.keys.leaderboard(board, &period, s).zset, expire));
            }
        }
        Ok(keys)
    }

    /// Loads the boards of one size.
    pub(crate) async fn load(&self, n: u64, with_writes: bool) -> Result<Fixture> {
        let t = Instant::now();
        let now = self.setup.now_ms();
        let tag = size_label(n).to_lowercase();
        let main = BoardId::parse(&format!("main-{tag}"))?;
        let keys = self.define(&main, with_writes, now).await?;
        let zset = keys[0].0.clone();
        zadd_bulk(&self.clients, &zset, n).await?;
        for (k, _) in &keys[1..] {
            copy_key(&self.clients, &zset, k, n).await?;
        }
        index_keys(self.admin(), &self.keys.index(&main), &keys).await?;
        let least_sha: String = self.admin().script_load(LEAST_SCRIPT).await?;
        let mut fx = Fixture {
            n,
            main: main.clone(),
            zset,
            main_keys: keys.iter().map(|(k, _)| k.clone()).collect(),
            submit: None,
            least_sha,
            standing: None,
            batch: None,
            batches: Vec::new(),
        };
        if with_writes {
            // The submit rankd sends, captured on its way to Redis.
            let ev = Submit::parse(main.as_str(), "u0", 1.0, &[SCOPE.to_owned()], None, None)?;
            let done = self.setup.submit(&ev).await?;
            if done.results.len() != 4 {
                bail!("the submit touched {} keys, not 4", done.results.len());
            }
            fx.submit = Some(self.captured("submit")?);
            // And the read of u0 alone (as one GET of a member, when no other read shares its call).
            self.setup
                .standing(&main, &View::all_time(), &Member::parse("u0")?)
                .await?;
            fx.standing = Some(self.captured("read_members")?);

            let batch = BoardId::parse(&format!("batch-{tag}"))?;
            self.setup.put_board(&batch, BoardDef::default()).await?;
            let period = Period::containing(Window::All, now)?;
            let bkey = self.keys.leaderboard(&batch, &period, None).zset;
            zadd_bulk(&self.clients, &bkey, n).await?;
            index_keys(
                self.admin(),
                &self.keys.index(&batch),
                &[(bkey.clone(), None)],
            )
            .await?;
            let mut rng = Rng::new(0xba7c);
            let count = if self.plan.quick { 4 } else { 16 };
            for _ in 0..count {
                let members: Vec<u64> = (0..BATCH_EVENTS).map(|_| rng.below(n)).collect();
                let events: Vec<Submit> = members
                    .iter()
                    .map(|&i| Submit::parse(batch.as_str(), &member(i), 1.0, &[], None, None))
                    .collect::<Result<_, _>>()?;
                let body = serde_json::json!({
                    "events": members.iter().map(|&i| serde_json::json!({
                        "board": batch.as_str(), "member": member(i), "value": 1
                    })).collect::<Vec<_>>()
                })
                .to_string();
                self.recorder.take_many();
                let out = self.setup.submit_batch(&events).await?;
                if out.accepted != BATCH_EVENTS as u64 {
                    bail!("a batch accepted {} of {BATCH_EVENTS}", out.accepted);
                }
                let calls = self
                    .recorder
                    .take_many()
                    .context("no batch calls captured")?;
                fx.batches.push(BatchReq {
                    http: post_req("/v1/scores/batch", body.as_bytes()),
                    calls,
                    key: bkey.clone(),
                    members: members.iter().map(|&i| member(i)).collect(),
                });
            }
            fx.batch = Some(batch);
        }
        eprintln!(
            "load: {} members loaded into {} key(s) in {:.1} s",
            thousands(n as f64),
            fx.main_keys.len() + usize::from(fx.batch.is_some()),
            t.elapsed().as_secs_f64()
        );
        Ok(fx)
    }

    /// The boards of the spread row: `boards` boards of `n` members each, shaped as the main board
    /// of a size (1 scope × 2 windows: every one of their 4 keys holds all `n` members), loaded
    /// the fast way: one key by pipelined ZADD, copied to every other.
    pub(crate) async fn load_spread(&self, boards: usize, n: u64) -> Result<Vec<Arc<Fixture>>> {
        let t = Instant::now();
        let now = self.setup.now_ms();
        let template = format!("{}spread-template", self.prefix);
        zadd_bulk(&self.clients, &template, n).await?;
        let mut out = Vec::with_capacity(boards);
        for b in 0..boards {
            self.check_cancel()?;
            let board = BoardId::parse(&format!("spread-{b}"))?;
            let keys = self.define(&board, true, now).await?;
            for (k, _) in &keys {
                copy_key(&self.clients, &template, k, n).await?;
            }
            index_keys(self.admin(), &self.keys.index(&board), &keys).await?;
            out.push(Arc::new(Fixture {
                n,
                main: board,
                zset: keys[0].0.clone(),
                main_keys: keys.iter().map(|(k, _)| k.clone()).collect(),
                submit: None,
                least_sha: String::new(),
                standing: None,
                batch: None,
                batches: Vec::new(),
            }));
        }
        let _: i64 = self.admin().custom(cmd("UNLINK"), vec![template]).await?;
        eprintln!(
            "load: {boards} boards of {} members loaded ({} keys) in {:.1} s",
            thousands(n as f64),
            boards * 4,
            t.elapsed().as_secs_f64()
        );
        Ok(out)
    }

    /// The last call of `script` the setup engine sent, and where member `u0` sits in its ARGV
    /// (found rather than assumed from the layout).
    fn captured(&self, script: &str) -> Result<(Call, usize)> {
        let call = self
            .recorder
            .take_eval(script)
            .with_context(|| format!("no {script} call was captured"))?;
        let at: Vec<usize> = (0..call.args.len())
            .filter(|&i| call.args[i] == "u0")
            .collect();
        let [at] = at[..] else {
            bail!(
                "the member u0 appears {} times in the ARGV of {script}",
                at.len()
            );
        };
        Ok((call, at))
    }
}
