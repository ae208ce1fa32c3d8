//! Differential tests: the embedded executor against real Redis.
//!
//! 1. Random operation sequences (every policy, order, rank mode and tie-break, windows, scopes,
//!    batches, duplicate event ids, removals, display data, board deletes, moved clocks and invalid
//!    input) run through two engines on the same key prefix and the same clock: one on Redis, one on
//!    the embedded store. Every result must be identical, errors included: the `Debug` text of each
//!    `Result` is compared as it is. No normalisation is needed, because nothing that differs between
//!    the two runs surfaces in a result: the only per-engine value, the random board version, stays
//!    inside the store and the scripts.
//! 2. Raw script replies: the same EVALSHA (script, KEYS, ARGV) through both executors, for hand-made
//!    calls of rankd's scripts (malformed ones included, whose errors carry Lua line numbers) and for
//!    random command sequences run through a probe script, compared as `Result<Reply, ExecError>`.
//!
//! Time. Redis expires keys by its own wall clock, while the engines read a `ManualClock` that the
//! sequences move forward. The comparison stays sound because:
//!
//! - the clock starts a day ahead of the wall clock and only moves forward, so every expiry the
//!   engine sets (always after the engine's now) lies beyond the wall clock for the whole test: Redis
//!   never expires a key during the test, and the embedded store expires exactly the keys whose
//!   expiry the engine clock has passed;
//! - the keys the embedded store then drops but Redis keeps are never read again through the engine:
//!   the engine refuses to read or write a period whose expiry (a function of the period and the
//!   board's retention) has passed, and its key index forgets those keys by the same clock. For that
//!   to hold, a board id keeps one retention for the whole sequence (deleted and created again
//!   included), so a period's expiry never moves; the generator guarantees it.
//!
//! What Redis keeps longer is deleted after each case by prefix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use rankd::backend::embedded::EmbeddedExecutor;
use rankd::backend::redis::{RedisConfig, RedisExecutor};
use rankd::backend::{Call, ExecError, Executor, Reply, Script};
use rankd::board::{
    BoardDef, BoardId, Display, EventId, Member, Order, Policy, RankMode, Scope, Score, TieBreak,
};
use rankd::engine::{
    scripts, Clock, Cursor, EngineConfig, Limit, ManualClock, Offset, Radius, Submit, View,
};
use rankd::keys::Keys;
use rankd::window::{Period, Window};
use rankd::Engine;

use crate::helpers::Redis;

const DAY: i64 = 86_400_000;

/// Board ids; each keeps one retention for the whole sequence (see the module documentation).
const BOARDS: [&str; 3] = ["b0", "b1", "b2"];
const RETENTION: [u32; 3] = [0, 1, 3];

/// Members: short ones, a shared prefix, non-ASCII, and one long enough (> 64 bytes) that Redis
/// keeps its sorted sets as skiplists from the start, where `-0` survives.
const MEMBERS: [&str; 10] = [
    "alice",
    "bob",
    "carol",
    "dave",
    "eve",
    "m1",
    "m10",
    "ünï",
    "a-member-whose-name-is-long-enough-to-push-redis-off-the-listpack-encoding-0001",
    "zed",
];

const VALUES: [f64; 16] = [
    1.0,
    2.0,
    -3.0,
    0.5,
    10.0,
    100.0,
    -0.0,
    0.0,
    7.0,
    2_097_151.0,
    2_097_152.0,
    67_108_863.0,
    1e15,
    1e308,
    -7.25,
    3.0,
];

const SCOPES: [&str; 2] = ["s1", "s2:x"];

fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "dt{}x{nanos:x}x{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

// ---- operations ------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct DefSpec {
    order: Order,
    policy: Policy,
    tie_break: TieBreak,
    rank_mode: RankMode,
    /// Bit i keeps `Window::EVERY[i]`; 0 is an invalid (empty) list.
    windows: u8,
    /// 0 is invalid.
    max_members: Option<u64>,
}

#[derive(Debug, Clone)]
struct Ev {
    board: usize,
    member: usize,
    value: usize,
    scopes: u8,
    event_id: Option<u8>,
    /// Offset of `at` from the clock's now; `None` for now.
    at: Option<i64>,
}

#[derive(Debug, Clone)]
enum PeriodSpec {
    Current,
    /// This many periods back.
    Back(i64),
    /// The next period, which has not started.
    Next,
}

#[derive(Debug, Clone)]
struct ViewSpec {
    /// Mostly an index into the windows the board keeps, sometimes one of `Window::EVERY`.
    window: usize,
    kept: bool,
    period: PeriodSpec,
    scope: Option<usize>,
}

#[derive(Debug, Clone)]
enum Read {
    Top(i64),
    Page(i64, i64),
    /// A cursor from the last page read, or one made of a stored score and a member.
    After(Option<(usize, usize)>, i64),
    Around(usize, i64),
    ScoreRange(usize, usize, i64),
    Standing(usize),
    Lookup(Vec<usize>),
    Count,
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, DefSpec),
    /// Changes what a live board may change: add a window, switch ordinal/competition, max_members.
    Update {
        board: usize,
        window: Option<usize>,
        switch_mode: bool,
        max_members: Option<Option<u64>>,
    },
    Submit(Ev),
    /// The same event several times: duplicates when it has an id, sums that leave a board's range
    /// when it has none.
    Repeat(Ev, usize),
    Batch(Vec<Ev>),
    Remove(usize, usize),
    Display {
        board: usize,
        member: usize,
        name: Option<usize>,
        data: bool,
    },
    Delete(usize),
    Read(usize, ViewSpec, Read),
    Boards,
    Board(usize),
    Advance(i64),
}

