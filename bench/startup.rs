//! Start-up and idle cost against the stored history: `rankd serve`, the binary, restarted against a
//! store of 10,000,000 operations and against a fresh store of the same boards, in the same run,
//! with Redis intact for both (a normal restart: nothing to rebuild). Each store has its own
//! Postgres database and key prefix; the big one's `rankd_ops` is filled directly with
//! `generate_series` (the operations never went through rankd), then vacuumed and analysed, and
//! Redis' sequence counters are set where the store's are.
//!
//! Figures, each the big store's over the fresh store's:
//! - start-up to listening: from the spawn of the process to the first `/healthz` answered (a
//!   request sent as soon as a connection is taken, and waited for however long it takes);
//! - start-up to ready: from the spawn to the first `/readyz` answered 200;
//! - idle Postgres CPU: the CPU time (`/proc/<pid>/schedstat`, nanoseconds) of the Postgres backends
//!   connected to the store's database while rankd runs idle for `--idle-secs` (the one-second
//!   sweep, the ten-second check of every board, the metrics sampler; the periodic snapshot is set
//!   past the window), one server on each store, both in the same window, summed over `--windows`
//!   windows with both servers started afresh for each.
//!
//! Beside them, without a floor, what Postgres counted for each database over the same idle window
//! (`pg_stat_database`: transactions, buffers hit or read, tuples returned or fetched), which says
//! whether the big store's server does more work or the same work at a different cost.
//!
//! `cargo bench --bench startup -- [--quick] [--ops N] [--boards B] [--starts K] [--idle-secs S]
//! [--windows W] [--out FILE]`, with RANKD_TEST_REDIS_URL and RANKD_TEST_DATABASE_URL set (scripts/services up)
//! and Postgres on this host (its backends' /proc is read). Both databases and key prefixes are
//! removed at the end, whatever happens; every wait is bounded, and the whole run is abandoned past
//! `--deadline-secs` (default 1,800).

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{Builder, Client, ClientLike, Config as FredConfig, Value};
use fred::types::{ClusterHash, CustomCommand};
use rankd::board::{BoardDef, BoardId};
use rankd::config::Config;
use rankd::engine::SystemClock;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/services up and source target/services.env")
    })
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v}"))
        })
        .unwrap_or(default)
}

struct Options {
    ops: u64,
    boards: u64,
    starts: usize,
    idle: Duration,
    /// Idle windows, each with both servers started afresh.
    windows: usize,
    out: Option<String>,
    deadline: Instant,
}

/// One store under test: its database, key prefix and boards.
struct Store {
    name: &'static str,
    db: String,
    url: String,
    prefix: String,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs benches with --test: nothing to measure then.
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let o = Options {
        ops: arg(&args, "--ops", if quick { 100_000 } else { 10_000_000 }),
        boards: arg(&args, "--boards", 50),
        starts: arg(&args, "--starts", if quick { 1 } else { 7 }),
        idle: Duration::from_secs(arg(&args, "--idle-secs", if quick { 11 } else { 60 })),
        windows: arg(&args, "--windows", if quick { 1 } else { 4 }),
        out: args
            .iter()
            .position(|a| a == "--out")
            .and_then(|i| args.get(i + 1))
            .cloned(),
        deadline: Instant::now() + Duration::from_secs(arg(&args, "--deadline-secs", 1_800)),
    };
    let redis_url = env("RANKD_TEST_REDIS_URL");
    let base_db = env("RANKD_TEST_DATABASE_URL");
    let (server, _) = base_db
        .rsplit_once('/')
        .expect("the database URL names a database");
    let admin_url = format!("{server}/postgres");
    let pid = std::process::id();
    let stores: Vec<Store> = ["fresh", "full"]
        .into_iter()
        .map(|name| {
            let db = format!("rankd_bench_start_{name}_{pid}");
            Store {
                name,
                url: format!("{server}/{db}"),
                db,
                prefix: format!("benchstart{pid}{name}:"),
            }
        })
        .collect();
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("Postgres answers");
    let redis = redis_client(&redis_url).await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run(
        &o, &redis_url, &admin, &redis, &stores,
    )))
    .await;
    for s in &stores {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            s.db
        )))
        .execute(&admin)
        .await;
        let _ = unlink_prefix(&redis, &s.prefix).await;
    }
    match outcome {
        Ok(table) => {
            print!("{table}");
            if let Some(path) = &o.out {
                std::fs::write(path, &table).expect("results file written");
            }
        }
        Err(p) => std::panic::resume_unwind(p),
    }
}

