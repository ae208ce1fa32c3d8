//! Load generators nobody here wrote, once per full run, in rows of their own: `wrk` (Debian's
//! package) against rankd beside `redis-benchmark` against the same Redis, at the same concurrency,
//! so that the harness' own client and twins are checked against tools of their own.
//!
//! - member rank: wrk sends `GET /v1/boards/{b}/members/u<random>`; redis-benchmark `ZREVRANK`.
//! - single submit: wrk posts a score (the single-submit body); redis-benchmark `EVALSHA` of the
//!   least script (fixtures.rs) on 4 keys.
//!
//! redis-benchmark can only draw a random number as `__rand_int__` (twelve digits, zero-padded), so
//! its rows run on keys of their own: a copy of the board's members named `u000000000042` and so on,
//! with the same scores, four keys of them, unlinked afterwards. Both tools run for a bounded time
//! (wrk) or count (redis-benchmark), each under a hard timeout; loopback only.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use fred::prelude::{ClientLike, LuaInterface, SortedSetsInterface, Value};

use crate::client::cmd;
use crate::fixtures::{copy_key, padded_member, zadd_bulk_named, Fixture};
use crate::measuring::{cmdstats, cpu_now, Cpu};
use crate::report::{Cell, Figure, Row};
use crate::{Bench, ADMIN_KEY, SCOPE};

/// The tools, each with the Debian package that has it.
pub(crate) const TOOLS: [(&str, &str); 2] = [("wrk", "wrk"), ("redis-benchmark", "redis-tools")];

/// What one run of a tool measured.
struct Run {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Run {
    fn figure(&self, cpu: Cpu, cmds: crate::measuring::CmdStats) -> Figure {
        let per = |s: f64| s * 1e6 / self.ops.max(1) as f64;
        Figure {
            rate: self.ops as f64 / self.secs.max(1e-9),
            unit: "ops/s",
            ops: self.ops,
            errors: self.errors,
            p50_ms: self.p50_ms,
            p99_ms: self.p99_ms,
            max_ms: self.max_ms,
            first_error: self.first_error.clone(),
            cpu_us: Cpu {
                redis: per(cpu.redis),
                server: per(cpu.server),
                // The tool's own CPU is another process's: not counted.
                client: f64::NAN,
            },
            cmds: cmds.per_event(self.ops),
        }
    }
}

/// Runs a tool to its end, or kills it past `limit`; answers its stdout.
async fn run_tool(name: &str, args: &[String], limit: Duration) -> Result<String> {
    let child = tokio::process::Command::new(name)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("{name} does not run (is its package installed?)"))?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("{name} ran past {} s; killed", limit.as_secs()))??;
    if !out.status.success() {
        bail!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The wrk script: random members, the bench's key, and one line of results wrk's `done` writes.
fn wrk_script(n: u64, request: &str) -> String {
    format!(
        r#"-- Written by the rankd load tool (bench/load/external.rs) for one run.
wrk.headers["Authorization"] = "Bearer {ADMIN_KEY}"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", 7919 * threads)
end
function init(args)
  math.randomseed(seed)
end
function request()
  local m = "u" .. math.random(0, {last})
  {request}
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RANKD-WRK %d %d %d %d %d %d %d %d %d %d\n", summary.requests,
    summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#,
        last = n.saturating_sub(1),
    )
}

fn parse_wrk(out: &str) -> Result<Run> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RANKD-WRK "))
        .with_context(|| format!("no results line in wrk's output: {out}"))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("wrk's results line")?;
    let [requests, duration_us, status, connect, read, write, timeout, p50, p99, max] = v[..]
    else {
        bail!("wrk's results line has {} fields: {line}", v.len());
    };
    let errors = (status + connect + read + write + timeout) as u64;
    Ok(Run {
        ops: requests as u64,
        errors,
        first_error: (errors > 0).then(|| {
            format!("wrk: {status} non-2xx answers, socket errors: {connect} connect, {read} read, {write} write, {timeout} timeout")
        }),
        secs: duration_us / 1e6,
        p50_ms: p50 / 1e3,
        p99_ms: p99 / 1e3,
        max_ms: max / 1e3,
    })
}

/// redis-benchmark's `--csv` line: "test","rps","avg","min","p50","p95","p99","max" (ms).
fn parse_redis_benchmark(out: &str, count: u64) -> Result<Run> {
    if let Some(e) = out
        .lines()
        .find(|l| l.contains("ERR") || l.contains("Error"))
    {
        bail!("redis-benchmark: {e}");
    }
    let line = out
        .lines()
        .rfind(|l| l.starts_with('"') && !l.starts_with("\"test\""))
        .with_context(|| format!("no results line in redis-benchmark's output: {out}"))?;
    let f: Vec<f64> = line
        .split("\",\"")
        .skip(1)
        .map(|v| v.trim_matches('"').parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("redis-benchmark's line: {line}"))?;
    let [rps, _avg, _min, p50, _p95, p99, max] = f[..] else {
        bail!("redis-benchmark's line has {} figures: {line}", f.len());
    };
    Ok(Run {
        ops: count,
        errors: 0,
        first_error: None,
        secs: count as f64 / rps.max(1e-9),
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
    })
}

/// `host`, `port` and database of a loopback `redis://` URL without credentials.
fn redis_target(url: &str) -> Result<(String, String, String)> {
    let rest = url
        .strip_prefix("redis://")
        .with_context(|| format!("redis-benchmark needs a redis:// URL, not {url}"))?;
    if rest.contains('@') {
        bail!("the external rows need a Redis without credentials in its URL");
    }
    let (addr, db) = rest.split_once('/').unwrap_or((rest, "0"));
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
    if !matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        bail!("the external rows run on loopback only, not against {host}");
    }
    let db = if db.is_empty() { "0" } else { db };
    Ok((host.to_owned(), port.to_owned(), db.to_owned()))
}

