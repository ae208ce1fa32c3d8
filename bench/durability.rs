//! Durability figures, each against its raw limit measured in the same run:
//! - a snapshot of one big key into Postgres (read from Redis + COPY) vs a raw COPY of the same rows
//!   into a table of the same shape (and, for scale, into a bare one);
//! - a rebuild of the same members from Postgres into Redis (the latest snapshot written back, then
//!   the log after it replayed through the scripts) vs raw pipelined ZADD of the same data;
//! - sync-mode write throughput at 50 concurrent clients vs async mode;
//! - the embedded default (in-process engine, SQLite store): batch ingestion and single writes at 50
//!   clients with sync durability vs the same engine and store in async mode.
//!
//! `cargo bench --bench durability -- [--quick] [--embedded-only] [--out FILE]`, with RANKD_TEST_REDIS_URL and
//! RANKD_TEST_DATABASE_URL set (scripts/services up). It uses its own key prefix and its own
//! database, and removes both at the end. Every loop is bounded in count and time.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::backend::redis::{RedisConfig, RedisExecutor};
use rankd::board::{BoardDef, BoardId, Member, Scope, Score};
use rankd::config::Config;
use rankd::engine::{Durability, Engine, RedisState, Submit, SystemClock, View};
use rankd::store::{rebuild, snapshot, PgStore};
use rankd::window::Window;

/// The allocator `rankd serve` runs with (src/main.rs), since the store runs in this process.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/services up and source target/services.env")
    })
}

struct Row {
    what: String,
    rankd: f64,
    raw: f64,
    unit: &'static str,
    floor: &'static str,
}

impl Row {
    /// rankd's figure over the raw one: a time ratio (lower is better) or a throughput ratio.
    fn ratio(&self) -> f64 {
        self.rankd / self.raw
    }

    fn markdown(&self) -> String {
        format!(
            "| {} | {:.2} {} | {:.2} {} | {:.2}× | {} |",
            self.what,
            self.rankd,
            self.unit,
            self.raw,
            self.unit,
            self.ratio(),
            self.floor
        )
    }
}

async fn exec(url: &str) -> RedisExecutor {
    let mut rc = RedisConfig::new(url);
    rc.pool_size = 2;
    RedisExecutor::connect(&rc).await.expect("Redis answers")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs benches with --test: nothing to measure then.
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let members: usize = args
        .iter()
        .position(|a| a == "--members")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--members takes a count"))
        .unwrap_or(if quick { 10_000 } else { 1_000_000 });
    let write_secs = if quick { 2 } else { 10 };
    // The embedded default needs no service: first, and alone with --embedded-only.
    let mut rows = Vec::new();
    embedded(quick, write_secs, &mut rows).await;
    if args.iter().any(|a| a == "--embedded-only") {
        print_rows(&rows, out.as_deref());
        return;
    }
    let redis_url = env("RANKD_TEST_REDIS_URL");
    let base_db = env("RANKD_TEST_DATABASE_URL");
    let (server, _) = base_db
        .rsplit_once('/')
        .expect("the database URL names a database");
    let db_name = format!("rankd_bench_{}", std::process::id());
    let admin_url = format!("{server}/postgres");
    let db_url = format!("{server}/{db_name}");
    let prefix = format!("bench{}:", std::process::id());
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("Postgres answers");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{db_name}\""
        )))
        .execute(&mut c)
        .await
        .unwrap();
    }
    let result = std::panic::AssertUnwindSafe(run(
        &redis_url, &db_url, &prefix, members, write_secs, &mut rows,
    ));
    let outcome = futures::FutureExt::catch_unwind(result).await;
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("Postgres answers");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    print_rows(&rows, out.as_deref());
}

/// Prints the table of `rows`, and writes it to `out` when given.
fn print_rows(rows: &[Row], out: Option<&str>) {
    let mut table = String::from("| durability workload | rankd | raw limit | ratio | floor |\n| --- | --- | --- | --- | --- |\n");
    for r in rows {
        table.push_str(&r.markdown());
        table.push('\n');
    }
    print!("{table}");
    if let Some(path) = out {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(dir).expect("results directory created");
        }
        std::fs::write(path, &table).expect("results file written");
    }
}

