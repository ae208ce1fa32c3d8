//! Measuring: a workload's sides run in alternating rounds, timed per operation, with the CPU Redis,
//! rankd and the client spent; Redis memory per member.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use fred::prelude::{Client, ClientLike, SortedSetsInterface};
use hdrhistogram::Histogram;
use rankd::backend::embedded::EmbeddedExecutor;
use rankd::backend::instrumented::Instrumented;
use rankd::backend::Executor;
use rankd::board::{BoardDef, BoardId};
use rankd::config::Config;
use rankd::engine::{Engine, EngineConfig, Submit, SystemClock};
use rankd::window::{Period, Window};
use serde::Serialize;

use crate::client::{cmd, get_req, HttpConn};
use crate::fixtures::{member, score_of, zadd_bulk, Fixture};
use crate::report::{size_label, thousands, Cell, Figure, Row};
use crate::sides::{Kind, Side, Work};
use crate::thin::Thin;
use crate::{Bench, OP_TIMEOUT, PAGE_LIMIT, PAGE_OFFSET, SCOPE, TOP};

async fn memory_usage(c: &Client, key: &str) -> Result<u64> {
    let v: Option<u64> = c
        .custom(
            cmd("MEMORY"),
            vec![
                "USAGE".to_owned(),
                key.to_owned(),
                "SAMPLES".into(),
                "0".into(),
            ],
        )
        .await?;
    Ok(v.unwrap_or(0))
}

/// What one side did in one or more rounds.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) ops: u64,
    errors: u64,
    pub(crate) first_error: Option<String>,
    elapsed: Duration,
    pub(crate) hist: Histogram<u64>,
    /// CPU spent meanwhile, seconds.
    cpu: Cpu,
    /// Redis's own accounting of the commands run meanwhile.
    cmds: CmdStats,
}

impl Sample {
    pub(crate) fn new() -> Self {
        Self {
            ops: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            hist: Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds"),
            cpu: Cpu::default(),
            cmds: CmdStats::default(),
        }
    }

    /// Adds another sample's operations, errors and latencies (not its time, CPU or commands).
    pub(crate) fn add_counts(&mut self, o: &Sample) {
        self.ops += o.ops;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
        self.hist.add(&o.hist).expect("histograms share bounds");
    }

    pub(crate) fn merge(&mut self, o: Sample) {
        self.ops += o.ops;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.elapsed += o.elapsed;
        self.hist.add(&o.hist).expect("histograms share bounds");
        self.cpu.redis += o.cpu.redis;
        self.cpu.server += o.cpu.server;
        self.cpu.client += o.cpu.client;
        self.cmds.add(o.cmds);
    }

    pub(crate) fn figure(&self, units: u64, unit: &'static str) -> Figure {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |ns: u64| ns as f64 / 1e6;
        Figure {
            rate: self.ops as f64 * units as f64 / secs,
            unit,
            ops: self.ops,
            errors: self.errors,
            p50_ms: ms(self.hist.value_at_quantile(0.5)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            max_ms: ms(self.hist.max()),
            first_error: self.first_error.clone(),
            cpu_us: {
                let per = |secs: f64| secs * 1e6 / self.ops.max(1) as f64;
                Cpu {
                    redis: per(self.cpu.redis),
                    server: per(self.cpu.server),
                    client: per(self.cpu.client),
                }
            },
            cmds: self.cmds.per_event(self.ops * units),
        }
    }
}

/// What `INFO commandstats` says Redis did, summed: µs and calls of scripts (EVAL, EVALSHA, their
/// read-only forms, FCALL), and of every other command but those of the harness' own probes. Redis 7
/// counts the commands a script runs both in the script's time and under their own names, so when
/// scripts ran, their time is the whole cost and the other commands' calls are their `redis.call`s.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CmdStats {
    pub(crate) script_usec: u64,
    pub(crate) script_calls: u64,
    pub(crate) other_usec: u64,
    pub(crate) other_calls: u64,
}

/// Redis CPU per event by [`CmdStats`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CmdFigure {
    /// µs of Redis CPU per event: the scripts' time when any ran, else the commands'.
    pub(crate) us_per_event: f64,
    /// Commands per event other than the scripts themselves: inside scripts, the `redis.call`s.
    pub(crate) calls_per_event: f64,
    /// Script calls per event.
    pub(crate) scripts_per_event: f64,
}

