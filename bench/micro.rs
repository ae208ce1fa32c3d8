//! Criterion micro-benchmarks of the hot in-process pieces (issue 6): the engine's argument encoding
//! (planning a call: keys, ARGV) and reply decoding (a script's reply into the answer), measured
//! through the public Engine over an executor that answers canned replies at once (each recorded from
//! the real scripts, run once on the embedded executor), so that neither I/O nor Lua is measured; the embedded engine's sorted set; and the JSON the HTTP layer parses and writes on the
//! same paths.
//!
//! `bench/run` runs these; alone: `cargo bench --bench micro`. With `BENCH_MICRO_MD=path` set, the
//! medians are also written to `path` as a markdown table for bench/RESULTS.md. Run by `cargo test`
//! (without `--bench`), criterion runs each benchmark once, as a test.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use criterion::Criterion;
use rankd::backend::embedded::{EmbeddedExecutor, ZSet};
use rankd::backend::{Call, ExecError, Executor, Reply, Script};
use rankd::board::{BoardDef, BoardId, Member, Scope};
use rankd::engine::{Engine, EngineConfig, Limit, Offset, Radius, Submit, SystemClock, View};
use rankd::http::handlers::parse_batch;
use rankd::keys::Keys;
use rankd::window::Window;

const PREFIX: &str = "micro:";

/// Answers each script call with the reply the real scripts gave the first call of its shape, on the
/// embedded executor: replies in whatever format the scripts have today, served at once from then on,
/// so that what is measured is the engine's own work (plus cloning the reply, which stands in for the
/// client's decoding).
struct Canned {
    real: Arc<EmbeddedExecutor>,
    cache: Mutex<HashMap<String, Reply>>,
}

impl Canned {
    /// The shape of a call: what decides its reply in these benchmarks (not the time in a submit's
    /// ARGV, which changes from call to call).
    fn shape(call: &Call) -> String {
        let args = if call.script.name() == "submit" {
            call.args.len().to_string()
        } else {
            call.args.join("\u{1}")
        };
        format!(
            "{}\u{2}{}\u{2}{args}",
            call.script.name(),
            call.keys.join("\u{1}")
        )
    }

    async fn reply(&self, call: Call) -> Result<Reply, ExecError> {
        let shape = Self::shape(&call);
        if let Some(r) = self.cache.lock().expect("cache").get(&shape) {
            return Ok(r.clone());
        }
        let r = self.real.eval(call).await?;
        self.cache.lock().expect("cache").insert(shape, r.clone());
        Ok(r)
    }
}