fn def_spec() -> impl Strategy<Value = DefSpec> {
    (
        prop_oneof![Just(Order::Desc), Just(Order::Asc)],
        prop_oneof![Just(Policy::Incr), Just(Policy::Best), Just(Policy::Set)],
        prop_oneof![Just(TieBreak::Member), Just(TieBreak::First)],
        prop_oneof![
            Just(RankMode::Ordinal),
            Just(RankMode::Competition),
            Just(RankMode::Dense)
        ],
        prop_oneof![1 => Just(0u8), 12 => 1u8..16],
        prop_oneof![6 => Just(None), 2 => (1u64..5).prop_map(Some), 1 => Just(Some(0))],
    )
        .prop_map(
            |(order, policy, tie_break, rank_mode, windows, max_members)| DefSpec {
                order,
                policy,
                tie_break,
                rank_mode,
                windows,
                max_members,
            },
        )
}

/// A board index: mostly one of [`BOARDS`], sometimes the board that is never defined.
fn board() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 0..BOARDS.len(), 1 => Just(BOARDS.len())]
}

/// An index into [`MEMBERS`]: mostly a few, so that reads find them, the long one among them.
fn member_ix() -> impl Strategy<Value = usize> {
    prop_oneof![4 => prop::sample::select(&[0usize, 1, 2, 3, 8][..]), 1 => 0..MEMBERS.len()]
}

/// An index into [`VALUES`]: mostly the small integers every board accepts.
fn value() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => prop::sample::select(&[0usize, 1, 2, 4, 5, 6, 7, 8, 9, 15][..]),
        2 => 0..VALUES.len(),
    ]
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        board(),
        member_ix(),
        value(),
        prop_oneof![3 => Just(0u8), 1 => 1u8..4],
        prop_oneof![2 => Just(None), 1 => (0u8..4).prop_map(Some)],
        prop_oneof![
            20 => Just(None),
            2 => Just(Some(-3_600_000)),
            2 => Just(Some(-2 * DAY)),
            1 => Just(Some(-40 * DAY)),
            1 => Just(Some(120_000)),
            1 => Just(Some(600_000)),
        ],
    )
        .prop_map(|(board, member, value, scopes, event_id, at)| Ev {
            board,
            member,
            value,
            scopes,
            event_id,
            at,
        })
}

fn view_spec() -> impl Strategy<Value = ViewSpec> {
    (
        0usize..4,
        prop::bool::weighted(0.85),
        prop_oneof![
            12 => Just(PeriodSpec::Current),
            2 => (1i64..4).prop_map(PeriodSpec::Back),
            1 => Just(PeriodSpec::Back(6)),
            1 => Just(PeriodSpec::Next),
        ],
        prop_oneof![5 => Just(None), 1 => (0..SCOPES.len()).prop_map(Some)],
    )
        .prop_map(|(window, kept, period, scope)| ViewSpec {
            window,
            kept,
            period,
            scope,
        })
}

fn read() -> impl Strategy<Value = Read> {
    let limit = prop_oneof![Just(1i64), Just(3), Just(20), Just(0)];
    prop_oneof![
        3 => limit.clone().prop_map(Read::Top),
        2 => (0i64..8, limit.clone()).prop_map(|(o, l)| Read::Page(o, l)),
        2 => (prop::option::of((value(), member_ix())), limit.clone())
            .prop_map(|(c, l)| Read::After(c, l)),
        2 => (member_ix(), prop_oneof![Just(0i64), Just(1), Just(3)])
            .prop_map(|(m, r)| Read::Around(m, r)),
        2 => (value(), value(), limit).prop_map(|(a, b, l)| Read::ScoreRange(a, b, l)),
        3 => member_ix().prop_map(Read::Standing),
        2 => prop::collection::vec(member_ix(), 0..5).prop_map(Read::Lookup),
        1 => Just(Read::Count),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..BOARDS.len(), def_spec()).prop_map(|(b, d)| Op::Put(b, d)),
        1 => (
            0..BOARDS.len(),
            prop::option::of(0usize..4),
            any::<bool>(),
            prop::option::of(prop::option::of(1u64..4)),
        )
            .prop_map(|(board, window, switch_mode, max_members)| Op::Update {
                board,
                window,
                switch_mode,
                max_members,
            }),
        10 => ev().prop_map(Op::Submit),
        2 => (ev(), 2usize..5).prop_map(|(e, n)| Op::Repeat(e, n)),
        2 => prop::collection::vec(ev(), 1..8).prop_map(Op::Batch),
        1 => (board(), member_ix()).prop_map(|(b, m)| Op::Remove(b, m)),
        2 => (board(), member_ix(), prop::option::of(0usize..3), any::<bool>())
            .prop_map(|(board, member, name, data)| Op::Display { board, member, name, data }),
        1 => board().prop_map(Op::Delete),
        10 => (board(), view_spec(), read()).prop_map(|(b, v, r)| Op::Read(b, v, r)),
        1 => Just(Op::Boards),
        1 => board().prop_map(Op::Board),
        2 => prop_oneof![
            Just(1_000i64),
            Just(3_600_000),
            Just(DAY),
            Just(8 * DAY),
            Just(35 * DAY),
        ]
        .prop_map(Op::Advance),
    ]
}

// ---- running ---------------------------------------------------------------------------------

fn board_id(i: usize) -> BoardId {
    // Index BOARDS.len() names a board that is never defined.
    BoardId::parse(BOARDS.get(i).copied().unwrap_or("nowhere")).unwrap()
}

fn member(i: usize) -> Member {
    Member::parse(MEMBERS[i]).unwrap()
}

fn windows(mask: u8) -> Vec<Window> {
    Window::EVERY
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, w)| *w)
        .collect()
}

fn definition(board: usize, d: &DefSpec) -> BoardDef {
    BoardDef {
        order: d.order,
        policy: d.policy,
        tie_break: d.tie_break,
        rank_mode: d.rank_mode,
        windows: windows(d.windows),
        retention_periods: RETENTION[board],
        max_members: d.max_members,
        ..BoardDef::default()
    }
}