impl CmdStats {
    fn add(&mut self, o: CmdStats) {
        self.script_usec += o.script_usec;
        self.script_calls += o.script_calls;
        self.other_usec += o.other_usec;
        self.other_calls += o.other_calls;
    }

    pub(crate) fn minus(self, o: CmdStats) -> CmdStats {
        CmdStats {
            script_usec: self.script_usec.saturating_sub(o.script_usec),
            script_calls: self.script_calls.saturating_sub(o.script_calls),
            other_usec: self.other_usec.saturating_sub(o.other_usec),
            other_calls: self.other_calls.saturating_sub(o.other_calls),
        }
    }

    pub(crate) fn per_event(self, events: u64) -> CmdFigure {
        let e = events.max(1) as f64;
        // A script's time holds the commands it calls, which Redis also counts under their own
        // names; a side that runs no scripts may still see a few of rankd's background ones.
        // The larger sum is the side's own work either way.
        let usec = self.script_usec.max(self.other_usec);
        CmdFigure {
            us_per_event: usec as f64 / e,
            calls_per_event: self.other_calls as f64 / e,
            scripts_per_event: self.script_calls as f64 / e,
        }
    }

    /// Reads the sums from the text of `INFO commandstats`.
    pub(crate) fn parse(info: &str) -> CmdStats {
        let mut s = CmdStats::default();
        for line in info.lines() {
            let Some((name, fields)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |f: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(f))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let (calls, usec) = (field("calls="), field("usec="));
            let base = name.split('|').next().unwrap_or(name);
            match base {
                "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
                    s.script_calls += calls;
                    s.script_usec += usec;
                }
                // The harness' probes and the clients' connection set-up, not the workload.
                "info" | "config" | "client" | "hello" | "ping" | "select" | "auth" | "command"
                | "script" => {}
                _ => {
                    s.other_calls += calls;
                    s.other_usec += usec;
                }
            }
        }
        s
    }
}

pub(crate) async fn cmdstats(c: &Client) -> CmdStats {
    let info: String = c
        .custom(cmd("INFO"), vec!["commandstats"])
        .await
        .unwrap_or_default();
    CmdStats::parse(&info)
}

/// CPU time of Redis' main thread, of rankd's threads (its server runtime, the embedded store) and
/// of the load tool's client threads.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Cpu {
    pub(crate) redis: f64,
    pub(crate) server: f64,
    pub(crate) client: f64,
}

impl Cpu {
    pub(crate) fn minus(self, o: Cpu) -> Cpu {
        Cpu {
            redis: (self.redis - o.redis).max(0.0),
            server: (self.server - o.server).max(0.0),
            client: (self.client - o.client).max(0.0),
        }
    }
}

/// Seconds of CPU per thread-name group of this process, from /proc/self/task (clock ticks of 10 ms).
fn thread_cpu() -> (f64, f64) {
    let mut server = 0.0;
    let mut client = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0.0, 0.0);
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // Fields after the command name: state is field 3; utime and stime are fields 14 and 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let secs = (ticks(11) + ticks(12)) / 100.0;
        let comm = comm.trim();
        if comm.starts_with("rankd-server")
            || comm.starts_with("rankd-embedded")
            || comm.starts_with("thin-server")
        {
            server += secs;
        } else if comm.starts_with("load-client") {
            client += secs;
        }
    }
    (server, client)
}

async fn redis_cpu(c: &Client) -> f64 {
    let info: String = c.custom(cmd("INFO"), vec!["cpu"]).await.unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    match (
        field("used_cpu_user_main_thread:"),
        field("used_cpu_sys_main_thread:"),
    ) {
        (Some(u), Some(s)) => u + s,
        _ => field("used_cpu_user:").unwrap_or(0.0) + field("used_cpu_sys:").unwrap_or(0.0),
    }
}

pub(crate) async fn cpu_now(c: &Client) -> Cpu {
    let (server, client) = thread_cpu();
    Cpu {
        redis: redis_cpu(c).await,
        server,
        client,
    }
}