#[async_trait]
impl Executor for Canned {
    async fn load(&self, scripts: &[&'static Script]) -> Result<(), ExecError> {
        self.real.load(scripts).await
    }

    async fn eval(&self, call: Call) -> Result<Reply, ExecError> {
        self.reply(call).await
    }

    async fn eval_many(
        &self,
        calls: Vec<Call>,
    ) -> Result<Vec<Result<Reply, ExecError>>, ExecError> {
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            out.push(self.reply(c).await);
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), ExecError> {
        Ok(())
    }
}

/// Members on the boards the canned replies come from: enough for a full page at offset 10,000.
const MEMBERS: u64 = 12_000;

/// Defines the boards and loads them on the embedded executor, through the engine.
async fn load_boards(real: Arc<EmbeddedExecutor>) -> Result<(), rankd::Error> {
    let engine = Engine::new(
        real,
        Keys::new(PREFIX)?,
        Arc::new(SystemClock),
        EngineConfig::default(),
    )
    .await?;
    let main = BoardId::parse("main")?;
    let def = BoardDef {
        windows: vec![Window::All, Window::Weekly],
        ..BoardDef::default()
    };
    engine.put_board(&main, def).await?;
    engine
        .put_board(&BoardId::parse("flat")?, BoardDef::default())
        .await?;
    let events = (0..MEMBERS)
        .map(|i| {
            Submit::parse(
                "main",
                &format!("u{i}"),
                ((i * 7919) % 1_000_003) as f64,
                &["s1".to_owned()],
                None,
                None,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for chunk in events.chunks(rankd::engine::MAX_BATCH) {
        engine.submit_batch(chunk).await?;
    }
    Ok(())
}

/// Every benchmark: (group, id, what it measures), in the order they run.
const BENCHES: &[(&str, &str, &str)] = &[
    (
        "engine",
        "submit_1scope_2windows",
        "Engine::submit, 1 scope × 2 windows (4 keys): plan, encode ARGV, decode the reply",
    ),
    (
        "engine",
        "batch_1000",
        "Engine::submit_batch of 1,000 events, 1 window: plan and encode 2 chunks, decode",
    ),
    (
        "engine",
        "standing",
        "Engine::standing (member rank): encode, decode",
    ),
    (
        "engine",
        "top_20",
        "Engine::top, 20 entries: encode, decode",
    ),
    (
        "engine",
        "around_r5",
        "Engine::around, radius 5: encode, decode",
    ),
    (
        "engine",
        "page_50",
        "Engine::page at offset 10,000, 50 entries: encode, decode",
    ),
    (
        "engine",
        "lookup_100",
        "Engine::lookup of 100 members: encode, decode, sort",
    ),
    (
        "embedded_zset",
        "insert_update",
        "embedded ZSet: change the score of a member (1M members; 10K in test mode)",
    ),
    ("embedded_zset", "rank", "embedded ZSet: rank of a member"),
    ("embedded_zset", "score", "embedded ZSet: score of a member"),
    (
        "embedded_zset",
        "range_20",
        "embedded ZSet: 20 members from a rank in the middle",
    ),
    (
        "embedded_zset",
        "count_below",
        "embedded ZSet: members below a score (ZCOUNT's work)",
    ),
    (
        "http_json",
        "page_20_to_json",
        "serialising a 20-entry page to the JSON body",
    ),
    (
        "http_json",
        "batch_1000_parse",
        "parsing a 1,000-event batch body and checking each event (the handler's parse_batch)",
    ),
];

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let real = Arc::new(EmbeddedExecutor::new(Arc::new(SystemClock)));
    rt.block_on(load_boards(real.clone())).expect("boards load");
    let exec = Arc::new(Canned {
        real,
        cache: Mutex::new(HashMap::new()),
    });
    let engine = rt
        .block_on(Engine::new(
            exec,
            Keys::new(PREFIX).expect("prefix"),
            Arc::new(SystemClock),
            EngineConfig::default(),
        ))
        .expect("engine");
    let main = BoardId::parse("main").expect("board");
    let view = View::all_time();
    let ev = Submit {
        scopes: vec![Scope::parse("s1").expect("scope")],
        ..Submit::new(
            main.clone(),
            Member::parse("u123456").expect("member"),
            rankd::board::Score::new("value", 1.0).expect("score"),
        )
    };
    let batch: Vec<Submit> = (0..1000u64)
        .map(|i| {
            Submit::parse(
                "flat",
                &format!("u{}", i * 7919 % 1_000_000),
                1.0,
                &[],
                None,
                None,
            )
            .expect("event")
        })
        .collect();
    let who = Member::parse("u4242").expect("member");
    let hundred: Vec<Member> = (0..100)
        .map(|i| Member::parse(&format!("u{}", i * 113 % MEMBERS)).expect("member"))
        .collect();

    let mut g = c.benchmark_group("engine");
    g.bench_function("submit_1scope_2windows", |b| {
        b.iter(|| rt.block_on(engine.submit(black_box(&ev))).expect("submit"))
    });
    g.bench_function("batch_1000", |b| {
        b.iter(|| {
            rt.block_on(engine.submit_batch(black_box(&batch)))
                .expect("batch")
        })
    });
    g.bench_function("standing", |b| {
        b.iter(|| {
            rt.block_on(engine.standing(&main, &view, black_box(&who)))
                .expect("standing")
        })
    });
    g.bench_function("top_20", |b| {
        b.iter(|| {
            rt.block_on(engine.top(&main, &view, Limit::new(20).expect("limit")))
                .expect("top")
        })
    });
    g.bench_function("around_r5", |b| {
        b.iter(|| {
            rt.block_on(engine.around(
                &main,
                &view,
                black_box(&who),
                Radius::new(5).expect("radius"),
            ))
            .expect("around")
        })
    });
    g.bench_function("page_50", |b| {
        b.iter(|| {
            rt.block_on(engine.page(
                &main,
                &view,
                Offset::new(10_000).expect("offset"),
                Limit::new(50).expect("limit"),
            ))
            .expect("page")
        })
    });
    g.bench_function("lookup_100", |b| {
        b.iter(|| {
            rt.block_on(engine.lookup(&main, &view, black_box(&hundred)))
                .expect("lookup")
        })
    });
    g.finish();

    // The embedded sorted set: 1M members when benchmarking, 10K when run once as a test.
    let n: u64 = if full_size() { 1_000_000 } else { 10_000 };
    let names: Vec<Vec<u8>> = (0..n).map(|i| format!("u{i}").into_bytes()).collect();
    let score = |i: u64| ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 34) % 1_000_000_000) as f64;
    let mut zset = ZSet::new();
    for (i, m) in names.iter().enumerate() {
        zset.insert(m, score(i as u64));
    }
    let mut g = c.benchmark_group("embedded_zset");
    let mut k = 0u64;
    let mut pick = || {
        k = k
            .wrapping_add(0x9E37_79B9)
            .wrapping_mul(6364136223846793005)
            | 1;
        (k >> 17) % n
    };
    let mut bump = 0.0;
    g.bench_function("insert_update", |b| {
        b.iter(|| {
            let i = pick();
            bump += 1.0;
            zset.insert(black_box(&names[i as usize]), score(i) + bump)
        })
    });
    g.bench_function("rank", |b| {
        b.iter(|| zset.rank(black_box(&names[pick() as usize])))
    });
    g.bench_function("score", |b| {
        b.iter(|| zset.score(black_box(&names[pick() as usize])))
    });
    g.bench_function("range_20", |b| {
        b.iter(|| zset.range(black_box(n as usize / 2), 20).len())
    });
    g.bench_function("count_below", |b| {
        b.iter(|| zset.count_below(black_box(score(pick())), false))
    });
    g.finish();
    drop(zset);

    let page = rt
        .block_on(engine.top(&main, &view, Limit::new(20).expect("limit")))
        .expect("top");
    let body = serde_json::json!({
        "events": (0..1000u64).map(|i| serde_json::json!({
            "board": "flat", "member": format!("u{}", i * 7919 % 1_000_000), "value": 1
        })).collect::<Vec<_>>()
    })
    .to_string();
    let mut g = c.benchmark_group("http_json");
    g.bench_function("page_20_to_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&page)).expect("json"))
    });
    g.bench_function("batch_1000_parse", |b| {
        b.iter(|| {
            let (events, errors) = parse_batch(black_box(body.as_bytes())).expect("a batch body");
            assert!(errors.is_empty() && events.len() == 1000);
            events
        })
    });
    g.finish();
}