async fn run(
    redis_url: &str,
    db_url: &str,
    prefix: &str,
    members: usize,
    write_secs: u64,
    rows: &mut Vec<Row>,
) {
    let config = Config {
        redis_url: Some(redis_url.to_owned()),
        database_url: Some(db_url.to_owned()),
        key_prefix: prefix.to_owned(),
        ..Config::default()
    };
    let store = PgStore::connect(db_url).await.unwrap();
    store.migrate().await.unwrap();
    let plain = Arc::new(
        rankd::serve::connect(&config, Arc::new(SystemClock))
            .await
            .unwrap(),
    );
    let raw = exec(redis_url).await;
    let n = members;
    let label = if n >= 1_000_000 {
        "1,000,000".to_owned()
    } else {
        format!("{n}")
    };

    // ---- snapshot vs raw COPY ------------------------------------------------------------------
    // The board is filled through a durable engine, so its log reaches the store as in production
    // (the rebuild below starts from the snapshot and that log).
    let mut durable_config = config.clone();
    durable_config.durability = Durability::Async;
    let durable = rankd::serve::build_engine(&durable_config, Arc::new(SystemClock))
        .await
        .unwrap();
    let snap = BoardId::parse("snap").unwrap();
    durable.put_board(&snap, BoardDef::default()).await.unwrap();
    let mut i = 0;
    while i < n {
        let chunk: Vec<Submit> = (i..(i + 10_000).min(n))
            .map(|k| {
                Submit::new(
                    snap.clone(),
                    Member::parse(&format!("member:{k}")).unwrap(),
                    Score::new("value", (k % 100_003) as f64).unwrap(),
                )
            })
            .collect();
        durable.submit_batch(&chunk).await.unwrap();
        i += 10_000;
    }
    // Wait (bounded) until the store holds the whole log.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let RedisState::Live(live) = plain.redis_state(&snap).await.unwrap() else {
            panic!("the board is live");
        };
        let stored = store
            .boards()
            .await
            .unwrap()
            .into_iter()
            .find(|(b, _)| b == &snap)
            .map_or(0, |(_, s)| s);
        if stored >= live {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store caught up within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The production path: entries are copied into Postgres while they are read from Redis; then
    // the run is checked against the stored log before it becomes a rebuild base (snapshot::snapshot
    // does both; they are timed apart here).
    let started = Instant::now();
    let written = rankd::store::Store::snapshot_streamed(&store, &plain, &snap)
        .await
        .unwrap()
        .expect("a quiet board is copied while it is read");
    let rankd_snapshot = started.elapsed().as_secs_f64();
    assert_eq!(written.entries, n);
    let started = Instant::now();
    assert!(snapshot::make_base(
        &plain,
        &store,
        &snap,
        written.run.expect("a run"),
        written.seq.expect("read at one point")
    )
    .await
    .unwrap());
    let check = started.elapsed().as_secs_f64();
    // The same rows for the raw twins, read again (untimed by the twins; its time is shown).
    let started = Instant::now();
    let keys = plain.snapshot_board(&snap).await.unwrap();
    let redis_read = started.elapsed().as_secs_f64();
    let entries = keys.into_iter().next().expect("one key").entries;
    assert_eq!(entries.len(), n);
    // The raw limit: the same rows copied into a table of the same shape (columns and indexes),
    // and, for scale, into a bare table without indexes.
    for (table, like) in [
        ("bench_copy", "INCLUDING ALL"),
        ("bench_copy_bare", "EXCLUDING ALL"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (LIKE rankd_snapshot_entries {like})"
        )))
        .execute(store.pool())
        .await
        .unwrap();
    }
    let started = Instant::now();
    store.raw_copy("bench_copy", &entries).await.unwrap();
    let raw_copy = started.elapsed().as_secs_f64();
    let started = Instant::now();
    store.raw_copy("bench_copy_bare", &entries).await.unwrap();
    let bare_copy = started.elapsed().as_secs_f64();
    rows.push(Row {
        what: format!("snapshot of a {label}-member key into Postgres, without its base check (Redis read, {redis_read:.2} s alone, overlapped with the COPY) vs raw COPY of the same rows into a table of the same columns and indexes"),
        rankd: rankd_snapshot,
        raw: raw_copy,
        unit: "s",
        floor: "≤ 2×",
    });
    rows.push(Row {
        what: format!("the same snapshot's check before it becomes a rebuild base (the stored log of {label} events replayed in memory and compared) vs raw COPY of its rows"),
        rankd: check,
        raw: raw_copy,
        unit: "s",
        floor: "–",
    });
    rows.push(Row {
        what: "the same snapshot vs raw COPY of the same rows into a bare table (no indexes): the cost of the history indexes".into(),
        rankd: rankd_snapshot,
        raw: bare_copy,
        unit: "s",
        floor: "–",
    });

    // ---- rebuild vs raw pipelined ZADD ---------------------------------------------------------
    // Redis loses the board; the rebuild starts from the snapshot just taken (and the operations
    // after it: none here).
    plain.discard(&snap).await.unwrap();
    let started = Instant::now();
    assert!(rebuild::rebuild(&plain, &store, &snap).await.unwrap());
    let rankd_rebuild = started.elapsed().as_secs_f64();
    let total = plain
        .standing(
            &snap,
            &View::all_time(),
            &Member::parse("member:0").unwrap(),
        )
        .await
        .unwrap()
        .total;
    assert_eq!(total, n as u64, "the rebuilt board holds every member");
    // The raw twin: the same members and scores, pipelined ZADD of 1,000 members per command.
    let raw_key = format!("{prefix}rawzadd");
    let started = Instant::now();
    {
        use fred::prelude::*;
        let client = raw.pool().next();
        for chunk in entries.chunks(100_000) {
            let pipe = client.pipeline();
            for part in chunk.chunks(1_000) {
                let values: Vec<(f64, String)> =
                    part.iter().map(|e| (e.stored, e.member.clone())).collect();
                let _: () = pipe
                    .zadd(&raw_key, None, None, false, false, values)
                    .await
                    .unwrap();
            }
            let _: Vec<Value> = pipe.all().await.unwrap();
        }
        let _: () = client.unlink(&raw_key).await.unwrap();
    }
    let raw_zadd = started.elapsed().as_secs_f64();
    rows.push(Row {
        what: format!("rebuild of {label} members from Postgres into Redis (latest snapshot + the log after it) vs raw pipelined ZADD"),
        rankd: rankd_rebuild,
        raw: raw_zadd,
        unit: "s",
        floor: "≤ 2×",
    });

    // ---- sync vs async writes at 50 clients ------------------------------------------------------
    let mut throughput = Vec::new();
    for mode in [Durability::Sync, Durability::Async] {
        let mut c = config.clone();
        c.durability = mode;
        let engine = rankd::serve::build_engine(&c, Arc::new(SystemClock))
            .await
            .unwrap();
        let board = BoardId::parse(if mode == Durability::Sync {
            "wsync"
        } else {
            "wasync"
        })
        .unwrap();
        engine.put_board(&board, BoardDef::default()).await.unwrap();
        throughput.push(single_writes(&engine, &board, write_secs, false).await);
        engine.delete_board(&board).await.unwrap();
    }
    rows.push(Row {
        what: "sync-mode writes at 50 concurrent clients vs async mode".into(),
        rankd: throughput[0],
        raw: throughput[1],
        unit: "ops/s",
        floor: "≥ 0.5×",
    });
    durable.delete_board(&snap).await.unwrap();
}