/// Runs every side at once for `dur` (or `max_ops` operations in all, whichever comes first).
async fn measure_sides(sides: Vec<Box<dyn Side>>, dur: Duration, max_ops: u64) -> Sample {
    let (_, each, wall) = run_sides(sides, dur, max_ops).await;
    let mut total = Sample::new();
    for s in each {
        total.merge(s);
    }
    total.elapsed = wall;
    total
}

/// [`measure_sides`], answering each side's own sample and the sides themselves, so that their
/// connections serve the next round too (a side whose operation timed out is not answered: its
/// connection may still hold the late answer); the longest side's time is the wall time.
pub(crate) async fn run_sides(
    sides: Vec<Box<dyn Side>>,
    dur: Duration,
    max_ops: u64,
) -> (Vec<Box<dyn Side>>, Vec<Sample>, Duration) {
    let n = sides.len() as u64;
    let per_worker = max_ops.div_ceil(n.max(1)).max(1);
    let barrier = Arc::new(tokio::sync::Barrier::new(sides.len()));
    let mut tasks = Vec::new();
    for mut side in sides {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Sample::new();
            let mut usable = true;
            barrier.wait().await;
            let start = Instant::now();
            while s.ops + s.errors < per_worker && start.elapsed() < dur {
                let t = Instant::now();
                match tokio::time::timeout(OP_TIMEOUT, side.op()).await {
                    Ok(Ok(())) => {
                        let ns = t.elapsed().as_nanos().max(1) as u64;
                        s.hist.saturating_record(ns);
                        s.ops += 1;
                    }
                    Ok(Err(e)) => {
                        s.errors += 1;
                        s.first_error.get_or_insert(e);
                    }
                    Err(_) => {
                        s.errors += 1;
                        s.first_error.get_or_insert("timed out".into());
                        // The connection may hold a late answer: this worker stops.
                        usable = false;
                        break;
                    }
                }
                if s.errors >= 100 {
                    break;
                }
            }
            s.elapsed = start.elapsed();
            (usable.then_some(side), s)
        }));
    }
    let mut kept = Vec::new();
    let mut each = Vec::new();
    let mut wall = Duration::ZERO;
    for t in tasks {
        match t.await {
            Ok((side, s)) => {
                wall = wall.max(s.elapsed);
                kept.extend(side);
                each.push(s);
            }
            Err(e) => {
                let mut s = Sample::new();
                s.errors += 1;
                s.first_error = Some(format!("worker panicked: {e}"));
                each.push(s);
            }
        }
    }
    (kept, each, wall)
}

impl Bench {
    /// [`measure_sides`], with the CPU Redis, rankd and the clients spent meanwhile.
    pub(crate) async fn measure(&self, sides: Vec<Box<dyn Side>>, dur: Duration) -> Sample {
        let cmds = cmdstats(self.admin()).await;
        let before = cpu_now(self.admin()).await;
        let mut s = measure_sides(sides, dur, self.plan.max_ops).await;
        s.cpu = cpu_now(self.admin()).await.minus(before);
        s.cmds = cmdstats(self.admin()).await.minus(cmds);
        s
    }

    /// [`Bench::measure`] of sides whose connections serve the next round too: answers them back,
    /// with each side's own sample beside the whole.
    pub(crate) async fn measure_kept(
        &self,
        sides: Vec<Box<dyn Side>>,
        dur: Duration,
    ) -> (Vec<Box<dyn Side>>, Vec<Sample>, Sample) {
        let cmds = cmdstats(self.admin()).await;
        let before = cpu_now(self.admin()).await;
        let (kept, each, wall) = run_sides(sides, dur, self.plan.max_ops).await;
        let mut total = Sample::new();
        for s in &each {
            total.add_counts(s);
        }
        total.elapsed = wall;
        total.cpu = cpu_now(self.admin()).await.minus(before);
        total.cmds = cmdstats(self.admin()).await.minus(cmds);
        (kept, each, total)
    }

