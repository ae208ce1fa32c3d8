//! Memory per member of the embedded store's sorted set at 1,000,000 members, against Redis' own
//! figure for the same members, measured in the same run.
//!
//! Run: `cargo bench --bench embedded_memory` (Redis at `RANKD_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; without one, only the embedded side is measured).
//!
//! Method:
//!
//! - Embedded: a counting global allocator tracks the bytes the process holds. It counts both what
//!   was asked for and what the allocator actually set aside for each block (`mi_usable_size`:
//!   rankd runs on mimalloc, as src/main.rs sets, which keeps no header per block but rounds each
//!   block up to its size class), so per-allocation overhead is not hidden. Two figures: the
//!   bare [`ZSet`] filled directly, and the whole executor (keyspace, Lua state, after a full Lua
//!   garbage collection) filled through a script, as the engine fills it.
//! - Redis: `used_memory` from `INFO memory` before and after ZADDing the same members with the same
//!   scores to a throwaway key (jemalloc's allocated bytes, size classes included), plus the key's own
//!   `MEMORY USAGE … SAMPLES 0`; the key is deleted afterwards. The Redis server is shared, so other
//!   clients' traffic can move `used_memory` a little; MEMORY USAGE is immune to that.
//!
//! Two member shapes: `member:<n>` (8 to 14 bytes, stored inline in the slot) and 36-byte UUID-like
//! ids (stored in their own heap block).

// A global allocator that counts what it forwards to mimalloc is unsafe by its trait.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rankd::backend::embedded::{EmbeddedExecutor, ZSet};
use rankd::backend::redis::{RedisConfig, RedisExecutor};
use rankd::backend::{Call, Executor, Reply, Script};
use rankd::engine::SystemClock;

/// Counts live bytes: requested, and held by the C allocator.
struct Counting;

static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The allocator rankd runs on.
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn held(ptr: *mut u8) -> usize {
    // SAFETY: `ptr` is a live block from mimalloc.
    unsafe { libmimalloc_sys::mi_usable_size(ptr.cast()) }
}