fn submit(ev: &Ev, now: i64) -> Submit {
    let scopes: Vec<Scope> = SCOPES
        .iter()
        .enumerate()
        .filter(|(i, _)| ev.scopes & (1 << i) != 0)
        .map(|(_, s)| Scope::parse(s).unwrap())
        .collect();
    Submit {
        board: board_id(ev.board),
        member: member(ev.member),
        value: Score::new("value", VALUES[ev.value]).unwrap(),
        scopes,
        event_id: ev
            .event_id
            .map(|e| EventId::parse(&format!("ev-{e}")).unwrap()),
        at_ms: ev.at.map(|off| now + off),
    }
}

fn view(v: &ViewSpec, kept: &[Window], now: i64) -> View {
    let window = if v.kept && !kept.is_empty() {
        kept[v.window % kept.len()]
    } else {
        Window::EVERY[v.window]
    };
    let current = Period::containing(window, now).unwrap();
    let period = match v.period {
        PeriodSpec::Current => None,
        PeriodSpec::Back(n) => current.checked_offset(-n).ok(),
        PeriodSpec::Next => current.checked_offset(1).ok(),
    };
    View {
        window,
        period,
        scope: v.scope.map(|s| Scope::parse(SCOPES[s]).unwrap()),
    }
}

/// A cursor made of a stored score and a member, as `Cursor::encode` writes one.
fn cursor(value: usize, m: usize) -> Option<Cursor> {
    let mut token = format!("{:016x}", VALUES[value].to_bits());
    for b in MEMBERS[m].as_bytes() {
        token.push_str(&format!("{b:02x}"));
    }
    Cursor::decode(&token).ok()
}

struct Pair {
    redis: Engine,
    embedded: Engine,
    clock: Arc<ManualClock>,
    /// The cursor of the last page read (identical on both sides, or the case already failed).
    last_cursor: Option<Cursor>,
}

/// Runs the same call on both engines; yields the two `Debug` texts.
macro_rules! both {
    ($p:expr, |$e:ident| $body:expr) => {{
        let a = {
            let $e = &$p.redis;
            format!("{:?}", $body)
        };
        let b = {
            let $e = &$p.embedded;
            format!("{:?}", $body)
        };
        (a, b)
    }};
}

async fn apply(p: &mut Pair, op: &Op) -> (String, String) {
    let now = p.clock.now_ms();
    match op {
        Op::Put(b, d) => {
            let def = definition(*b, d);
            both!(p, |e| e.put_board(&board_id(*b), def.clone()).await)
        }
        Op::Update {
            board,
            window,
            switch_mode,
            max_members,
        } => {
            let id = board_id(*board);
            let current = both!(p, |e| e.board(&id).await.map(|i| i.definition));
            let Ok(mut def) = p.redis.board(&id).await.map(|i| i.definition) else {
                return current;
            };
            if let Some(w) = window {
                let w = Window::EVERY[*w];
                if !def.windows.contains(&w) {
                    def.windows.push(w);
                }
            }
            if *switch_mode {
                def.rank_mode = match def.rank_mode {
                    RankMode::Ordinal => RankMode::Competition,
                    RankMode::Competition => RankMode::Ordinal,
                    RankMode::Dense => RankMode::Dense,
                };
            }
            if let Some(m) = max_members {
                def.max_members = *m;
            }
            let (a, b) = both!(p, |e| e.put_board(&id, def.clone()).await);
            (format!("{}{a}", current.0), format!("{}{b}", current.1))
        }
        Op::Submit(ev) => {
            let s = submit(ev, now);
            both!(p, |e| e.submit(&s).await)
        }
        Op::Repeat(ev, n) => {
            let s = submit(ev, now);
            let (mut a, mut b) = (String::new(), String::new());
            for _ in 0..*n {
                let (x, y) = both!(p, |e| e.submit(&s).await);
                a.push_str(&x);
                b.push_str(&y);
            }
            (a, b)
        }
        Op::Batch(evs) => {
            let batch: Vec<Submit> = evs.iter().map(|ev| submit(ev, now)).collect();
            both!(p, |e| e.submit_batch(&batch).await)
        }
        Op::Remove(b, m) => both!(p, |e| e.remove_member(&board_id(*b), &member(*m)).await),
        Op::Display {
            board,
            member: m,
            name,
            data,
        } => {
            let display = Display {
                display_name: name.map(|n| ["Al", "Bé", "C c"][n].to_owned()),
                data: data.then(|| {
                    let mut map = serde_json::Map::new();
                    map.insert("level".into(), serde_json::json!(*m));
                    map.insert("tag".into(), serde_json::json!("x"));
                    map
                }),
            };
            let (a, b) = both!(p, |e| e
                .put_display(&board_id(*board), &member(*m), display.clone())
                .await);
            // Read it back where it shows: the member's standing carries the display data.
            let (c, d) = both!(p, |e| e
                .standing(&board_id(*board), &View::all_time(), &member(*m))
                .await);
            (a + &c, b + &d)
        }
        Op::Delete(b) => both!(p, |e| e.delete_board(&board_id(*b)).await),
        Op::Boards => both!(p, |e| e.boards().await),
        Op::Board(b) => both!(p, |e| e.board(&board_id(*b)).await),
        Op::Advance(ms) => {
            p.clock.advance(*ms);
            (String::new(), String::new())
        }
        Op::Read(b, v, r) => {
            let id = board_id(*b);
            let kept = match p.redis.board(&id).await {
                Ok(info) => info.definition.windows,
                Err(_) => Vec::new(),
            };
            let v = view(v, &kept, now);
            let lim = |l: &i64| Limit::new(*l);
            match r {
                Read::Top(l) => match lim(l) {
                    Ok(l) => {
                        let out = both!(p, |e| e.top(&id, &v, l).await);
                        if let Ok(page) = p.redis.top(&id, &v, l).await {
                            p.last_cursor = page.next;
                        }
                        out
                    }
                    Err(e) => (format!("{e:?}"), format!("{e:?}")),
                },
                Read::Page(o, l) => match (Offset::new(*o), lim(l)) {
                    (Ok(o), Ok(l)) => both!(p, |e| e.page(&id, &v, o, l).await),
                    _ => (String::new(), String::new()),
                },
                Read::After(c, l) => {
                    let c = match c {
                        Some((value, m)) => cursor(*value, *m),
                        None => p.last_cursor.clone(),
                    };
                    match (c, lim(l)) {
                        (Some(c), Ok(l)) => both!(p, |e| e.after(&id, &v, &c, l).await),
                        _ => (String::new(), String::new()),
                    }
                }
                Read::Around(m, r) => {
                    let r = Radius::new(*r).unwrap();
                    both!(p, |e| e.around(&id, &v, &member(*m), r).await)
                }
                Read::ScoreRange(lo, hi, l) => match lim(l) {
                    Ok(l) => {
                        let (lo, hi) = (
                            Score::new("min", VALUES[*lo]).unwrap(),
                            Score::new("max", VALUES[*hi]).unwrap(),
                        );
                        both!(p, |e| e.score_range(&id, &v, lo, hi, l).await)
                    }
                    Err(_) => (String::new(), String::new()),
                },
                Read::Standing(m) => both!(p, |e| e.standing(&id, &v, &member(*m)).await),
                Read::Lookup(ms) => {
                    let ms: Vec<Member> = ms.iter().map(|m| member(*m)).collect();
                    both!(p, |e| e.lookup(&id, &v, &ms).await)
                }
                Read::Count => both!(p, |e| e.count(&id, &v).await),
            }
        }
    }
}