impl Bench {
    /// What a tool's run cost Redis and rankd, beside what it measured.
    async fn timed<F>(&self, f: F) -> Result<Figure>
    where
        F: std::future::Future<Output = Result<Run>>,
    {
        let c = self.admin();
        let cmds = cmdstats(c).await;
        let before = cpu_now(c).await;
        let run = f.await?;
        let cpu = cpu_now(c).await.minus(before);
        let cmds = cmdstats(c).await.minus(cmds);
        Ok(run.figure(cpu, cmds))
    }

    async fn wrk(&self, n: u64, request: &str, tag: &str) -> Result<Run> {
        let path = std::env::temp_dir().join(format!("rankd-wrk-{}-{tag}.lua", std::process::id()));
        std::fs::write(&path, wrk_script(n, request))?;
        let secs = (self.plan.duration.as_secs_f64() * 2.0).ceil().max(1.0) as u64;
        let args = [
            "-t".to_owned(),
            "2".to_owned(),
            "-c".to_owned(),
            self.plan.conns.max(2).to_string(),
            "-d".to_owned(),
            format!("{secs}s"),
            "--timeout".to_owned(),
            "10s".to_owned(),
            "-s".to_owned(),
            path.display().to_string(),
            format!("http://{}", self.server),
        ];
        let out = run_tool("wrk", &args, Duration::from_secs(secs + 30)).await;
        let _ = std::fs::remove_file(&path);
        parse_wrk(&out?)
    }

    async fn redis_benchmark(&self, n: u64, count: u64, command: &[&str]) -> Result<Run> {
        let url = self
            .server_config
            .redis_url
            .as_deref()
            .context("no Redis URL")?;
        let (host, port, db) = redis_target(url)?;
        let mut args: Vec<String> = [
            "-h",
            &host,
            "-p",
            &port,
            "--dbnum",
            &db,
            "-c",
            &self.plan.conns.to_string(),
            "-n",
            &count.to_string(),
            "-r",
            &n.to_string(),
            "-e",
            "--csv",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(command.iter().map(|s| (*s).to_owned()));
        let out = run_tool("redis-benchmark", &args, Duration::from_secs(120)).await?;
        parse_redis_benchmark(&out, count)
    }

    /// The external rows, at the headline size.
    pub(crate) async fn external(&self, fx: &Arc<Fixture>) -> Result<Vec<Row>> {
        self.check_cancel()?;
        let (rank, submit) = (self.plan.wants("ext-rank"), self.plan.wants("ext-submit"));
        if !rank && !submit {
            return Ok(Vec::new());
        }
        for (tool, package) in TOOLS {
            if !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                bail!("{tool} not found: install the Debian package {package}");
            }
        }
        let n = fx.n;
        let b = &fx.main;
        let c = self.admin();
        // redis-benchmark's keys: the board's members under redis-benchmark's names, four copies.
        let keys: Vec<String> = (0..4)
            .map(|i| format!("{}rb:{{rb}}:{i}", self.prefix))
            .collect();
        zadd_bulk_named(&self.clients, &keys[0], n, padded_member).await?;
        for k in &keys[1..] {
            copy_key(&self.clients, &keys[0], k, n).await?;
        }
        let probe: Option<i64> = c
            .zrevrank(keys[0].as_str(), padded_member(n / 2).as_str(), false)
            .await?;
        probe.context("redis-benchmark's key lacks its members")?;
        let _: Value = c
            .evalsha(
                fx.least_sha.as_str(),
                keys.clone(),
                vec!["1", padded_member(0).as_str()],
            )
            .await?;
        let count = self.plan.max_ops.clamp(1, 200_000);
        let conns = self.plan.conns;
        let mut rows = Vec::new();

        self.check_cancel()?;
        if rank {
            let get = format!(r#"return wrk.format("GET", "/v1/boards/{b}/members/" .. m)"#);
            let wrk_get = self.timed(self.wrk(n, &get, "get")).await?;
            let rb_rank = self
                .timed(self.redis_benchmark(n, count, &["ZREVRANK", &keys[0], "u__rand_int__"]))
                .await?;
            rows.push(Row::new(
                "ext-rank",
                &format!("member rank: wrk, GET ({conns} connections)"),
                n,
                Some(conns),
                Cell::Load(wrk_get),
                &format!("redis-benchmark ZREVRANK ({conns} clients)"),
                Cell::Load(rb_rank),
            ));
        }

        self.check_cancel()?;
        if submit {
            let post = format!(
                r#"return wrk.format("POST", "/v1/boards/{b}/scores", nil, '{{"member":"' .. m .. '","value":1,"scopes":["{SCOPE}"]}}')"#
            );
            let wrk_post = self.timed(self.wrk(n, &post, "post")).await?;
            let mut least = vec!["EVALSHA", fx.least_sha.as_str(), "4"];
            least.extend(keys.iter().map(String::as_str));
            least.extend(["1", "u__rand_int__"]);
            let rb_least = self
                .timed(self.redis_benchmark(n, (count / 2).max(1), &least))
                .await?;
            rows.push(Row::new(
                "ext-submit",
                &format!("single submit: wrk, POST ({conns} connections)"),
                n,
                Some(conns),
                Cell::Load(wrk_post),
                &format!("redis-benchmark EVALSHA of the least script ({conns} clients)"),
                Cell::Load(rb_least),
            ));
        }
        let _: i64 = c.custom(cmd("UNLINK"), keys).await?;
        Ok(rows)
    }
}
