//! The load harness (issue 6): drives rankd over HTTP, and Redis directly through fred with the very
//! same Lua scripts and commands, at the same concurrency, and writes one table: rankd's figure, its
//! raw twin's figure and their ratio, one row per workload.
//!
//! Run it through `bench/run` (see bench/README.md). `cargo bench --bench load -- --help` lists the
//! options. Run by `cargo test` (that is, without `--bench`), it does nothing.
//!
//! - The rankd server runs in this process: [`rankd::http::App`] on 127.0.0.1:0, with its own
//!   Tokio runtime of two worker threads (what `rankd serve` gets on this machine; another count
//!   with `--server-threads`) and the engine
//!   [`rankd::serve::build_engine`] builds, with `info` logging as `rankd serve` has by default.
//! - The client side runs on another two-thread runtime: `--conns` workers, each with one HTTP/1.1
//!   keep-alive connection (a minimal client on a TCP stream, so the client costs little) or one fred
//!   connection to Redis, each with one request in flight at a time.
//! - Every loop is bounded in time (`--duration`) and in count (`--max-ops`), the whole run by
//!   `--deadline`; every key lives under `--prefix` and is unlinked at the end, on error and on
//!   SIGINT/SIGTERM.
//!
//! - Member rank has a second twin over HTTP: a thin server written only for the bench (thin.rs),
//!   on a runtime of its own with rankd's settings, that answers a GET with one call of rankd's own
//!   read script. With `--external`, wrk and redis-benchmark measure once more (external.rs).
//!
//! This file runs it (the server, the clients, every workload in turn); the parts are its modules:
//! options, client, fixtures, sides, thin, external, coalescing, caching, measuring and report.

#![allow(clippy::unwrap_used)]

mod caching;
mod client;
mod coalescing;
mod external;
mod fixtures;
mod measuring;
mod options;
mod report;
mod sides;
mod thin;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use fred::prelude::{Client, ClientLike};
use rankd::backend::redis::{RedisConfig, RedisExecutor};
use rankd::config::{ApiKey, Config};
use rankd::engine::{Engine, EngineConfig, SystemClock};
use rankd::keys::Keys;
use tokio_util::sync::CancellationToken;

use crate::client::{cmd, redis_client};
use crate::fixtures::{unlink_prefix, Recorder};
use crate::options::{Opts, Plan};
use crate::report::{
    commit, embedded_memory_row, judge, loadavg, machine, put_in_readme, render, size_label, table,
    Cell, Meta, Row,
};
use crate::sides::Kind;

/// The allocator `rankd serve` runs with (src/main.rs), since rankd runs in this process.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_KEY: &str = "bench-admin-key";
const SCOPE: &str = "s1";
/// Events per batch request.
const BATCH_EVENTS: usize = 1000;
/// Members per lookup.
const LOOKUP: usize = 100;
const PAGE_OFFSET: u64 = 10_000;
const PAGE_LIMIT: u64 = 50;
const TOP: u64 = 20;
const RADIUS: u64 = 5;
/// The page cache's rows (caching.rs), run at the largest size.
const CACHE_ROWS: [&str; 3] = ["cache-write", "cache-top", "cache-mix"];
/// One operation taking longer than this counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

struct Bench {
    plan: Plan,
    prefix: String,
    keys: Keys,
    /// Clients of the raw side, one per connection; the first also does the setup.
    clients: Vec<Client>,
    recorder: Arc<Recorder>,
    setup: Arc<Engine>,
    server: SocketAddr,
    /// What rankd runs with: the thin server takes its pool size and timeouts.
    server_config: Config,
    /// rankd's runtime: where the servers of the write-sharing row start too.
    server_rt: tokio::runtime::Handle,
    /// The thin server's runtime: as many workers as rankd's.
    thin_rt: tokio::runtime::Handle,
    cancel: CancellationToken,
}

impl Bench {
    fn admin(&self) -> &Client {
        &self.clients[0]
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            bail!("interrupted");
        }
        Ok(())
    }
}