/// Whether criterion measures (cargo bench) rather than runs each benchmark once (cargo test, --test).
fn full_size() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

fn criterion_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("criterion")
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The medians criterion estimated, as a markdown table.
fn summary(dir: &Path) -> Option<String> {
    let mut s = String::from(
        "| benchmark | what it measures | median | 95% CI of the median |\n|---|---|--:|--:|\n",
    );
    let mut any = false;
    for (group, id, what) in BENCHES {
        let path = dir.join(group).join(id).join("new").join("estimates.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let m = &v["median"];
        let (Some(p), Some(lo), Some(hi)) = (
            m["point_estimate"].as_f64(),
            m["confidence_interval"]["lower_bound"].as_f64(),
            m["confidence_interval"]["upper_bound"].as_f64(),
        ) else {
            continue;
        };
        any = true;
        s.push_str(&format!(
            "| {group}/{id} | {what} | {} | {} – {} |\n",
            fmt_ns(p),
            fmt_ns(lo),
            fmt_ns(hi)
        ));
    }
    any.then_some(s)
}

fn main() {
    let dir = criterion_dir();
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
    if let (true, Some(out)) = (benchmarking, std::env::var_os("BENCH_MICRO_MD")) {
        match summary(&dir) {
            Some(table) => {
                if let Err(e) = std::fs::write(&out, table) {
                    eprintln!("micro: cannot write {}: {e}", Path::new(&out).display());
                    std::process::exit(1);
                }
            }
            None => eprintln!("micro: no estimates found under {}", dir.display()),
        }
    }
}