/// Deletes every key under `prefix` on Redis.
async fn cleanup(redis: &dyn Executor, prefix: &str) {
    static CLEANUP: Script = Script::new(
        "differential_cleanup",
        "local cursor, n = '0', 0
         repeat
           local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
           cursor = r[1]
           for _, k in ipairs(r[2]) do n = n + redis.call('DEL', k) end
         until cursor == '0'
         return n",
    );
    let pattern = format!("{}*", prefix.replace('[', "\\[").replace('*', "\\*"));
    redis
        .eval(Call {
            script: &CLEANUP,
            keys: vec![],
            args: vec![pattern],
        })
        .await
        .expect("cleanup runs");
}

/// How many results were successes and how many errors, to show what the sequences exercised.
static OKS: AtomicU64 = AtomicU64::new(0);
static ERRS: AtomicU64 = AtomicU64::new(0);

fn tally(result: &str) {
    if result.starts_with("Ok(") {
        OKS.fetch_add(1, Ordering::Relaxed);
    } else if result.starts_with("Err(") {
        ERRS.fetch_add(1, Ordering::Relaxed);
    }
    if std::env::var_os("RANKD_DIFFERENTIAL_TRACE").is_some() {
        eprintln!("{result}");
    }
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        // Small chunks, so batches of a few events span several script calls.
        batch_chunk: 3,
        ..EngineConfig::default()
    }
}