async fn start_server(
    handle: &tokio::runtime::Handle,
    config: Config,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = handle.spawn(async move {
        let built = async {
            let engine = rankd::serve::build_engine(&config, Arc::new(SystemClock)).await?;
            let app = rankd::http::App::build(config, engine).await?;
            anyhow::Ok(app)
        }
        .await;
        match built {
            Ok(app) => {
                let addr = app.local_addr();
                let _ = tx.send(addr.map_err(anyhow::Error::from));
                app.run(stop).await;
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    let addr = rx.await.context("the server task ended")??;
    Ok((addr, task))
}

async fn run(
    opts: &Opts,
    plan: Plan,
    server_rt: tokio::runtime::Handle,
    thin_rt: tokio::runtime::Handle,
    cancel: CancellationToken,
) -> Result<(Vec<Row>, String)> {
    let prefix = opts
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bench:{}:", std::process::id()));
    if !prefix.starts_with("bench:") {
        bail!("--prefix must start with bench: (got {prefix})");
    }
    let mut clients = Vec::new();
    for _ in 0..plan.conns.max(2) {
        clients.push(redis_client(&opts.redis_url).await?);
    }
    let admin = clients[0].clone();
    let info: String = admin.custom(cmd("INFO"), vec!["server"]).await?;
    let redis_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        redis_url: Some(opts.redis_url.clone()),
        key_prefix: prefix.clone(),
        api_keys: ApiKey::parse_list(&format!("{ADMIN_KEY}:admin"))?,
        shutdown_grace: Duration::from_secs(2),
        // No durable store: the figures are rankd on Redis (durability: bench/durability.rs).
        database_url: None,
        data_dir: None,
        ..Config::default()
    };
    let config = Config {
        write_share: opts.write_share.unwrap_or(Config::default().write_share),
        ..config
    };
    let config = match opts.metrics_sample {
        Some(secs) => Config {
            metrics_sample: Duration::from_secs(secs.max(1)),
            ..config
        },
        None => config,
    };
    let stop = CancellationToken::new();
    let result = async {
        let exec = RedisExecutor::connect(&RedisConfig::new(opts.redis_url.clone()))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let recorder = Arc::new(Recorder::new(Arc::new(exec)));
        let keys = Keys::new(&prefix)?;
        let setup = Arc::new(
            Engine::new(
                recorder.clone(),
                keys.clone(),
                Arc::new(SystemClock),
                EngineConfig::default(),
            )
            .await?,
        );
        let (server, task) = start_server(&server_rt, config.clone(), stop.clone()).await?;
        eprintln!(
            "load: rankd serving on http://{server} (in-process), Redis {redis_version} at {}",
            opts.redis_url
        );
        let bench = Bench {
            plan: plan.clone(),
            prefix: prefix.clone(),
            keys,
            clients,
            recorder,
            setup,
            server,
            server_config: config.clone(),
            server_rt,
            thin_rt,
            cancel: cancel.clone(),
        };
        let rows = bench_all(&bench, &config).await;
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        rows
    }
    .await;
    stop.cancel();
    let gone = unlink_prefix(&admin, &prefix).await;
    match &gone {
        Ok(n) => eprintln!("load: unlinked {n} keys under {prefix}"),
        Err(e) => eprintln!("load: WARNING: could not unlink the keys under {prefix}: {e}"),
    }
    Ok((result?, redis_version))
}

async fn bench_all(b: &Bench, config: &Config) -> Result<Vec<Row>> {
    let plan = &b.plan;
    let mut rows = Vec::new();
    let mut sizes = plan.sizes.clone();
    sizes.sort_unstable();
    // Whether any workload of a size's boards is wanted: else they are not loaded.
    let at_size = Kind::ALL.iter().any(|k| plan.wants(k.id()))
        || CACHE_ROWS.iter().any(|id| plan.wants(id))
        || ["rank-script", "inproc", "memory", "submit-solo"]
            .iter()
            .any(|id| plan.wants(id))
        || plan.external;
    for &n in &sizes {
        if !at_size {
            break;
        }
        b.check_cancel()?;
        let fx = Arc::new(b.load(n, true).await?);
        for kind in Kind::ALL {
            if plan.wants(kind.id()) {
                rows.push(b.compare(kind, &fx, plan.conns).await?);
            }
        }
        if n == plan.headline() && plan.wants("rank") {
            // Coalescing pays more the more reads arrive together: member rank again at four
            // times the connections, beside the floor's figure (which stays at --conns).
            let mut row = b.compare(Kind::Rank, &fx, plan.conns * 4).await?;
            row.id = "rank-wide".into();
            row.workload = format!("member rank, {} connections", plan.conns * 4);
            row.twin_is = format!(
                "ZREVRANK, {} workers pipelined over {} connections",
                plan.conns * 4,
                b.clients.len()
            );
            rows.push(row);
            // The same read against the engine's own script for one member, called directly: what
            // rankd's HTTP layer and engine cost beside the script they run (issue 3 compares the
            // single submit that way).
            rows.push(b.compare(Kind::RankScript, &fx, plan.conns).await?);
        }
        if n == plan.headline() && plan.wants("submit-solo") {
            // Write sharing's cost to a writer alone: the same build with it off, same run.
            rows.push(b.solo(&fx).await?);
        }
        if n == plan.headline() && CACHE_ROWS.iter().any(|id| plan.wants(id)) {
            // The page cache's rows, against the same build with the cache off, same run.
            rows.extend(b.caching(&fx).await?);
        }
        if n == plan.headline() {
            if plan.external {
                // Once per run: wrk and redis-benchmark, each in its own rows.
                rows.extend(b.external(&fx).await?);
            }
            if plan.wants("inproc") {
                rows.extend(b.in_process(&fx, config).await?);
            }
            if plan.wants("memory") {
                rows.extend(b.memory(n, &fx).await?);
            }
        }
        drop(fx);
        unlink_prefix(b.admin(), &b.prefix).await?;
    }
    if plan.big > 0 && plan.wants("rank") {
        b.check_cancel()?;
        let fx = Arc::new(b.load(plan.big, false).await?);
        rows.push(b.compare(Kind::Rank, &fx, plan.conns).await?);
        drop(fx);
        unlink_prefix(b.admin(), &b.prefix).await?;
    }
    if plan.wants("submit-spread") {
        // Single writes spread over many boards (each its own small board), against one alone.
        let row = b.spread().await;
        unlink_prefix(b.admin(), &b.prefix).await?;
        rows.push(row?);
    }
    // The O(log n) of member rank: its latency at the largest size against the smallest.
    let ranks: Vec<&Row> = rows.iter().filter(|r| r.id == "rank").collect();
    if let (Some(lo), Some(hi)) = (
        ranks.iter().min_by_key(|r| r.members),
        ranks.iter().max_by_key(|r| r.members),
    ) {
        if hi.members > lo.members {
            let p50 = |c: &Cell| match c {
                Cell::Load(f) => f.p50_ms,
                _ => f64::NAN,
            };
            let mut r = Row::new(
                "rank-scaling",
                &format!(
                    "member rank: p50 latency at {} ÷ at {}",
                    size_label(hi.members),
                    size_label(lo.members)
                ),
                hi.members,
                Some(plan.conns),
                Cell::Value {
                    value: p50(&hi.rankd) / p50(&lo.rankd),
                    unit: "×",
                },
                "the same for ZREVRANK",
                Cell::Value {
                    value: p50(&hi.twin) / p50(&lo.twin),
                    unit: "×",
                },
            );
            r.ratio = None;
            rows.push(r);
        }
    }
    Ok(rows)
}

fn main() -> ExitCode {
    // cargo test runs bench targets too, without --bench: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: not run by cargo bench; nothing to do (use bench/run)");
        return ExitCode::SUCCESS;
    }
    let opts = Opts::parse();
    let plan = match Plan::from(&opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("load: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Logging as `rankd serve` has it by default (info), so the server pays what it pays in production.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("RANKD_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let threads = |name: &str, n: u16| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let server_rt = threads("rankd-server", opts.server_threads);
    // The thin server of the member-rank twin: the same runtime settings as rankd's.
    let thin_rt = threads("thin-server", opts.server_threads);
    let client_rt = threads("load-client", 2);
    let started = Instant::now();
    let load_before = loadavg();
    // The commit of the code being measured: read before the run, as others may commit meanwhile.
    let commit = commit();
    let cancel = CancellationToken::new();
    let outcome = client_rt.block_on(async {
        let c = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("load: interrupted; cleaning up");
            c.cancel();
        });
        let c = cancel.clone();
        let deadline = plan.deadline;
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            eprintln!(
                "load: the run passed its deadline of {} s; abandoning it",
                deadline.as_secs()
            );
            c.cancel();
        });
        run(
            &opts,
            plan.clone(),
            server_rt.handle().clone(),
            thin_rt.handle().clone(),
            cancel.clone(),
        )
        .await
    });
    let (mut rows, redis) = match outcome {
        Ok(x) => x,
        Err(e) => {
            eprintln!("load: FAILED: {e:#}");
            server_rt.shutdown_timeout(Duration::from_secs(5));
            thin_rt.shutdown_timeout(Duration::from_secs(5));
            return ExitCode::FAILURE;
        }
    };
    server_rt.shutdown_timeout(Duration::from_secs(5));
    thin_rt.shutdown_timeout(Duration::from_secs(5));
    judge(&mut rows, &plan);
    let meta = Meta {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        commit,
        machine: machine(),
        redis: format!(
            "{redis} at {} ({})",
            opts.redis_url,
            if opts.private_redis {
                "a private redis-server started by bench/run"
            } else {
                "the shared instance"
            }
        ),
        profile: if cfg!(debug_assertions) {
            "dev profile (unoptimised: figures are not meaningful)"
        } else {
            "release (cargo bench profile)"
        },
        plan: format!(
            "{} connections per side, {} round(s) of {:.2} s per side after {:.2} s of warm-up, at most {} operations per side per round; sizes {}{}; server runtime of {} worker thread(s){}{}{}",
            plan.conns,
            plan.rounds,
            plan.duration.as_secs_f64(),
            plan.warmup.as_secs_f64(),
            plan.max_ops,
            plan.sizes.iter().map(|n| size_label(*n)).collect::<Vec<_>>().join(", "),
            if plan.big > 0 { format!(", member rank also at {}", size_label(plan.big)) } else { String::new() },
            opts.server_threads,
            if plan.external { "; wrk and redis-benchmark once, at the largest size" } else { "" },
            opts.metrics_sample.map_or_else(String::new, |s| format!(
                "; rankd's metrics sampled every {s} s (its default: {} s)",
                Config::default().metrics_sample.as_secs()
            )),
            opts.write_share.map_or_else(String::new, |n| format!(
                "; RANKD_WRITE_SHARE={n} (its default: {})",
                Config::default().write_share
            )),
        ),
        load_before,
        load_after: loadavg(),
        command: opts.command.clone().unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        wall: started.elapsed(),
    };
    let micro = opts
        .micro_md
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    let emb_memory = opts
        .embedded_memory
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    if let Some(r) = emb_memory.as_deref().and_then(embedded_memory_row) {
        rows.push(r);
    }
    let body = render(&meta, &rows, micro.as_deref(), emb_memory.as_deref());
    let md = format!(
        "# rankd benchmark results\n\nWritten by `bench/run`; how to read it: bench/README.md.\n\n{body}"
    );
    println!("\n{}", table(&rows));
    let mut failed = false;
    for r in &rows {
        for (side, c) in [("rankd", &r.rankd), ("twin", &r.twin)] {
            if let Some((n, e)) = c.errors() {
                eprintln!(
                    "load: {} at {} ({side}): {n} errors, first: {e}",
                    r.workload,
                    size_label(r.members)
                );
                failed = true;
            }
        }
    }
    let written = (|| -> Result<()> {
        if let Some(dir) = opts.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&opts.out, &md)?;
        eprintln!("load: wrote {}", opts.out.display());
        if let Some(j) = &opts.json {
            if let Some(dir) = j.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(j, serde_json::to_string_pretty(&rows)?)?;
        }
        if let Some(readme) = &opts.readme {
            put_in_readme(readme, &body)?;
            eprintln!("load: updated {}", readme.display());
        }
        Ok(())
    })();
    if let Err(e) = written {
        eprintln!("load: writing the results failed: {e:#}");
        return ExitCode::FAILURE;
    }
    if failed {
        eprintln!("load: FAILED: some operations failed (see above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