async fn run(
    o: &Options,
    redis_url: &str,
    admin: &sqlx::PgPool,
    redis: &Client,
    stores: &[Store],
) -> String {
    for s in stores {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{}\"", s.db)))
            .execute(admin)
            .await
            .unwrap();
        let ops = if s.name == "full" { o.ops } else { 0 };
        fill(o, redis_url, redis, s, ops).await;
    }
    let (fresh, full) = (&stores[0], &stores[1]);
    let ops = thousands(o.ops);
    let mut table = format!(
        "| start-up and idle cost ({} boards) | {ops} stored operations | fresh store | ratio | floor |\n| --- | --- | --- | --- | --- |\n",
        o.boards
    );
    let started_load = loadavg();
    let bin = env!("CARGO_BIN_EXE_rankd");
    // One start of each, unmeasured: the stores' pages in Postgres' cache, as on a server that
    // restarts.
    for s in [fresh, full] {
        let (port, mut child) = spawn(bin, redis_url, s);
        until_ready(o, &mut child, port).await;
    }
    // Alternating, so that whatever else the machine does falls on both alike.
    let mut times: Vec<Vec<(f64, f64)>> = vec![Vec::new(), Vec::new()];
    for _ in 0..o.starts {
        for (i, s) in [fresh, full].into_iter().enumerate() {
            let (port, mut child) = spawn(bin, redis_url, s);
            times[i].push(until_ready(o, &mut child, port).await);
        }
    }
    // Both servers at once, over the same window: whatever else the machine does then weighs on
    // both alike. Each window starts both afresh (the number of connections a server's pool opens
    // varies from start to start, and each costs Postgres a little), the fresh store's first in
    // one window and second in the next; the windows' figures are summed.
    let mut idle = [Idle::default(), Idle::default()];
    let mut pools = [Vec::new(), Vec::new()];
    for w in 0..o.windows {
        let order = if w % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut servers = Vec::new();
        for i in order {
            let s = [fresh, full][i];
            let (port, mut child) = spawn(bin, redis_url, s);
            until_ready(o, &mut child, port).await;
            servers.push(child);
        }
        for (i, got) in idle_postgres_cpu(o, admin, &[fresh, full])
            .await
            .into_iter()
            .enumerate()
        {
            idle[i].cpu_ms += got.cpu_ms;
            pools[i].push(got.backends);
            for k in 0..3 {
                idle[i].counts[k] += got.counts[k];
            }
        }
        drop(servers);
    }
    let median = |v: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(pick).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    for (what, pick) in [
        (
            "start-up to listening (`/healthz` answered)",
            (|t: &(f64, f64)| t.0) as fn(&(f64, f64)) -> f64,
        ),
        ("start-up to ready (`/readyz` 200)", |t: &(f64, f64)| t.1),
    ] {
        let (a, b) = (median(&times[1], pick), median(&times[0], pick));
        table.push_str(&format!(
            "| {what}, median of {} starts | {a:.1} ms | {b:.1} ms | {:.2}× | ≤ 1.5× |\n",
            o.starts,
            a / b
        ));
    }
    let (fresh_idle, full_idle) = (&idle[0], &idle[1]);
    table.push_str(&format!(
        "| idle Postgres CPU over {} windows of {} s of rankd idle (its backends' CPU time; backends per window {:?} and {:?}) | {:.1} ms | {:.1} ms | {:.2}× | ≤ 1.5× |\n",
        o.windows,
        o.idle.as_secs(),
        pools[1],
        pools[0],
        full_idle.cpu_ms,
        fresh_idle.cpu_ms,
        full_idle.cpu_ms / fresh_idle.cpu_ms
    ));
    for (i, what) in [
        "transactions",
        "buffers hit or read",
        "tuples returned or fetched",
    ]
    .into_iter()
    .enumerate()
    {
        let (a, b) = (full_idle.counts[i], fresh_idle.counts[i]);
        table.push_str(&format!(
            "| the same windows: {what} (`pg_stat_database`) | {a} | {b} | {:.2}× | – |\n",
            a as f64 / b.max(1) as f64
        ));
    }
    table.push_str(&format!(
        "\nload average at the start of the measurements: {started_load}; at the end: {}\n\
         each start's (listening, ready) in ms: fresh {:?}; {ops} {:?}\n",
        loadavg(),
        rounded(&times[0]),
        rounded(&times[1])
    ));
    table
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn rounded(v: &[(f64, f64)]) -> Vec<(u64, u64)> {
    v.iter()
        .map(|(a, b)| (a.round() as u64, b.round() as u64))
        .collect()
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The store's boards, made through rankd (their definitions in Redis and in the store), then
/// `ops` operations spread over them inserted straight into `rankd_ops`, and Redis' sequence
/// counters raised to match: what a restart finds after rankd stored that many operations.
async fn fill(o: &Options, redis_url: &str, redis: &Client, s: &Store, ops: u64) {
    let config = Config {
        redis_url: Some(redis_url.to_owned()),
        database_url: Some(s.url.clone()),
        key_prefix: s.prefix.clone(),
        ..Config::default()
    };
    let engine = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let ids: Vec<BoardId> = (0..o.boards)
        .map(|i| BoardId::parse(&format!("b{i}")).unwrap())
        .collect();
    for b in &ids {
        engine.put_board(b, BoardDef::default()).await.unwrap();
    }
    drop(engine);
    let pool = sqlx::PgPool::connect(&s.url).await.unwrap();
    let per = ops / o.boards;
    if per > 0 {
        let started = Instant::now();
        for (i, b) in ids.iter().enumerate() {
            assert!(
                Instant::now() < o.deadline,
                "past the deadline while filling"
            );
            sqlx::query(
                "INSERT INTO rankd_ops (board, seq, op, recv_ms, member, value, event_id, at_ms, scopes)
                 SELECT $1, g, 'e', 1700000000000 + g, 'member:' || (g % 100000), g % 1000,
                        CASE WHEN g % 2 = 0 THEN 'ev' || g END, 1700000000000 + g, '{}'
                 FROM generate_series(2, $2::bigint + 1) AS g",
            )
            .bind(b.as_str())
            .bind(per as i64)
            .execute(&pool)
            .await
            .unwrap();
            eprintln!(
                "filled {} of {} boards ({} operations each), {:.0} s",
                i + 1,
                ids.len(),
                per,
                started.elapsed().as_secs_f64()
            );
        }
        let keys = rankd::keys::Keys::new(&s.prefix).unwrap();
        let mut mset = Vec::new();
        for b in &ids {
            mset.push(Value::from(keys.sequence(b)));
            mset.push(Value::from((per + 1).to_string()));
        }
        let _: Value = redis.custom(cmd("MSET"), mset).await.unwrap();
    }
    // As a store in service is kept (autovacuum may be off on the test server): visibility known,
    // statistics fresh, nothing dirty left for the measured runs to write out.
    for sql in ["VACUUM ANALYZE", "CHECKPOINT"] {
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// The rankd binary, killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rankd serve` (the build `bin`) on a free loopback port against `s`, output discarded.
fn spawn(bin: &str, redis_url: &str, s: &Store) -> (u16, Running) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("RANKD_CONFIG")
        .env("RANKD_API_KEYS", "")
        .env("RANKD_REDIS_URL", redis_url)
        .env("RANKD_DATABASE_URL", &s.url)
        .env("RANKD_KEY_PREFIX", &s.prefix)
        .env("RANKD_SNAPSHOT_INTERVAL_SECS", "604800")
        .env("RANKD_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the rankd binary starts");
    (port, Running(child))
}

/// Milliseconds from now (just after the spawn) to the first `/healthz` answered, and to the
/// first `/readyz` 200.
async fn until_ready(o: &Options, child: &mut Running, port: u16) -> (f64, f64) {
    let started = Instant::now();
    let limit = (started + Duration::from_secs(300)).min(o.deadline);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let wait = |what: &str| {
        assert!(Instant::now() < limit, "{what} within 300 s");
    };
    // Refused until the port is bound; once connected, answered whenever rankd accepts.
    let listening = loop {
        wait("listening");
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("rankd exited with {status}");
        }
        match http
            .get(url("/healthz"))
            .timeout(limit.saturating_duration_since(Instant::now()))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break started.elapsed(),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    let ready = loop {
        wait("ready");
        match http
            .get(url("/readyz"))
            .timeout(limit.saturating_duration_since(Instant::now()))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break started.elapsed(),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    };
    (
        listening.as_secs_f64() * 1000.0,
        ready.as_secs_f64() * 1000.0,
    )
}

/// What one store's Postgres did over an idle window.
#[derive(Default)]
struct Idle {
    /// CPU time of its backends, ms.
    cpu_ms: f64,
    /// Backends seen at the end of the window.
    backends: usize,
    /// `pg_stat_database` deltas: transactions, buffers hit or read, tuples returned or fetched.
    counts: [i64; 3],
}

/// The CPU time of the Postgres backends connected to each of `stores`' databases over the same
/// `o.idle` of rankd idle (after 12 s for the starts to settle), and what Postgres counted for each
/// database meanwhile. A backend that came during the window counts from zero; one that left during
/// it is not seen (rankd keeps its connections). Postgres publishes a database's counts when its
/// backends go idle, within about ten seconds: over a long window the lag is small beside the total.
async fn idle_postgres_cpu(o: &Options, admin: &sqlx::PgPool, stores: &[&Store]) -> Vec<Idle> {
    assert!(
        Instant::now() + o.idle + Duration::from_secs(12) < o.deadline,
        "no time left for the idle window"
    );
    // Past the first check, whose queries open the pool's connections.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let backends = |s: &Store| {
        let db = s.db.clone();
        async move {
            let pids: Vec<i32> =
                sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
                    .bind(&db)
                    .fetch_all(admin)
                    .await
                    .unwrap();
            let cpu: std::collections::HashMap<i32, u64> = pids
                .into_iter()
                .filter_map(|pid| {
                    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
                    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
                    Some((pid, ns))
                })
                .collect();
            assert!(
                !cpu.is_empty(),
                "rankd's Postgres backends are on this host: /proc/<pid>/schedstat of {db} readable"
            );
            cpu
        }
    };
    let counts = |s: &Store| {
        let db = s.db.clone();
        async move {
            let (x, b, t): (i64, i64, i64) = sqlx::query_as(
                "SELECT xact_commit + xact_rollback, blks_hit + blks_read, tup_returned + tup_fetched
                 FROM pg_stat_database WHERE datname = $1",
            )
            .bind(&db)
            .fetch_one(admin)
            .await
            .unwrap();
            [x, b, t]
        }
    };
    let mut before = Vec::new();
    for s in stores {
        before.push((backends(s).await, counts(s).await));
    }
    tokio::time::sleep(o.idle).await;
    let mut out = Vec::new();
    for (s, (cpu_before, counts_before)) in stores.iter().zip(before) {
        let each: Vec<(i32, u64)> = backends(s)
            .await
            .iter()
            .map(|(pid, end)| {
                (
                    *pid,
                    end.saturating_sub(cpu_before.get(pid).copied().unwrap_or(0)),
                )
            })
            .collect();
        eprintln!(
            "{}: backends' CPU over the idle window, µs: {:?}",
            s.name,
            each.iter()
                .map(|(pid, ns)| (pid, ns / 1000))
                .collect::<Vec<_>>()
        );
        let after = counts(s).await;
        out.push(Idle {
            cpu_ms: each.iter().map(|(_, ns)| ns).sum::<u64>() as f64 / 1e6,
            backends: each.len(),
            counts: [0, 1, 2].map(|i| after[i] - counts_before[i]),
        });
    }
    out
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Random, false)
}

async fn redis_client(url: &str) -> Client {
    let client = Builder::from_config(FredConfig::from_url(url).expect("a Redis URL"))
        .build()
        .unwrap();
    client.init().await.expect("Redis answers");
    client
}

/// Unlinks every key under `prefix`.
async fn unlink_prefix(c: &Client, prefix: &str) -> Result<(), fred::error::Error> {
    let pattern = format!("{prefix}*");
    let mut cursor = "0".to_owned();
    // SCAN visits every key once in a bounded number of steps; the bound only guards a server that
    // never answers cursor 0.
    for _ in 0..1_000_000 {
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
        let next = parts.next().and_then(|v| v.as_string()).unwrap_or_default();
        let keys: Vec<Value> = parts.next().map(|v| v.into_array()).unwrap_or_default();
        if !keys.is_empty() {
            let _: Value = c.custom(cmd("UNLINK"), keys).await?;
        }
        if next == "0" || next.is_empty() {
            return Ok(());
        }
        cursor = next;
    }
    Ok(())
}
