//! The rows of the leaderboard page cache (README "Caches"): a dashboard's mix of reads and writes
//! against the same mix with the cache off, a cached top 20 against `/healthz` and against an
//! uncached top 20, and what a write below every cached page costs Redis with one page registered
//! against none.
//!
//! The cache-off side is a second server of the same build in this process, on rankd's runtime,
//! with `cache_ttl_leaderboard` 0 (`RANKD_CACHE_TTL_LEADERBOARD_SECS=0`): same Redis, same boards,
//! same clients, its own pool of Redis connections. Every comparison runs in alternating rounds whose
//! connections stay open from round to round.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use async_trait::async_trait;
use fred::prelude::{Client, ClientLike, LuaInterface, SortedSetsInterface, Value};
use futures::future::BoxFuture;
use rankd::backend::Call;
use rankd::board::{BoardDef, BoardId, Scope};
use rankd::config::Config;
use rankd::window::{Period, Window};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::client::{cmd, e2s, get_req, post_req, HttpConn};
use crate::fixtures::{index_keys, member, score_of, zadd_bulk, Fixture, Rng};
use crate::measuring::Sample;
use crate::report::{size_label, thousands, Cell, Row};
use crate::sides::{Kind, Side, Work};
use crate::{start_server, Bench, TOP};

/// Scopes of the dashboard board: its 50 popular pages are their top 20s.
const SCOPES: u64 = 50;
/// Every 20th request of each connection of the mix is a write (5%).
const WRITE_EVERY: u64 = 20;
/// The lowest members of the main board the writes of the write row go to (at most).
const LOW_MEMBERS: u64 = 100_000;

/// The page cache's own figures over the measured rounds of a row (`/v1/stats/cache`, the
/// `leaderboard` type, of the server with the cache on), with the answers' `X-Rankd-Cache` counted
/// by the client beside them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CacheHits {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) bypasses: u64,
    /// hits × 100 ÷ (hits + misses), as the endpoint defines it.
    pub(crate) hit_rate_percentage: f64,
    /// Reads answered with `X-Rankd-Cache: hit`, and all reads, as the client saw them.
    pub(crate) header_hits: u64,
    pub(crate) reads: u64,
}

/// Zipf (s = 1) over `n` pages: the cumulative weights, the first page the most read.
fn zipf_cdf(n: u64) -> Vec<f64> {
    let w: Vec<f64> = (1..=n).map(|k| 1.0 / k as f64).collect();
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    w.iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect()
}

/// The dashboard board: its id, its global key and its scopes' keys.
struct Dashboard {
    board: BoardId,
    n: u64,
    scope_keys: Vec<String>,
}

/// Opens one group's connections for a round (its seeds).
type Opener<'a> = Box<dyn Fn(u64) -> BoxFuture<'a, Result<Vec<Box<dyn Side>>>> + Send + Sync + 'a>;

/// Counters a side set shares: reads made, and reads answered `hit`.
#[derive(Default)]
struct Counts {
    reads: AtomicU64,
    hits: AtomicU64,
}

/// One connection of the dashboard mix: 19 reads of a scope's top 20 (Zipf over the scopes), then a
/// write of one point to a member drawn from all of them, in its own scope.
struct MixSide {
    conn: HttpConn,
    board: String,
    n: u64,
    cdf: Arc<Vec<f64>>,
    rng: Rng,
    seq: u64,
    counts: Arc<Counts>,
}