async fn run_case(
    redis: &Arc<dyn Executor>,
    start_ms: i64,
    ops: &[Op],
) -> Result<usize, TestCaseError> {
    let prefix = unique_prefix();
    let clock = Arc::new(ManualClock::new(start_ms));
    let keys = Keys::new(&prefix).unwrap();
    let embedded: Arc<dyn Executor> = Arc::new(EmbeddedExecutor::new(clock.clone()));
    let mut p = Pair {
        redis: Engine::new(redis.clone(), keys.clone(), clock.clone(), engine_config())
            .await
            .unwrap(),
        embedded: Engine::new(embedded, keys, clock.clone(), engine_config())
            .await
            .unwrap(),
        clock,
        last_cursor: None,
    };
    let mut result = Ok(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let (a, b) = apply(&mut p, op).await;
        tally(&a);
        if a != b {
            result = Err(TestCaseError::fail(format!(
                "operation {i}, {op:?}, at {}:\n    redis:    {a}\n    embedded: {b}",
                p.clock.now_ms()
            )));
            break;
        }
    }
    cleanup(redis.as_ref(), &prefix).await;
    result
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn redis_executor() -> Arc<dyn Executor> {
    let mut rc = RedisConfig::new(Redis::Standalone.url());
    rc.pool_size = 1;
    Arc::new(RedisExecutor::connect(&rc).await.expect("connect to Redis"))
}

fn cases(default: u32) -> u32 {
    std::env::var("RANKD_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn engines_on_redis_and_on_the_embedded_store_answer_every_operation_alike() {
    let rt = runtime();
    let redis = rt.block_on(redis_executor());
    // A day ahead of the wall clock, so that no expiry the engines set is due on Redis' clock while
    // the test runs.
    let base = wall_ms() + DAY;
    let mut runner = TestRunner::new(Config {
        cases: cases(320),
        failure_persistence: None,
        ..Config::default()
    });
    let total = std::cell::Cell::new(0usize);
    // Every case starts by defining each board (valid definitions), then runs random operations.
    let first = (def_spec(), def_spec(), def_spec()).prop_map(|(a, b, c)| {
        [a, b, c].into_iter().enumerate().map(|(i, mut d)| {
            d.windows = d.windows.max(1);
            d.max_members = d.max_members.filter(|&m| m > 0);
            Op::Put(i, d)
        })
    });
    let strategy = (0..30 * DAY, first, prop::collection::vec(op(), 1..48))
        .prop_map(|(offset, first, ops)| (offset, first.chain(ops).collect::<Vec<_>>()));
    let started = std::time::Instant::now();
    let outcome = runner.run(&strategy, |(offset, ops)| {
        let n = rt.block_on(run_case(&redis, base + offset, &ops))?;
        total.set(total.get() + n);
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let (oks, errs) = (OKS.load(Ordering::Relaxed), ERRS.load(Ordering::Relaxed));
    eprintln!(
        "differential: {} operations ({oks} answered Ok, {errs} Err) in {:.1} s",
        total.get(),
        started.elapsed().as_secs_f64()
    );
    // Two engines that both failed every call would agree on every answer: most answers must be
    // answers (about 64% were, when this check was written).
    assert!(
        oks * 2 > oks + errs,
        "only {oks} of {} operations answered Ok: the comparison says little",
        oks + errs
    );
}

// ---- raw script replies ----------------------------------------------------------------------

/// Runs each command given in ARGV as `n, name, args…` through `redis.pcall`, collecting the
/// replies. Errors become strings, so one failing command does not fail the whole reply; the two
/// replies whose content Redis does not fix are made comparable: SMEMBERS is sorted, and a positive
/// PTTL (which counts down by Redis' wall clock) reads `positive`.
static PROBE: Script = Script::new(
    "differential_probe",
    "local out, i = {}, 1
     while i <= #ARGV do
       local n = tonumber(ARGV[i])
       local args = {}
       for j = 1, n do args[j] = ARGV[i + j] end
       i = i + n + 1
       local r = redis.pcall(unpack(args))
       if type(r) == 'table' and r.err then
         r = 'error: ' .. r.err
       elseif args[1] == 'SMEMBERS' and type(r) == 'table' then
         table.sort(r)
       elseif args[1] == 'PTTL' and type(r) == 'number' and r > 0 then
         r = 'positive'
       end
       out[#out + 1] = r
     end
     return out",
);

/// One command of a probe sequence: a name and its arguments, `{}` standing for the case's key
/// prefix.
#[derive(Debug, Clone)]
struct Cmd(Vec<String>);

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(items).prop_map(str::to_owned)
}

fn cmd() -> impl Strategy<Value = Cmd> {
    const KEYS: &[&str] = &["{}z1", "{}z2", "{}z1", "{}h", "{}s"];
    const SCORES: &[&str] = &[
        "1",
        "-0",
        "0",
        "1.5",
        "inf",
        "-inf",
        "+inf",
        "0.1",
        "1e21",
        "-2.5e-7",
        "0x10",
        " 1",
        "1e400",
        "1e-400",
        "nan",
        "abc",
        "",
        "7",
        "123456789.123456789",
        "1e-310",
    ];
    const BOUNDS: &[&str] = &[
        "-inf", "+inf", "(1", "1", "(", "0", "(0", "nan", "x", "1.5", " 2", "1e400", "((1", "-0",
    ];
    const INTS: &[&str] = &[
        "0",
        "1",
        "-1",
        "2",
        "-2",
        "10",
        "-10",
        "x",
        "-0",
        "01",
        "9223372036854775807",
        "9223372036854775808",
        "",
    ];
    const MEMBERS: &[&str] = &[
        "a",
        "b",
        "c",
        "",
        "B",
        "a-member-whose-name-is-long-enough-to-push-redis-off-the-listpack-encoding-0001",
    ];
    const ZADD_FLAGS: &[&str] = &["NX", "XX", "GT", "LT", "CH", "INCR", "nx", "FOO"];
    const RANGE_OPTS: &[&str] = &["WITHSCORES", "LIMIT", "REV", "BYSCORE", "withscores", "FOO"];
    const EXPIRE_OPTS: &[&str] = &["NX", "XX", "GT", "LT", "FOO"];
    const TIMES: &[&str] = &["1", "99999999999999", "99999999999998", "x", "-5"];
    // Relative: far enough ahead that neither side's clock reaches it, or already past.
    const SPANS: &[&str] = &["99999999999", "0", "-5", "x", "9223372036854775807"];
    let key = || pick(KEYS);
    let member = || pick(MEMBERS);
    let members = || prop::collection::vec(pick(MEMBERS), 0..4);
    let with = |name: &'static str, rest: Vec<String>| {
        let mut v = vec![name.to_owned()];
        v.extend(rest);
        Cmd(v)
    };
    prop_oneof![
        8 => (key(), prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(pick(ZADD_FLAGS), 1..3)],
              prop::collection::vec((pick(SCORES), member()), 0..4), prop::bool::weighted(0.1))
            .prop_map(move |(k, flags, pairs, odd)| {
                let mut v = vec![k];
                v.extend(flags);
                for (s, m) in pairs {
                    v.push(s);
                    v.push(m);
                }
                if odd {
                    v.push("1".into());
                }
                with("ZADD", v)
            }),
        4 => (key(), member()).prop_map(move |(k, m)| with("ZSCORE", vec![k, m])),
        2 => (prop::sample::select(&["ZRANK", "ZREVRANK"][..]), key(), member())
            .prop_map(move |(c, k, m)| with(c, vec![k, m])),
        1 => key().prop_map(move |k| with("ZCARD", vec![k])),
        2 => (key(), pick(BOUNDS), pick(BOUNDS)).prop_map(move |(k, a, b)| with("ZCOUNT", vec![k, a, b])),
        3 => (prop::sample::select(&["ZRANGE", "ZREVRANGE"][..]), key(), pick(INTS), pick(INTS),
              prop::collection::vec(pick(RANGE_OPTS), 0..2))
            .prop_map(move |(c, k, a, b, opts)| {
                let mut v = vec![k, a, b];
                v.extend(opts);
                with(c, v)
            }),
        3 => (prop::sample::select(&["ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZRANGE"][..]), key(),
              pick(BOUNDS), pick(BOUNDS), any::<bool>(), prop::option::of((pick(INTS), pick(INTS))),
              prop::collection::vec(pick(RANGE_OPTS), 0..2))
            .prop_map(move |(c, k, a, b, scores, limit, opts)| {
                let mut v = vec![k, a, b];
                if c == "ZRANGE" {
                    v.push("BYSCORE".into());
                }
                if scores {
                    v.push("WITHSCORES".into());
                }
                if let Some((o, l)) = limit {
                    v.extend(["LIMIT".to_owned(), o, l]);
                }
                v.extend(opts);
                with(c, v)
            }),
        1 => (key(), pick(BOUNDS), pick(BOUNDS)).prop_map(move |(k, a, b)| with("ZREMRANGEBYSCORE", vec![k, a, b])),
        1 => (key(), pick(INTS), pick(INTS)).prop_map(move |(k, a, b)| with("ZREMRANGEBYRANK", vec![k, a, b])),
        2 => (key(), members()).prop_map(move |(k, ms)| {
            let mut v = vec![k];
            v.extend(ms);
            with("ZREM", v)
        }),
        2 => (key(), prop::collection::vec((member(), pick(INTS)), 0..3), prop::bool::weighted(0.1))
            .prop_map(move |(k, pairs, odd)| {
                let mut v = vec![k];
                for (f, x) in pairs {
                    v.push(f);
                    v.push(x);
                }
                if odd {
                    v.push("v".into());
                }
                with("HSET", v)
            }),
        1 => (key(), member()).prop_map(move |(k, f)| with("HGET", vec![k, f])),
        1 => (key(), members()).prop_map(move |(k, fs)| {
            let mut v = vec![k];
            v.extend(fs);
            with("HMGET", v)
        }),
        1 => (key(), members()).prop_map(move |(k, fs)| {
            let mut v = vec![k];
            v.extend(fs);
            with("HDEL", v)
        }),
        2 => (key(), member(), pick(INTS)).prop_map(move |(k, f, n)| with("HINCRBY", vec![k, f, n])),
        1 => (prop::sample::select(&["SADD", "SREM"][..]), key(), members()).prop_map(move |(c, k, ms)| {
            let mut v = vec![k];
            v.extend(ms);
            with(c, v)
        }),
        1 => key().prop_map(move |k| with("SMEMBERS", vec![k])),
        1 => (prop::sample::select(&["DEL", "UNLINK", "EXISTS"][..]), prop::collection::vec(key(), 0..3))
            .prop_map(move |(c, ks)| with(c, ks)),
        2 => (key(), pick(TIMES), prop::collection::vec(pick(EXPIRE_OPTS), 0..2))
            .prop_map(move |(k, t, opts)| {
                let mut v = vec![k, t];
                v.extend(opts);
                with("PEXPIREAT", v)
            }),
        1 => (key(), pick(SPANS)).prop_map(move |(k, t)| with("PEXPIRE", vec![k, t])),
        1 => key().prop_map(move |k| with("PTTL", vec![k])),
        1 => (prop::sample::select(&["NOPE", "zadd", "ZaDd"][..]), members()).prop_map(move |(c, ms)| with(c, ms)),
    ]
}

/// Calls of rankd's scripts with hand-made arguments, malformed ones included.
fn direct_calls(prefix: &str) -> Vec<Call> {
    let k = |s: &str| format!("{prefix}{{b}}:{s}");
    let call = |script: &'static Script, keys: Vec<String>, args: &[&str]| Call {
        script,
        keys,
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    let page_keys = || vec![k("def"), k("z:all:all:g"), k("dv:all:all:g"), k("dn")];
    vec![
        call(&scripts::BOARD_GET, vec![k("def")], &[]),
        call(
            &scripts::BOARD_PUT,
            vec![k("def")],
            &["", "v1", "{}", "1000"],
        ),
        call(
            &scripts::BOARD_PUT,
            vec![k("def")],
            &["", "v2", "{}", "1000"],
        ),
        call(
            &scripts::BOARD_PUT,
            vec![k("def")],
            &["nope", "v2", "{}", "1000"],
        ),
        call(&scripts::BOARD_GET, vec![k("def")], &[]),
        call(&scripts::REGISTRY, vec![k("reg")], &["add", "b"]),
        call(&scripts::REGISTRY, vec![k("reg")], &["list"]),
        call(&scripts::REGISTRY, vec![k("reg")], &["bogus", "b"]),
        call(&scripts::REGISTRY, vec![k("reg")], &[]),
        // A well-formed submit, then malformed ones whose Lua errors name their lines.
        call(
            &scripts::SUBMIT,
            vec![k("def"), k("dedupe"), k("keys"), k("z:all:all:g")],
            &[
                "v1", "5000", "1000", "incr", "desc", "ordinal", "0", "0", "full", "1", "0", "0",
                "1", "alice", "-0", "e1", "1", "1", "0",
            ],
        ),
        call(
            &scripts::SUBMIT,
            vec![k("def"), k("dedupe"), k("keys"), k("z:all:all:g")],
            &[
                "v1", "5000", "1000", "incr", "desc", "ordinal", "0", "0", "full", "1",
            ],
        ),
        call(&scripts::SUBMIT, vec![k("def")], &["v1"]),
        call(&scripts::SUBMIT, vec![k("def")], &["stale"]),
        call(
            &scripts::SUBMIT,
            vec![k("def"), k("dedupe"), k("keys"), k("z:all:all:g")],
            &[
                "v1", "5000", "1000", "incr", "desc", "ordinal", "0", "0", "count", "1", "0", "0",
                "1", "bob", "nan", "", "1", "1", "0",
            ],
        ),
        call(
            &scripts::SUBMIT,
            vec![k("def"), k("dedupe"), k("keys"), k("z:all:all:g")],
            &[
                "v1",
                "5000",
                "1000",
                "set",
                "asc",
                "competition",
                "0",
                "0",
                "count",
                "1",
                "0",
                "0",
                "2",
                "carol",
                "0.1",
                "",
                "1",
                "1",
                "0",
                "dave",
                "1e308",
                "",
                "1",
                "1",
                "0",
            ],
        ),
        call(
            &scripts::READ_PAGE,
            page_keys(),
            &["v1", "desc", "ordinal", "0", "range", "0", "10"],
        ),
        call(
            &scripts::READ_PAGE,
            page_keys(),
            &[
                "v1",
                "desc",
                "competition",
                "0",
                "score",
                "-1e400",
                "1e400",
                "5",
            ],
        ),
        call(
            &scripts::READ_PAGE,
            page_keys(),
            &["v1", "asc", "ordinal", "0", "after", "0", "carol", "5"],
        ),
        call(
            &scripts::READ_PAGE,
            page_keys(),
            &["v1", "desc", "ordinal", "0", "around", "alice", "x"],
        ),
        call(
            &scripts::READ_PAGE,
            page_keys(),
            &["v1", "desc", "ordinal", "0", "bogus"],
        ),
        call(
            &scripts::READ_PAGE,
            page_keys(),
            &["v1", "desc", "ordinal", "0", "range"],
        ),
        call(
            &scripts::READ_MEMBERS,
            vec![
                k("def"),
                k("z:all:all:g"),
                k("dv:all:all:g"),
                k("dn"),
                k("dd"),
            ],
            &["v1", "desc", "dense", "0", "1", "alice", "nobody", "carol"],
        ),
        call(
            &scripts::KEY_INDEX,
            vec![k("keys")],
            &["5000", "page", "0", "10"],
        ),
        call(
            &scripts::KEY_INDEX,
            vec![k("keys")],
            &["5000", "page", "1", "1"],
        ),
        call(&scripts::KEY_INDEX, vec![k("keys")], &["9000", "prune"]),
        call(&scripts::KEY_INDEX, vec![k("keys")], &["not-a-number"]),
        call(
            &scripts::DISPLAY_PUT,
            vec![k("def"), k("dn"), k("dd")],
            &["v1", "alice", "Al", ""],
        ),
        call(
            &scripts::REMOVE_MEMBER,
            vec![k("def"), k("keys"), k("dn"), k("dd"), k("z:all:all:g")],
            &["v1", "5000", "ordinal", "alice", "0"],
        ),
        call(
            &scripts::REMOVE_MEMBER,
            vec![k("def"), k("keys"), k("dn"), k("dd")],
            &["v1", "5000", "ordinal", "alice", "0"],
        ),
        call(
            &scripts::DELETE_BOARD,
            vec![
                k("def"),
                k("dedupe"),
                k("keys"),
                k("dn"),
                k("dd"),
                k("z:all:all:g"),
            ],
            &["v1", "5000", "nope"],
        ),
        call(
            &scripts::DELETE_BOARD,
            vec![
                k("def"),
                k("dedupe"),
                k("keys"),
                k("dn"),
                k("dd"),
                k("z:all:all:g"),
            ],
            &["v1", "5000", &k("z:all:all:g")],
        ),
        call(&scripts::BOARD_GET, vec![k("def")], &[]),
    ]
}

/// Small scripts probing the Lua environment, conversions and error texts. None raises an error
/// object without an `err` string: Redis 7.0.15 crashes on `error({})`.
const SNIPPETS: &[&str] = &[
    "x = 1 return 1",
    "local function f() y = 1 end f() return 1",
    "KEYS = {} return 1",
    "string.foo = 1 return 1",
    "_G.q = 1 return 1",
    "rawset(_G, 'q', 1) return 1",
    "setmetatable(_G, nil) return 1",
    "return zz",
    "return type(print)",
    "return type(os)",
    "return type(getfenv)",
    "local t = KEYS; t[1] = 'x'; return t[1]",
    "error('boom')",
    "error('boom', 0)",
    "error({err='BOOM x'})",
    "error({err='ERR multi\\nline'})",
    "return redis.call('ZADD', KEYS[1], 'x', 'm')",
    "return redis.pcall('ZADD', KEYS[1], 'x', 'm')",
    "local a = 1\nlocal b = 2\nreturn redis.call('NOPE')",
    "local function f()\n  return redis.call('ZADD', 'k')\nend\nreturn f()",
    "return redis.call()",
    "return redis.pcall()",
    "return redis.call('GET', {})",
    "return redis.pcall('HGET', KEYS[1], nil)",
    "local x = nil\nreturn x.y",
    "return string.rep()",
    "return 1 + {}",
    "redis.call('HSET', KEYS[1], 'f', 'v')\nreturn redis.call('ZCARD', KEYS[1])",
    "local ok, e = pcall(redis.call, 'ZADD', 'k') return e",
    "return {pcall(error, {err='x'})}",
    "return {pcall(error, {err=5})}",
    "return {pcall(function() return 1, nil, 3 end)}",
    "return select('#', pcall(function() return 1, nil end))",
    "local r = redis.pcall('NOPE') return {r.err, tostring(r.ignore_error_stats_update)}",
    "local r = redis.pcall('ZADD', KEYS[1], 'x', 'm') return tostring(r.ignore_error_stats_update)",
    "return {1, 2, nil, 3}",
    "return 3.7",
    "return -3.7",
    "return 1e300",
    "return -1e300",
    "return 0/0",
    "return true",
    "return false",
    "return nil",
    "return",
    "return {true, false, 'a'}",
    "return {1, {2, {3}}}",
    "return {err='bad thing'}",
    "return {err='a\\nb'}",
    "return {err=5}",
    "return {ok=5}",
    "return {ok='fine'}",
    "return {ok='a', err='b'}",
    "return {double=0.1}",
    "return {double=1/0}",
    "return {1, {err='x'}, 3}",
    "return {1, {ok='x'}, 3}",
    "return redis.error_reply('RANKD_X y')",
    "return redis.error_reply('foo')",
    "return redis.error_reply('-foo')",
    "return redis.error_reply('-CODE')",
    "return redis.error_reply('a\\nb')",
    "return redis.error_reply('\\nX y\\n')",
    "return redis.error_reply(5)",
    "return redis.error_reply()",
    "return redis.status_reply('x\\r\\ny')",
    "return redis.status_reply(5)",
    "return redis.sha1hex('')",
    "return redis.sha1hex('\\0\\255abc')",
    "return redis.sha1hex(12)",
    "return redis.sha1hex()",
    "return redis.log(redis.LOG_NOTICE, 'from a differential test')",
    "return redis.log('x', 'y')",
    "return redis.log(1)",
    "return redis.log(9, 'y')",
    "return redis.log(redis.LOG_NOTICE, 'x', {}, 3)",
    "return redis.set_repl()",
    "return redis.set_repl(99)",
    "return redis.set_repl(redis.REPL_ALL)",
    "return tostring(redis.replicate_commands())",
    "return {redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING}",
    "return tostring(1e15)",
    "return _VERSION",
    "return #ARGV",
    "return ('abc'):upper() .. string.format('%.17g', 0.1)",
    "return string.format('%d %s %5.2f', 3.7, 'x', 1/3)",
    "return tostring(tonumber('0x10')) .. tostring(tonumber('  5  ')) .. tostring(tonumber('1e'))",
    "return tostring(math.huge) .. tostring(-math.huge) .. tostring(math.floor(-0.5))",
    "local t = {} for i = 1, 5 do t[i] = i * i end return table.concat(t, ',')",
    "local t = {'b', 'a', 'C', 'aa'} table.sort(t) return t",
    "return select('#', unpack({1, 2, 3}))",
    "return {pcall(error)}",
    "return type(coroutine.create(function() end))",
    "return loadstring('return 7')()",
    "return loadstring('x =')",
    "return getmetatable('').__index",
    "getmetatable('').__index = nil return 1",
    "return ('x'):rep(3)",
    "return getmetatable(_G)",
    "return type(getmetatable(_G))",
    "return tostring(getmetatable(string))",
    "getmetatable(_G).__index = nil return 1",
    "redis.call('HSET', KEYS[1], 'f', 0.1) return redis.call('HGET', KEYS[1], 'f')",
    "redis.call('HSET', KEYS[1], 'f', 1e20) return redis.call('HGET', KEYS[1], 'f')",
    "redis.call('HSET', KEYS[1], 'f', -0.0) return redis.call('HGET', KEYS[1], 'f')",
    "redis.call('HSET', KEYS[1], 'f', 1/0) return redis.call('HGET', KEYS[1], 'f')",
    "redis.call('HSET', KEYS[1], 'f', 0/0) return redis.call('HGET', KEYS[1], 'f')",
    "redis.call('HSET', KEYS[1], 'f', 2^53 + 1) return redis.call('HGET', KEYS[1], 'f')",
    "return redis.call('ZADD', KEYS[1], 'INCR', '-0', 'm')",
    "for i = 1, 200 do redis.call('ZADD', KEYS[1], i, 'm' .. i) end      redis.call('ZADD', KEYS[1], '-0', 'z') return redis.call('ZRANGE', KEYS[1], 0, 2, 'WITHSCORES')",
    "for i = 1, 300 do redis.call('ZADD', KEYS[1], i % 7, 'm' .. i) end      return {redis.call('ZCOUNT', KEYS[1], '(2', 5), redis.call('ZRANK', KEYS[1], 'm77'),              redis.call('ZREVRANGEBYSCORE', KEYS[1], '(4', 3, 'WITHSCORES', 'LIMIT', 3, 4),              redis.call('ZREMRANGEBYRANK', KEYS[1], 10, -100), redis.call('ZCARD', KEYS[1])}",
    "for i = 1, 50 do redis.call('ZADD', KEYS[1], 1 / i, 'm' .. i) end      return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')",
];

async fn compare_calls(
    redis: &dyn Executor,
    embedded: &dyn Executor,
    calls: Vec<Call>,
) -> Result<usize, String> {
    let n = calls.len();
    for (i, call) in calls.into_iter().enumerate() {
        let a: Result<Reply, ExecError> = redis.eval(call.clone()).await;
        let b = embedded.eval(call.clone()).await;
        if a != b {
            let what = if call.script.source().len() < 400 {
                call.script.source()
            } else {
                call.script.name()
            };
            return Err(format!(
                "call {i} ({what} {:?} {:?}):\n    redis:    {a:?}\n    embedded: {b:?}",
                call.keys, call.args
            ));
        }
    }
    Ok(n)
}

#[test]
fn raw_script_replies_from_redis_and_from_the_embedded_store_are_identical() {
    let rt = runtime();
    let redis = rt.block_on(redis_executor());
    let started = std::time::Instant::now();
    let mut total = 0;

    // rankd's scripts, called directly.
    let prefix = unique_prefix();
    let clock = Arc::new(ManualClock::new(wall_ms()));
    let embedded = EmbeddedExecutor::new(clock);
    let direct = rt.block_on(compare_calls(
        redis.as_ref(),
        &embedded,
        direct_calls(&prefix),
    ));
    rt.block_on(cleanup(redis.as_ref(), &prefix));
    total += direct.unwrap_or_else(|e| panic!("{e}"));

    // The Lua environment, one snippet at a time.
    let prefix = unique_prefix();
    let snippets: Vec<Call> = SNIPPETS
        .iter()
        .map(|src| Call {
            script: Box::leak(Box::new(Script::new("differential_snippet", src))),
            keys: vec![format!("{prefix}k")],
            args: vec![],
        })
        .collect();
    let mut n = 0;
    for call in snippets {
        // A fresh store for each, as the Redis side is emptied after each.
        let embedded = EmbeddedExecutor::new(Arc::new(ManualClock::new(wall_ms())));
        let out = rt.block_on(compare_calls(redis.as_ref(), &embedded, vec![call]));
        rt.block_on(cleanup(redis.as_ref(), &prefix));
        n += out.unwrap_or_else(|e| panic!("{e}"));
    }
    total += n;

    // Random command sequences through the probe script, one call per command.
    let mut runner = TestRunner::new(Config {
        cases: cases(320),
        failure_persistence: None,
        ..Config::default()
    });
    let count = std::cell::Cell::new(0usize);
    let outcome = runner.run(&prop::collection::vec(cmd(), 1..40), |cmds| {
        let prefix = unique_prefix();
        let clock = Arc::new(ManualClock::new(wall_ms()));
        let embedded = EmbeddedExecutor::new(clock);
        let calls: Vec<Call> = cmds
            .iter()
            .map(|Cmd(args)| {
                let mut argv = vec![args.len().to_string()];
                argv.extend(args.iter().map(|a| a.replace("{}", &prefix)));
                Call {
                    script: &PROBE,
                    keys: vec![],
                    args: argv,
                }
            })
            .collect();
        let r = rt.block_on(compare_calls(redis.as_ref(), &embedded, calls));
        rt.block_on(cleanup(redis.as_ref(), &prefix));
        count.set(count.get() + cmds.len());
        r.map(|_| ()).map_err(TestCaseError::fail)
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    total += count.get();
    eprintln!(
        "differential: {total} raw calls in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