    /// Checks once that both sides answer and agree, before measuring (`thin`: the thin server that
    /// is the twin).
    async fn check(&self, kind: Kind, fx: &Arc<Fixture>, thin: Option<SocketAddr>) -> Result<()> {
        let mut conn = HttpConn::connect(self.server).await?;
        let probe = member(fx.n / 2);
        let b = &fx.main;
        let c = self.admin();
        let body = |r: &[u8]| serde_json::from_slice::<serde_json::Value>(r).unwrap_or_default();
        match kind {
            Kind::Rank | Kind::RankScript | Kind::RankThin => {
                let req = get_req(&format!("/v1/boards/{b}/members/{probe}"));
                let (st, r) = conn.send(&req).await.map_err(|e| anyhow!(e))?;
                let v = body(r);
                let raw: Option<i64> = c.zrevrank(fx.zset.as_str(), probe.as_str(), false).await?;
                let want = raw.map(|r| r + 1);
                if st != 200 || v["rank"].as_i64() != want {
                    bail!("member rank: rankd answered {st} {v}, ZREVRANK {raw:?}");
                }
                if let Some(addr) = thin {
                    let mut t = HttpConn::connect(addr).await?;
                    let (st, r) = t.send(&req).await.map_err(|e| anyhow!(e))?;
                    let v = body(r);
                    if st != 200 || v["rank"].as_i64() != want {
                        bail!("member rank: the thin server answered {st} {v}, ZREVRANK {raw:?}");
                    }
                }
            }
            Kind::Top => {
                let (st, r) = conn
                    .send(&get_req(&format!("/v1/boards/{b}/top?limit={TOP}")))
                    .await
                    .map_err(|e| anyhow!(e))?;
                let v = body(r);
                let raw: Vec<String> = c
                    .zrevrange(fx.zset.as_str(), 0, TOP as i64 - 1, false)
                    .await?;
                let got: Vec<String> = v["entries"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e["member"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if st != 200 || got != raw {
                    bail!("top: rankd answered {st} {got:?}, ZREVRANGE {raw:?}");
                }
            }
            Kind::Page => {
                let (st, r) = conn
                    .send(&get_req(&format!(
                        "/v1/boards/{b}/entries?offset={PAGE_OFFSET}&limit={PAGE_LIMIT}"
                    )))
                    .await
                    .map_err(|e| anyhow!(e))?;
                let v = body(r);
                let raw: Vec<String> = c
                    .zrevrange(
                        fx.zset.as_str(),
                        PAGE_OFFSET as i64,
                        (PAGE_OFFSET + PAGE_LIMIT) as i64 - 1,
                        false,
                    )
                    .await?;
                let got = v["entries"].as_array().map_or(0, Vec::len);
                if st != 200 || got != raw.len() {
                    bail!(
                        "page: rankd answered {st} with {got} entries, ZREVRANGE {}",
                        raw.len()
                    );
                }
            }
            _ => {
                // One operation each way must succeed.
                let work = Arc::new(Work {
                    kind,
                    fx: fx.clone(),
                });
                let mut h = self
                    .http_sides(&work, 999, 1)
                    .await?
                    .pop()
                    .expect("one side");
                h.op()
                    .await
                    .map_err(|e| anyhow!("{}: rankd: {e}", kind.id()))?;
                let mut r = self
                    .twin_sides(thin, &work, 999, 1)
                    .await?
                    .pop()
                    .expect("one side");
                r.op()
                    .await
                    .map_err(|e| anyhow!("{}: raw twin: {e}", kind.id()))?;
            }
        }
        Ok(())
    }

    /// Both sides of one workload at `conns` connections each, alternating, after a warm-up of each.
    pub(crate) async fn compare(&self, kind: Kind, fx: &Arc<Fixture>, conns: usize) -> Result<Row> {
        self.check_cancel()?;
        let thin = if kind.twin_is_http() {
            let read = fx.standing.clone().context("no captured read_members")?;
            let c = &self.server_config;
            let url = c.redis_url.as_deref().context("no Redis URL")?;
            Some(
                Thin::start(
                    &self.thin_rt,
                    url,
                    c.redis_pool_size,
                    c.read_timeout,
                    fx.main.as_str(),
                    read,
                )
                .await?,
            )
        } else {
            None
        };
        let twin_at = thin.as_ref().map(|t| t.addr);
        self.check(kind, fx, twin_at).await?;
        let work = Arc::new(Work {
            kind,
            fx: fx.clone(),
        });
        let p = &self.plan;
        let mut http = Sample::new();
        let mut raw = Sample::new();
        if !p.warmup.is_zero() {
            self.measure(self.twin_sides(twin_at, &work, 7, conns).await?, p.warmup)
                .await;
            self.measure(self.http_sides(&work, 7, conns).await?, p.warmup)
                .await;
        }
        for round in 0..p.rounds as u64 {
            self.check_cancel()?;
            if round % 2 == 0 {
                raw.merge(
                    self.measure(
                        self.twin_sides(twin_at, &work, round, conns).await?,
                        p.duration,
                    )
                    .await,
                );
                http.merge(
                    self.measure(self.http_sides(&work, round, conns).await?, p.duration)
                        .await,
                );
            } else {
                http.merge(
                    self.measure(self.http_sides(&work, round, conns).await?, p.duration)
                        .await,
                );
                raw.merge(
                    self.measure(
                        self.twin_sides(twin_at, &work, round, conns).await?,
                        p.duration,
                    )
                    .await,
                );
            }
        }
        let row = Row::new(
            kind.id(),
            kind.label(),
            fx.n,
            Some(conns),
            Cell::Load(http.figure(kind.units(), kind.unit())),
            kind.twin(),
            Cell::Load(raw.figure(kind.units(), kind.unit())),
        );
        eprintln!(
            "load: {:<48} {:>5}  rankd {:>18}  twin {:>18}  {:>5}  CPU µs/op (Redis/rankd/client) rankd {} twin {}",
            kind.label(),
            size_label(fx.n),
            row.rankd.main(),
            row.twin.main(),
            row.ratio
                .map_or_else(String::new, |r| format!("{:.0}%", r * 100.0)),
            row.rankd.cpu(),
            row.twin.cpu()
        );
        Ok(row)
    }

    /// Issue 4: submit and member rank in-process, the embedded engine beside the Redis backend.
    pub(crate) async fn in_process(&self, fx: &Arc<Fixture>, config: &Config) -> Result<Vec<Row>> {
        let p = &self.plan;
        let redis = rankd::serve::build_engine(config, Arc::new(SystemClock)).await?;
        let mut emb_config = config.clone();
        emb_config.redis_url = None;
        // No durable store on either side: the Redis backend here has none either (durability has
        // its own benchmark, bench/durability.rs), and nothing is written to disk.
        emb_config.data_dir = None;
        emb_config.database_url = None;
        let embedded = match rankd::serve::build_engine(&emb_config, Arc::new(SystemClock)).await {
            Ok(e) => Some(e),
            Err(why) => {
                // build_engine does not build the embedded engine yet: wire it as it would.
                let clock: Arc<dyn rankd::engine::Clock> = Arc::new(SystemClock);
                let exec: Arc<dyn Executor> = Arc::new(Instrumented::new(Arc::new(
                    EmbeddedExecutor::new(clock.clone()),
                )));
                match Engine::new(exec, self.keys.clone(), clock, EngineConfig::default()).await {
                    Ok(e) => Some(Arc::new(e)),
                    Err(e) => {
                        eprintln!("load: the embedded engine is not available ({why}; {e}); its rows stay empty");
                        None
                    }
                }
            }
        };
        if let Some(e) = &embedded {
            // The same board, loaded through the embedded engine's own write path.
            let t = Instant::now();
            let def = BoardDef {
                windows: vec![Window::All, Window::Weekly],
                ..BoardDef::default()
            };
            e.put_board(&fx.main, def).await?;
            let scope = [SCOPE.to_owned()];
            let mut i = 0;
            while i < fx.n {
                self.check_cancel()?;
                let end = (i + rankd::engine::MAX_BATCH as u64).min(fx.n);
                let events = (i..end)
                    .map(|j| {
                        Submit::parse(
                            fx.main.as_str(),
                            &member(j),
                            score_of(j) as f64,
                            &scope,
                            None,
                            None,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                e.submit_batch(&events).await?;
                i = end;
            }
            eprintln!(
                "load: {} members loaded into the embedded engine in {:.1} s",
                thousands(fx.n as f64),
                t.elapsed().as_secs_f64()
            );
        }
        let mut rows = Vec::new();
        for kind in [Kind::Submit, Kind::Rank] {
            self.check_cancel()?;
            let work = Arc::new(Work {
                kind,
                fx: fx.clone(),
            });
            let mut r = Sample::new();
            let mut e = Sample::new();
            self.measure(self.engine_sides(&redis, &work, 7), p.warmup)
                .await;
            if let Some(emb) = &embedded {
                self.measure(self.engine_sides(emb, &work, 7), p.warmup)
                    .await;
            }
            for round in 0..p.rounds as u64 {
                r.merge(
                    self.measure(self.engine_sides(&redis, &work, round), p.duration)
                        .await,
                );
                if let Some(emb) = &embedded {
                    e.merge(
                        self.measure(self.engine_sides(emb, &work, round), p.duration)
                            .await,
                    );
                }
            }
            let label = match kind {
                Kind::Submit => "in-process submit (1 scope × 2 windows), embedded",
                _ => "in-process member rank, embedded",
            };
            let rankd = if embedded.is_some() {
                Cell::Load(e.figure(1, "ops/s"))
            } else {
                Cell::Missing {
                    why: "not yet measurable (no embedded executor)".into(),
                }
            };
            let row = Row::new(
                &format!("inproc-{}", kind.id()),
                label,
                fx.n,
                Some(p.conns),
                rankd,
                "the same Engine call on the Redis backend",
                Cell::Load(r.figure(1, "ops/s")),
            );
            eprintln!(
                "load: {:<48} {:>5}  embedded {:>18}  redis {:>18}",
                label,
                size_label(fx.n),
                row.rankd.main(),
                row.twin.main()
            );
            rows.push(row);
        }
        Ok(rows)
    }

    /// Redis memory per member: a board written through rankd's own write path (Engine batches,
    /// one window, no scope) against a bare sorted set of the same members and scores.
    pub(crate) async fn memory(&self, n: u64, main: &Fixture) -> Result<Vec<Row>> {
        let t = Instant::now();
        let c = self.admin();
        let board = BoardId::parse(&format!("mem-{}", size_label(n).to_lowercase()))?;
        self.setup.put_board(&board, BoardDef::default()).await?;
        let mut i = 0;
        while i < n {
            self.check_cancel()?;
            let end = (i + rankd::engine::MAX_BATCH as u64).min(n);
            let events = (i..end)
                .map(|j| {
                    Submit::parse(
                        board.as_str(),
                        &member(j),
                        score_of(j) as f64,
                        &[],
                        None,
                        None,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.setup.submit_batch(&events).await?;
            i = end;
        }
        let now = self.setup.now_ms();
        let zset = self
            .keys
            .leaderboard(&board, &Period::containing(Window::All, now)?, None)
            .zset;
        let card: u64 = c.zcard(zset.as_str()).await?;
        if card != n {
            bail!("the memory board holds {card} members, not {n}");
        }
        let mut rankd_bytes = 0;
        for k in [
            zset.clone(),
            self.keys.definition(&board),
            self.keys.index(&board),
        ] {
            rankd_bytes += memory_usage(c, &k).await?;
        }
        let bare = format!("{}bare", self.prefix);
        zadd_bulk(&self.clients, &bare, n).await?;
        let bare_bytes = memory_usage(c, &bare).await?;
        let mut main_bytes = 0;
        for k in main.main_keys.iter().cloned().chain([
            self.keys.definition(&main.main),
            self.keys.index(&main.main),
        ]) {
            main_bytes += memory_usage(c, &k).await?;
        }
        let _: i64 = c.custom(cmd("UNLINK"), vec![bare]).await?;
        eprintln!(
            "load: memory measured in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let per = |b: u64, m: u64| b as f64 / m as f64;
        Ok(vec![
            Row::new(
                "memory",
                "Redis memory per member (1 window, no scope; written through the engine)",
                n,
                None,
                Cell::Value {
                    value: per(rankd_bytes, n),
                    unit: "B",
                },
                "a bare sorted set of the same members (ZADD)",
                Cell::Value {
                    value: per(bare_bytes, n),
                    unit: "B",
                },
            ),
            Row::new(
                "memory-main",
                "Redis memory per member, board of 1 scope × 2 windows (4 keys)",
                main.n,
                None,
                Cell::Value {
                    value: per(main_bytes, main.n),
                    unit: "B",
                },
                "a bare sorted set of the same members (ZADD)",
                Cell::Value {
                    value: per(bare_bytes, n),
                    unit: "B",
                },
            ),
        ])
    }
}