/// Single writes by 50 concurrent clients for `secs` seconds (bounded in count too); events per
/// second.
async fn single_writes(engine: &Arc<Engine>, board: &BoardId, secs: u64, scoped: bool) -> f64 {
    let stop = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..50 {
        let (engine, board) = (engine.clone(), board.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < stop && done < 1_000_000 {
                let mut ev = Submit::new(
                    board.clone(),
                    Member::parse(&format!("c{client}-{}", done % 1000)).unwrap(),
                    Score::new("value", 1.0).unwrap(),
                );
                if scoped {
                    ev.scopes = vec![Scope::parse(&format!("class:{client}")).unwrap()];
                }
                engine.submit(&ev).await.unwrap();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// The embedded default as `rankd serve` runs it with no settings (in-process engine, SQLite in a
/// data directory of its own), sync durability against async: batches of 10,000 events one at a
/// time, then single writes at 50 clients, on a board of 1 scope × 2 windows.
async fn embedded(quick: bool, write_secs: u64, rows: &mut Vec<Row>) {
    let batches = if quick { 3 } else { 20 };
    let mut ingest = Vec::new();
    let mut singles = Vec::new();
    for mode in [Durability::Sync, Durability::Async] {
        let dir = std::env::temp_dir().join(format!(
            "rankd-bench-embedded-{}-{mode:?}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config {
            redis_url: None,
            database_url: None,
            data_dir: Some(dir.clone()),
            durability: mode,
            ..Config::default()
        };
        let engine = rankd::serve::build_engine(&config, Arc::new(SystemClock))
            .await
            .unwrap();
        let board = BoardId::parse("bulk").unwrap();
        let def = BoardDef {
            windows: vec![Window::All, Window::Weekly],
            ..BoardDef::default()
        };
        engine.put_board(&board, def).await.unwrap();
        let started = Instant::now();
        for b in 0..batches {
            let events: Vec<Submit> = (0..10_000)
                .map(|i| {
                    let n = b * 10_000 + i;
                    let mut ev = Submit::new(
                        board.clone(),
                        Member::parse(&format!("u{n}")).unwrap(),
                        Score::new("value", (1 + n % 7) as f64).unwrap(),
                    );
                    ev.scopes = vec![Scope::parse(&format!("class:{}", n % 30)).unwrap()];
                    ev
                })
                .collect();
            engine.submit_batch(&events).await.unwrap();
        }
        ingest.push((batches * 10_000) as f64 / started.elapsed().as_secs_f64());
        // Async mode's store catches up before the next measurement, so it does not take its CPU.
        engine.flush_journal().await.unwrap();
        singles.push(single_writes(&engine, &board, write_secs, true).await);
        engine.flush_journal().await.unwrap();
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }
    rows.push(Row {
        what: format!(
            "embedded default (SQLite): batch ingestion, {batches} batches of 10,000 events (1 scope × 2 windows), sync vs async durability; floor also sync ≥ 50,000 events/s"
        ),
        rankd: ingest[0],
        raw: ingest[1],
        unit: "events/s",
        floor: "≥ 0.5×",
    });
    rows.push(Row {
        what: "embedded default (SQLite): single writes at 50 concurrent clients (1 scope × 2 windows), sync vs async durability".into(),
        rankd: singles[0],
        raw: singles[1],
        unit: "ops/s",
        floor: "≥ 0.5×",
    });
}