// SAFETY: every call is forwarded to mimalloc; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = INNER.alloc(layout);
        if !p.is_null() {
            REQUESTED.fetch_add(layout.size(), Ordering::Relaxed);
            HELD.fetch_add(held(p), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        REQUESTED.fetch_sub(layout.size(), Ordering::Relaxed);
        HELD.fetch_sub(held(ptr), Ordering::Relaxed);
        INNER.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = held(ptr);
        let p = INNER.realloc(ptr, layout, new_size);
        if !p.is_null() {
            REQUESTED.fetch_add(new_size, Ordering::Relaxed);
            REQUESTED.fetch_sub(layout.size(), Ordering::Relaxed);
            HELD.fetch_add(held(p), Ordering::Relaxed);
            HELD.fetch_sub(before, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const N: usize = 1_000_000;
const BATCH: usize = 1000;

fn snapshot() -> (usize, usize) {
    (
        REQUESTED.load(Ordering::Relaxed),
        HELD.load(Ordering::Relaxed),
    )
}

fn per_member(before: (usize, usize), after: (usize, usize)) -> (f64, f64) {
    (
        (after.0 as f64 - before.0 as f64) / N as f64,
        (after.1 as f64 - before.1 as f64) / N as f64,
    )
}

#[derive(Clone, Copy)]
enum Shape {
    Short,
    Uuid,
}

impl Shape {
    fn member(self, i: usize) -> String {
        match self {
            Shape::Short => format!("member:{i}"),
            Shape::Uuid => {
                let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                format!(
                    "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                    x >> 32,
                    (x >> 16) & 0xffff,
                    x & 0xfff,
                    (x >> 20) & 0xfff,
                    i
                )
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Short => "member:<n> (8-14 bytes)",
            Shape::Uuid => "UUID-like (36 bytes)",
        }
    }
}

fn score(i: usize) -> f64 {
    i as f64 * 1.5
}

static FILL: Script = Script::new(
    "bench_fill",
    "for i = 1, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end return 1",
);
static GC: Script = Script::new("bench_gc", "collectgarbage('collect') return 1");
static INFO: Script = Script::new(
    "bench_info",
    "local info = redis.call('INFO', 'memory')
     return tonumber(string.match(info, 'used_memory:(%d+)'))",
);
static USAGE: Script = Script::new(
    "bench_usage",
    "return redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', '0')",
);
static DEL: Script = Script::new("bench_del", "return redis.call('DEL', KEYS[1])");

fn call(script: &'static Script, key: &str, args: Vec<String>) -> Call {
    Call {
        script,
        keys: vec![key.to_owned()],
        args,
    }
}

async fn fill(exec: &dyn Executor, key: &str, shape: Shape) {
    for start in (0..N).step_by(BATCH) {
        let mut args = Vec::with_capacity(2 * BATCH);
        for i in start..start + BATCH {
            args.push(format!("{:?}", score(i)));
            args.push(shape.member(i));
        }
        exec.eval(call(&FILL, key, args)).await.expect("ZADD batch");
    }
}

fn int(r: &Reply) -> i64 {
    match r {
        Reply::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

async fn redis_figures(shape: Shape) -> Option<(f64, f64)> {
    let url =
        std::env::var("RANKD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let exec = RedisExecutor::connect(&RedisConfig::new(url)).await.ok()?;
    let key = format!("rankd-bench-memory:{}", std::process::id());
    let used = |r: Reply| int(&r) as f64;
    let before = used(exec.eval(call(&INFO, &key, vec![])).await.ok()?);
    fill(&exec, &key, shape).await;
    let after = used(exec.eval(call(&INFO, &key, vec![])).await.ok()?);
    let usage = exec
        .eval(call(&USAGE, &key, vec![]))
        .await
        .map(|r| int(&r) as f64)
        .unwrap_or(f64::NAN);
    exec.eval(call(&DEL, &key, vec![])).await.ok()?;
    Some(((after - before) / N as f64, usage / N as f64))
}

fn zset_alone(shape: Shape) -> (f64, f64) {
    let before = snapshot();
    let mut z = ZSet::new();
    for i in 0..N {
        z.insert(shape.member(i).as_bytes(), score(i));
    }
    let after = snapshot();
    assert_eq!(z.len(), N);
    drop(z);
    per_member(before, after)
}

async fn executor(shape: Shape) -> (f64, f64) {
    let exec = EmbeddedExecutor::new(Arc::new(SystemClock));
    exec.load(&[&FILL, &GC]).await.unwrap();
    exec.eval(call(&GC, "k", vec![])).await.unwrap();
    let before = snapshot();
    fill(&exec, "k", shape).await;
    exec.eval(call(&GC, "k", vec![])).await.unwrap();
    let after = snapshot();
    per_member(before, after)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("bytes per member at {N} members (score = n * 1.5)");
    println!(
        "{:<24} {:>22} {:>22} {:>22} {:>22}",
        "members", "embedded ZSet", "embedded executor", "Redis used_memory", "Redis MEMORY USAGE"
    );
    for shape in [Shape::Short, Shape::Uuid] {
        let (zr, zh) = zset_alone(shape);
        let (er, eh) = rt.block_on(executor(shape));
        let redis = rt.block_on(redis_figures(shape));
        let (ru, rm) = redis.map_or(("n/a".into(), "n/a".into()), |(u, m)| {
            (format!("{u:.1}"), format!("{m:.1}"))
        });
        println!(
            "{:<24} {:>22} {:>22} {:>22} {:>22}",
            shape.name(),
            format!("{zr:.1} req / {zh:.1} held"),
            format!("{er:.1} req / {eh:.1} held"),
            ru,
            rm
        );
    }
}