#[async_trait]
impl Side for MixSide {
    async fn op(&mut self) -> Result<(), String> {
        self.seq += 1;
        let write = self.seq.is_multiple_of(WRITE_EVERY);
        let req = if write {
            let m = self.rng.below(self.n);
            let body = format!(
                r#"{{"member":"{}","value":1,"scopes":["c{}"]}}"#,
                member(m),
                m % SCOPES
            );
            post_req(
                &format!("/v1/boards/{}/scores", self.board),
                body.as_bytes(),
            )
        } else {
            let u = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            let k = self
                .cdf
                .partition_point(|&c| c < u)
                .min(SCOPES as usize - 1);
            get_req(&format!(
                "/v1/boards/{}/top?limit={TOP}&scope=c{k}",
                self.board
            ))
        };
        let (status, body) = self.conn.send(&req).await?;
        if status != 200 {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        if !write {
            self.counts.reads.fetch_add(1, Ordering::Relaxed);
            if self.conn.cache == Some("hit") {
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// One connection of the write row: rankd's own submit.lua call for one event (captured from the
/// engine), sent straight to Redis, the member drawn from the lowest of the board.
struct WriteSide {
    c: Client,
    call: Arc<(Call, usize)>,
    low: Arc<Vec<String>>,
    rng: Rng,
}

#[async_trait]
impl Side for WriteSide {
    async fn op(&mut self) -> Result<(), String> {
        let (call, at) = &*self.call;
        let mut args = call.args.clone();
        args[*at] = self.low[self.rng.below(self.low.len() as u64) as usize].clone();
        let _: Value = self
            .c
            .evalsha(call.script.sha1(), call.keys.clone(), args)
            .await
            .map_err(e2s)?;
        Ok(())
    }
}

/// GET `path` on `addr` once: the status, the body as JSON and `X-Rankd-Cache`.
async fn get_once(
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, serde_json::Value, Option<&'static str>)> {
    let mut c = HttpConn::connect(addr).await?;
    let (st, body) = c.send(&get_req(path)).await.map_err(|e| anyhow!(e))?;
    let v = serde_json::from_slice(body).unwrap_or_default();
    Ok((st, v, c.cache))
}

fn entry_members(v: &serde_json::Value) -> Vec<String> {
    v["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["member"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The leaderboard figures of `/v1/stats/cache` on `addr`.
async fn cache_stats(addr: SocketAddr) -> Result<(u64, u64, u64)> {
    let (st, v, _) = get_once(addr, "/v1/stats/cache").await?;
    let l = &v["caches"]["leaderboard"];
    let field = |f: &str| l[f].as_u64();
    match (st, field("hits"), field("misses"), field("bypasses")) {
        (200, Some(h), Some(m), Some(b)) => Ok((h, m, b)),
        _ => bail!("/v1/stats/cache answered {st} without leaderboard figures: {v}"),
    }
}

impl Bench {
    /// The cache rows wanted (`cache-write`, `cache-top`, `cache-mix`), at one size: the server
    /// with the cache on is rankd's own, the one with it off a second server started here.
    pub(crate) async fn caching(&self, fx: &Arc<Fixture>) -> Result<Vec<Row>> {
        self.check_cancel()?;
        let stop = CancellationToken::new();
        let mut servers = Vec::new();
        let result = async {
            if self.server_config.cache_ttl_leaderboard.is_zero() {
                bail!("the cache rows need the leaderboard cache on in the main server");
            }
            let off = Config {
                cache_ttl_leaderboard: Duration::ZERO,
                ..self.server_config.clone()
            };
            let (off, task) = start_server(&self.server_rt, off, stop.clone()).await?;
            servers.push(task);
            let mut rows = Vec::new();
            // The write row first: it needs the main board with no page registered.
            if self.plan.wants("cache-write") {
                rows.push(self.cache_write(fx).await?);
            }
            if self.plan.wants("cache-top") {
                rows.extend(self.cache_top(fx, off).await?);
            }
            if self.plan.wants("cache-mix") {
                let dash = self.load_dashboard(fx.n).await?;
                rows.push(self.cache_mix(&dash, off).await?);
            }
            Ok(rows)
        }
        .await;
        stop.cancel();
        for t in servers {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        result
    }

    /// A warm-up of every group in turn, each on connections of its own (none when the plan has
    /// no warm-up).
    async fn warm_up(&self, groups: &[Opener<'_>]) -> Result<()> {
        if !self.plan.warmup.is_zero() {
            for open in groups {
                self.measure_kept(open(7).await?, self.plan.warmup).await;
            }
        }
        Ok(())
    }

    /// Rounds of every group in turn, which goes first rotating from round to round, each on
    /// connections opened for its round (with the round's seeds, the same for every group): a
    /// keep-alive connection left idle while the other groups run would pass rankd's read timeout.
    async fn rotate(
        &self,
        groups: &[Opener<'_>],
        rounds: usize,
        dur: Duration,
    ) -> Result<Vec<Sample>> {
        let mut out: Vec<Sample> = groups.iter().map(|_| Sample::new()).collect();
        for round in 0..rounds {
            for i in 0..groups.len() {
                self.check_cancel()?;
                let at = (round + i) % groups.len();
                let (_, _, total) = self
                    .measure_kept(groups[at](round as u64).await?, dur)
                    .await;
                out[at].merge(total);
            }
        }
        Ok(out)
    }

    /// Registers a cached top 20 of the main board (a GET through the server with the cache on),
    /// or leaves none (that server's leaderboard cache of the board cleared, the board's cached depth
    /// and its cache hash removed); then checks the depth a write script would read.
    async fn set_registered(&self, fx: &Fixture, on: bool) -> Result<()> {
        let def = self.keys.definition(&fx.main);
        let c = self.admin();
        if on {
            let path = format!("/v1/boards/{}/top?limit={TOP}", fx.main);
            let (st, v, _) = get_once(self.server, &path).await?;
            if st != 200 {
                bail!("cache-write: GET {path} answered {st} {v}");
            }
        } else {
            let mut conn = HttpConn::connect(self.server).await?;
            let body = format!(r#"{{"caches":["leaderboard"],"board":"{}"}}"#, fx.main);
            let (st, b) = conn
                .send(&post_req("/v1/caches/clear", body.as_bytes()))
                .await
                .map_err(|e| anyhow!(e))?;
            if st != 200 {
                bail!(
                    "cache-write: POST /v1/caches/clear answered {st} {}",
                    String::from_utf8_lossy(b)
                );
            }
            let _: Value = c
                .custom(cmd("HDEL"), vec![def.clone(), "cd".to_owned()])
                .await?;
            let _: Value = c
                .custom(cmd("DEL"), vec![self.keys.cache_versions(&fx.main)])
                .await?;
        }
        self.check_registered(fx, on).await
    }

    /// The board's cached depth (the definition's `cd`) is 20 when `on`, else absent.
    async fn check_registered(&self, fx: &Fixture, on: bool) -> Result<()> {
        let def = self.keys.definition(&fx.main);
        let depth: Option<String> = self
            .admin()
            .custom(cmd("HGET"), vec![def, "cd".to_owned()])
            .await?;
        let want = on.then(|| TOP.to_string());
        if depth != want {
            bail!("cache-write: the board's cached depth is {depth:?}, not {want:?}");
        }
        Ok(())
    }

    /// What a write ranked far below every cached page costs Redis: rankd's submit.lua call for one
    /// event (captured from the engine), straight to Redis at `--conns` workers, each to a member
    /// among the board's lowest, with a cached top 20 registered against none, in alternating
    /// rounds (twice the rounds at half the length).
    async fn cache_write(&self, fx: &Arc<Fixture>) -> Result<Row> {
        let call = Arc::new(fx.submit.clone().context("no captured submit")?);
        let low_n = (fx.n / 2).clamp(1, LOW_MEMBERS);
        let low: Vec<String> = self
            .admin()
            .custom(
                cmd("ZRANGE"),
                vec![fx.zset.clone(), "0".to_owned(), (low_n - 1).to_string()],
            )
            .await?;
        let low = Arc::new(low);
        let sides = |seed: u64| -> Vec<Box<dyn Side>> {
            (0..self.plan.conns as u64)
                .map(|i| {
                    Box::new(WriteSide {
                        c: self.clients[i as usize % self.clients.len()].clone(),
                        call: call.clone(),
                        low: low.clone(),
                        rng: Rng::new(seed + i),
                    }) as Box<dyn Side>
                })
                .collect()
        };
        let p = &self.plan;
        let (mut none, mut cached) = (Sample::new(), Sample::new());
        let mut groups = [sides(0xc0), sides(0xc0)];
        for on in [false, true] {
            self.set_registered(fx, on).await?;
            let g = &mut groups[usize::from(on)];
            (*g, _, _) = self.measure_kept(std::mem::take(g), p.warmup).await;
        }
        for round in 0..p.rounds * 2 {
            for on in [round % 2 == 1, round % 2 == 0] {
                self.check_cancel()?;
                self.set_registered(fx, on).await?;
                let g = &mut groups[usize::from(on)];
                let n = g.len();
                let (kept, _, total) = self.measure_kept(std::mem::take(g), p.duration / 2).await;
                if kept.len() != n {
                    bail!("cache-write: {} of {n} workers timed out", n - kept.len());
                }
                // Nothing registered a page meanwhile (the warmer reads again only cached pages).
                self.check_registered(fx, on).await?;
                *g = kept;
                if on {
                    cached.merge(total);
                } else {
                    none.merge(total);
                }
            }
        }
        let row = Row::new(
            "cache-write",
            &format!(
                "single submit below every cached page: submit.lua for one event, a cached top 20 registered (members among the lowest {})",
                thousands(low_n as f64)
            ),
            fx.n,
            Some(p.conns),
            Cell::Load(cached.figure(1, "ops/s")),
            "the same calls, same members, no page registered (no cached depth on the board)",
            Cell::Load(none.figure(1, "ops/s")),
        );
        eprintln!(
            "load: {:<48} {:>5}  registered {:>18}  none {:>18}  Redis µs/event {:.2} / {:.2}  CPU µs/op (Redis/rankd/client) {} / {}",
            "write below the cached pages, page / none",
            size_label(fx.n),
            row.rankd.main(),
            row.twin.main(),
            row.rankd.load().map_or(f64::NAN, |f| f.cmds.us_per_event),
            row.twin.load().map_or(f64::NAN, |f| f.cmds.us_per_event),
            row.rankd.cpu(),
            row.twin.cpu()
        );
        Ok(row)
    }

    /// A cached top 20 against `/healthz` on the same server, and against the same top 20 on the
    /// server with the cache off (Redis per read), in the same rounds.
    async fn cache_top(&self, fx: &Arc<Fixture>, off: SocketAddr) -> Result<Vec<Row>> {
        let path = format!("/v1/boards/{}/top?limit={TOP}", fx.main);
        let raw: Vec<String> = self
            .admin()
            .zrevrange(fx.zset.as_str(), 0, TOP as i64 - 1, false)
            .await?;
        get_once(self.server, &path).await?;
        for (addr, want) in [(self.server, "hit"), (off, "bypass")] {
            let (st, v, mark) = get_once(addr, &path).await?;
            if st != 200 || entry_members(&v) != raw || mark != Some(want) {
                bail!(
                    "cache-top: {addr} answered {st} ({mark:?}, not {want}) {v}, ZREVRANGE {raw:?}"
                );
            }
        }
        let conns = self.plan.conns;
        let top = Arc::new(Work {
            kind: Kind::Top,
            fx: fx.clone(),
        });
        let health = Arc::new(Work {
            kind: Kind::Health,
            fx: fx.clone(),
        });
        let open = |addr: SocketAddr, work: Arc<Work>| -> Opener<'_> {
            Box::new(move |round| {
                let work = work.clone();
                Box::pin(async move { self.http_sides_to(addr, &work, round, conns).await })
            })
        };
        let groups = [
            open(self.server, top.clone()),
            open(self.server, health.clone()),
            open(off, top.clone()),
        ];
        self.warm_up(&groups).await?;
        let before = cache_stats(self.server).await?;
        let p = &self.plan;
        let mut s = self.rotate(&groups, p.rounds, p.duration).await?;
        let after = cache_stats(self.server).await?;
        let stats = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        let uncached = s.pop().expect("three groups");
        let health = s.pop().expect("three groups");
        let cached = s.pop().expect("three groups");
        let cached_fig = cached.figure(1, "ops/s");
        let mut row = Row::new(
            "cache-top",
            "top 20, cached (every answer a hit)",
            fx.n,
            Some(conns),
            Cell::Load(cached_fig.clone()),
            "GET /healthz on the same server, same connections",
            Cell::Load(health.figure(1, "ops/s")),
        );
        row.cache = Some(CacheHits {
            hits: stats.0,
            misses: stats.1,
            bypasses: stats.2,
            hit_rate_percentage: stats.0 as f64 * 100.0 / (stats.0 + stats.1).max(1) as f64,
            header_hits: 0,
            reads: cached.ops,
        });
        let redis = Row::new(
            "cache-top-redis",
            "top 20, cached, against uncached (Redis per read)",
            fx.n,
            Some(conns),
            Cell::Load(cached_fig),
            "the same GET to the same build with the cache off (RANKD_CACHE_TTL_LEADERBOARD_SECS=0)",
            Cell::Load(uncached.figure(1, "ops/s")),
        );
        for r in [&row, &redis] {
            eprintln!(
                "load: {:<48} {:>5}  rankd {:>18}  twin {:>18}  {:>5}  CPU µs/op (Redis/rankd/client) rankd {} twin {}",
                r.workload,
                size_label(fx.n),
                r.rankd.main(),
                r.twin.main(),
                r.ratio.map_or_else(String::new, |x| format!("{:.0}%", x * 100.0)),
                r.rankd.cpu(),
                r.twin.cpu()
            );
        }
        Ok(vec![row, redis])
    }

    /// The dashboard board: one all-time window, `n` members, each also in one of 50 scopes
    /// (`c<i mod 50>`), so each scope key holds n ÷ 50; loaded by pipelined ZADD and registered in the
    /// board's key index as the submit script would.
    async fn load_dashboard(&self, n: u64) -> Result<Dashboard> {
        let t = Instant::now();
        let board = BoardId::parse("dash")?;
        let def = BoardDef {
            windows: vec![Window::All],
            ..BoardDef::default()
        };
        self.setup.put_board(&board, def.clone()).await?;
        let period = Period::containing(Window::All, self.setup.now_ms())?;
        let expire = period.expires_at_ms(def.retention_periods);
        let global = self.keys.leaderboard(&board, &period, None).zset;
        zadd_bulk(&self.clients, &global, n).await?;
        let mut keys = vec![(global, expire)];
        let mut scope_keys = Vec::new();
        for k in 0..SCOPES {
            self.check_cancel()?;
            let scope = Scope::parse(&format!("c{k}"))?;
            let key = self.keys.leaderboard(&board, &period, Some(&scope)).zset;
            let pipe = self.admin().pipeline();
            let mut i = k;
            while i < n {
                let mut args: Vec<Value> = vec![key.as_str().into()];
                let mut m = 0;
                while i < n && m < 1000 {
                    args.push(Value::Integer(score_of(i)));
                    args.push(member(i).into());
                    i += SCOPES;
                    m += 1;
                }
                pipe.custom::<(), Value>(cmd("ZADD"), args).await?;
            }
            let _: Vec<Value> = pipe.all().await?;
            keys.push((key.clone(), expire));
            scope_keys.push(key);
        }
        index_keys(self.admin(), &self.keys.index(&board), &keys).await?;
        eprintln!(
            "load: dashboard board of {} members in {SCOPES} scopes loaded in {:.1} s",
            thousands(n as f64),
            t.elapsed().as_secs_f64()
        );
        Ok(Dashboard {
            board,
            n,
            scope_keys,
        })
    }

    /// The dashboard mix on the server with the cache on against the same mix, same seeds, on the
    /// server with it off: throughput of reads, and the hit rate the cache reports.
    async fn cache_mix(&self, dash: &Dashboard, off: SocketAddr) -> Result<Row> {
        // Both servers answer a scope's top 20 as Redis holds it; the second read on the cached
        // server is a hit, every read on the other a bypass.
        for (k, key) in [(0, &dash.scope_keys[0]), (7, &dash.scope_keys[7])] {
            let path = format!("/v1/boards/{}/top?limit={TOP}&scope=c{k}", dash.board);
            let raw: Vec<String> = self
                .admin()
                .zrevrange(key.as_str(), 0, TOP as i64 - 1, false)
                .await?;
            get_once(self.server, &path).await?;
            for (addr, want) in [(self.server, "hit"), (off, "bypass")] {
                let (st, v, mark) = get_once(addr, &path).await?;
                if st != 200 || entry_members(&v) != raw || mark != Some(want) {
                    bail!("cache-mix: {addr} answered {st} ({mark:?}, not {want}) {v}, ZREVRANGE {raw:?}");
                }
            }
        }
        let cdf = Arc::new(zipf_cdf(SCOPES));
        let conns = self.plan.conns;
        let (on_counts, off_counts) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
        let open = |addr: SocketAddr, counts: Arc<Counts>| -> Opener<'_> {
            let (cdf, board, n) = (cdf.clone(), dash.board.to_string(), dash.n);
            Box::new(move |round| {
                let (cdf, board, counts) = (cdf.clone(), board.clone(), counts.clone());
                Box::pin(async move {
                    let mut g: Vec<Box<dyn Side>> = Vec::new();
                    for i in 0..conns as u64 {
                        // The same seeds on both servers: the same pages and writes, in the same order.
                        g.push(Box::new(MixSide {
                            conn: HttpConn::connect(addr).await?,
                            board: board.clone(),
                            n,
                            cdf: cdf.clone(),
                            rng: Rng::new(0xda5_0000 + round * 10_000 + i),
                            seq: i,
                            counts: counts.clone(),
                        }));
                    }
                    Ok(g)
                })
            })
        };
        let groups = [
            open(self.server, on_counts.clone()),
            open(off, off_counts.clone()),
        ];
        self.warm_up(&groups).await?;
        // The counters and the cache's figures from the end of the warm-up.
        for c in [&on_counts, &off_counts] {
            c.reads.store(0, Ordering::Relaxed);
            c.hits.store(0, Ordering::Relaxed);
        }
        let before = cache_stats(self.server).await?;
        let p = &self.plan;
        let mut s = self.rotate(&groups, p.rounds, p.duration).await?;
        let after = cache_stats(self.server).await?;
        let (hits, misses, bypasses) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        let (off_s, on_s) = (s.pop().expect("two groups"), s.pop().expect("two groups"));
        // Reads per second: the mix's rate times the share of its requests that were reads.
        let reads = |sample: &Sample, c: &Counts| {
            let mut f = sample.figure(1, "reads/s");
            f.rate *= c.reads.load(Ordering::Relaxed) as f64 / sample.ops.max(1) as f64;
            f
        };
        let mut row = Row::new(
            "cache-mix",
            &format!(
                "dashboard mix: 95% top 20 of {SCOPES} scopes (Zipf), 5% writes over all members; reads/s"
            ),
            dash.n,
            Some(conns),
            Cell::Load(reads(&on_s, &on_counts)),
            "the same mix, same seeds, to the same build with the cache off (RANKD_CACHE_TTL_LEADERBOARD_SECS=0)",
            Cell::Load(reads(&off_s, &off_counts)),
        );
        row.cache = Some(CacheHits {
            hits,
            misses,
            bypasses,
            hit_rate_percentage: hits as f64 * 100.0 / (hits + misses).max(1) as f64,
            header_hits: on_counts.hits.load(Ordering::Relaxed),
            reads: on_counts.reads.load(Ordering::Relaxed),
        });
        let off_hits = off_counts.hits.load(Ordering::Relaxed);
        if off_hits > 0 {
            bail!("cache-mix: the server with the cache off answered {off_hits} hits");
        }
        eprintln!(
            "load: {:<48} {:>5}  on {:>18}  off {:>18}  {:>5}  hit rate {:.1}% ({hits} hits, {misses} misses, {bypasses} bypasses; headers {} of {} reads)  CPU µs/op (Redis/rankd/client) on {} off {}",
            "dashboard mix, cache on / off",
            size_label(dash.n),
            row.rankd.main(),
            row.twin.main(),
            row.ratio.map_or_else(String::new, |x| format!("{:.0}%", x * 100.0)),
            row.cache.map_or(0.0, |c| c.hit_rate_percentage),
            on_counts.hits.load(Ordering::Relaxed),
            on_counts.reads.load(Ordering::Relaxed),
            row.rankd.cpu(),
            row.twin.cpu()
        );
        Ok(row)
    }
}
