//! Soak: the `rankd serve` binary under mixed load for a bounded time while its backend fails, on
//! both engines; then every acknowledged event must be there exactly once, and rankd's memory must
//! not grow.
//!
//! - **redis**: a private redis-server (no persistence) on a free loopback port, a Postgres
//!   database of the run's own, `sync` durability. Faults, at random times: Redis killed and
//!   started empty (rankd rebuilds the boards from Postgres), and rankd SIGKILLed and started
//!   again, in turn.
//! - **embedded**: the default, no Redis, SQLite in a scratch directory. Faults: rankd SIGKILLed
//!   and started again.
//!
//! The load, from `--clients` tasks: single score events, batches of 5–50 events over the boards,
//! and reads (top pages, members, around). Every event has an event id of its own; one answered
//! anything but 200 (503 `unavailable` or `unconfirmed`, a dropped connection, a dead process) is
//! sent again with the same id until it is acknowledged, so at the end each event was applied once
//! or the run failed. Then the boards are read and compared with a model of the events, member by
//! member (scopes too); rankd is killed once more (and Redis restarted empty) and the boards
//! compared again; and the store's log must hold each event once (`rankd_ops`: per member, the
//! number of events and their sum).
//!
//! Memory: the child's RSS (`/proc/<pid>/status`) every second. Its growth is a least-squares
//! slope pooled over the stretches between faults (each with its own intercept: a new process
//! starts afresh, and a rebuild after a Redis restart leaves its own level), of the lowest sample of
//! each 10 s (what rankd holds between a snapshot's or a rebuild's passing peaks), from the samples
//! past `--warmup-secs` of the run and 20 s into each stretch. On the embedded engine the dedupe window
//! is 60 s, so that the event ids it keeps in its memory reach their steady size within the
//! warm-up; on Redis, which keeps them there, 900 s, longer than a rebuild under load takes.
//!
//! `cargo bench --bench soak -- [--secs N] [--engine redis|embedded|both] [--clients C]
//! [--warmup-secs W] [--fault-gap MIN-MAX] [--seed S] [--out FILE]`: N seconds of load per engine
//! (default 600, so 20 minutes for both), faults MIN to MAX seconds apart (default 30-75), then up
//! to 3 minutes of checks each. The redis engine needs
//! RANKD_TEST_DATABASE_URL (scripts/services up) and redis-server on the PATH; the shared Redis is
//! not used. Not run in CI. Only loopback addresses; every loop is bounded in count and time; the
//! database, the scratch directory and the child processes go at the end, whatever happens (a
//! failed run copies rankd's log out first).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The boards: (id, definition, whether its events carry a scope).
const BOARDS: [(&str, &str, bool); 3] = [
    ("plain", "{}", false),
    ("scoped", "{}", true),
    ("first", r#"{"tie_break": "first"}"#, false),
];
/// Members of each board.
const MEMBERS: u64 = 200;
/// Scopes of the scoped board (a member's scope is its number modulo this).
const SCOPES: u64 = 4;
/// rankd's dedupe window on the embedded engine, whose memory holds the event ids: short, so that
/// they reach their steady size within the warm-up. An event resent later than its window may be
/// applied twice.
const DEDUPE_SECS_EMBEDDED: u64 = 60;
/// On Redis, which holds them there: longer than a rebuild under load takes (70 s in a debug build
/// on a busy host), so that events resent across one stay exactly-once.
const DEDUPE_SECS_REDIS: u64 = 900;
/// Each stretch between faults is left out of the memory fit for this long after its fault.
const STRETCH_WARMUP: f64 = 20.0;
/// Longest a request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// After the load, how long unacknowledged events are resent, and how long a check may retry.
const SETTLE: Duration = Duration::from_secs(180);
/// Most attempts at one event or batch.
const MAX_ATTEMPTS: u32 = 2_000;
/// Most operations one client runs.
const MAX_OPS: u64 = 50_000_000;

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

/// SplitMix64: enough randomness for a load, reproducible from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

struct Options {
    secs: u64,
    clients: u64,
    warmup: f64,
    seed: u64,
    /// Seconds between faults, least and most.
    gap: (u64, u64),
}

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Redis,
    Embedded,
}

impl Engine {
    fn dedupe_secs(self) -> u64 {
        match self {
            Engine::Redis => DEDUPE_SECS_REDIS,
            Engine::Embedded => DEDUPE_SECS_EMBEDDED,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Engine::Redis => "redis + postgres (sync)",
            Engine::Embedded => "embedded + sqlite (sync)",
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs benches with --test: nothing to soak then.
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let o = Options {
        secs: arg(&args, "--secs", 600),
        clients: arg(&args, "--clients", 8),
        warmup: arg(&args, "--warmup-secs", 90.0),
        seed: arg(
            &args,
            "--seed",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        ),
        gap: {
            let gap: String = arg(&args, "--fault-gap", "30-75".to_owned());
            let parsed = gap
                .split_once('-')
                .and_then(|(lo, hi)| Some((lo.parse().ok()?, hi.parse().ok()?)));
            parsed.unwrap_or_else(|| panic!("--fault-gap takes MIN-MAX seconds, not {gap}"))
        },
    };
    assert!(
        (10..=86_400).contains(&o.secs),
        "--secs must be from 10 to 86400"
    );
    assert!((1..=256).contains(&o.clients), "--clients must be 1 to 256");
    assert!(
        o.gap.0 >= 10 && o.gap.0 <= o.gap.1,
        "--fault-gap takes MIN-MAX seconds, MIN at least 10 and at most MAX"
    );
    let engines = match args
        .iter()
        .position(|a| a == "--engine")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        None | Some("both") => vec![Engine::Redis, Engine::Embedded],
        Some("redis") => vec![Engine::Redis],
        Some("embedded") => vec![Engine::Embedded],
        Some(other) => panic!("--engine takes redis, embedded or both, not {other}"),
    };
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned();
    println!(
        "soak: {} s per engine, {} clients, warm-up {} s, faults {}-{} s apart, seed {}, rankd built with debug assertions: {}",
        o.secs,
        o.clients,
        o.warmup,
        o.gap.0,
        o.gap.1,
        o.seed,
        cfg!(debug_assertions)
    );
    let mut table = String::from(
        "| engine | events acknowledged (single + batched) | reads | faults | longest recovery | resent | left unresolved | unexpected answers | boards live / after a final restart / store log | RSS after warm-up → end | RSS growth (fit) |\n\
         | --- | --: | --: | --- | --: | --: | --: | --: | --- | --- | --: |\n",
    );
    let mut failed = false;
    for engine in engines {
        let report = soak(&o, engine).await;
        failed |= !report.passed;
        table.push_str(&report.row);
        table.push('\n');
        println!("{}", report.details);
    }
    print!("\n{table}");
    if let Some(path) = out {
        std::fs::write(path, &table).expect("results file written");
    }
    assert!(
        !failed,
        "the soak found acknowledged events missing or doubled (see above)"
    );
}

/// What one engine's soak found.
struct Report {
    row: String,
    details: String,
    passed: bool,
}

/// The services of one engine, removed when dropped.
struct Services {
    engine: Engine,
    redis: Option<PrivateRedis>,
    db: Option<(String, String)>,
    dir: PathBuf,
}

impl Services {
    async fn start(engine: Engine, pid: u32) -> Self {
        // Checked before anything is made, so that a missing variable leaves nothing behind.
        let base = (engine == Engine::Redis).then(|| env("RANKD_TEST_DATABASE_URL"));
        let dir = std::env::temp_dir().join(format!("rankd-soak-{pid}-{}", engine_tag(engine)));
        std::fs::create_dir_all(&dir).unwrap();
        match engine {
            Engine::Embedded => Self {
                engine,
                redis: None,
                db: None,
                dir,
            },
            Engine::Redis => {
                let base = base.unwrap();
                let (server, _) = base
                    .rsplit_once('/')
                    .expect("the database URL names a database");
                let name = format!("rankd_soak_{pid}");
                let admin = format!("{server}/postgres");
                let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .expect("Postgres answers");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut c)
                    .await
                    .unwrap();
                Self {
                    engine,
                    redis: Some(PrivateRedis::start(free_port()).await),
                    db: Some((admin, format!("{server}/{name}"))),
                    dir,
                }
            }
        }
    }

    fn db_url(&self) -> Option<&str> {
        self.db.as_ref().map(|(_, url)| url.as_str())
    }

    /// Drops the database and the scratch directory; the redis-server goes with `self`.
    async fn remove(&mut self) {
        if let Some((admin, url)) = self.db.take() {
            let name = url.rsplit_once('/').unwrap().1.to_owned();
            if let Ok(mut c) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn engine_tag(engine: Engine) -> &'static str {
    match engine {
        Engine::Redis => "redis",
        Engine::Embedded => "embedded",
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of the soak's own, without persistence: a restart starts it empty.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start(port: u16) -> Self {
        let mut r = Self { port, child: None };
        r.restart().await;
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it if it runs, then starts it empty on the same port and waits until it answers.
    async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "ping"])
            .output()
            .map(|o| !String::from_utf8_lossy(&o.stdout).contains("PONG"))
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "private redis-server answers");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The rankd binary as a child process, SIGKILLed when dropped.
struct Rankd {
    child: Option<Child>,
    port: u16,
    life: u64,
}

impl Rankd {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `rankd serve` for `s` and waits for `/readyz` to answer 200.
    async fn start(&mut self, s: &Services, http: &reqwest::Client) {
        assert!(self.child.is_none(), "rankd already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.dir.join("rankd.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rankd"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env_remove("RANKD_CONFIG")
            .env_remove("RANKD_REDIS_URL")
            .env_remove("RANKD_DATABASE_URL")
            .env("RANKD_API_KEYS", "")
            .env("RANKD_LOG", "warn")
            .env("RANKD_DURABILITY", "sync")
            .env(
                "RANKD_DEDUPE_WINDOW_SECS",
                s.engine.dedupe_secs().to_string(),
            )
            // Snapshots (rebuild bases) are taken during the run, and restarts start from them.
            .env("RANKD_SNAPSHOT_INTERVAL_SECS", "60")
            .env("RANKD_DATA_DIR", s.dir.join("data"))
            .current_dir(&s.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let (Some(redis), Some(db)) = (&s.redis, s.db_url()) {
            cmd.env("RANKD_REDIS_URL", redis.url())
                .env("RANKD_DATABASE_URL", db);
        }
        self.child = Some(cmd.spawn().expect("the rankd binary starts"));
        self.life += 1;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = http
                .get(format!("{}/readyz", self.base()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rankd exited with {status} before it was ready (log: {})",
                    s.dir.join("rankd.log").display()
                );
            }
            assert!(Instant::now() < deadline, "rankd ready within 120 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Rankd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One score event.
#[derive(Clone)]
struct Event {
    board: usize,
    member: u64,
    value: u64,
    id: String,
}

impl Event {
    fn body(&self, with_board: bool) -> Value {
        let mut v = json!({
            "member": format!("m{}", self.member),
            "value": self.value,
            "event_id": self.id,
        });
        if with_board {
            v["board"] = json!(BOARDS[self.board].0);
        }
        if BOARDS[self.board].2 {
            v["scopes"] = json!([format!("g:{}", self.member % SCOPES)]);
        }
        v
    }
}

/// What the clients saw, shared.
#[derive(Default)]
struct Tally {
    single: AtomicU64,
    batched: AtomicU64,
    reads: AtomicU64,
    resent: AtomicU64,
    unresolved: AtomicU64,
    /// Events first acknowledged more than the dedupe window after they were first sent.
    late: AtomicU64,
    /// A first sending answered as a duplicate: an event id remembered that was never applied.
    fresh_duplicates: AtomicU64,
    unexpected: AtomicU64,
    /// The first unexpected answers, for the report.
    samples: Mutex<Vec<String>>,
    /// (board, member) -> (events, sum of values) of every acknowledged event.
    model: Mutex<HashMap<(usize, u64), (u64, u64)>>,
}

impl Tally {
    fn unexpected(&self, what: String) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap();
        if s.len() < 10 {
            s.push(what);
        }
    }

    fn acked(&self, events: &[Event]) {
        let mut m = self.model.lock().unwrap();
        for e in events {
            let entry = m.entry((e.board, e.member)).or_default();
            entry.0 += 1;
            entry.1 += e.value;
        }
    }
}

/// Where the clients send: the port stays the same across rankd's lives.
struct Target {
    base: String,
    http: reqwest::Client,
    tally: Tally,
    /// When the clients stop taking on new work.
    load_end: Instant,
    /// When they stop resending.
    give_up: Instant,
    /// rankd's dedupe window.
    dedupe_secs: u64,
}

/// Sends `events` (one event alone, or a batch) until rankd acknowledges them all.
async fn send_until_acked(t: &Target, events: Vec<Event>, batch: bool) {
    let first = Instant::now();
    let (url, body) = if batch {
        let items: Vec<Value> = events.iter().map(|e| e.body(true)).collect();
        (
            format!("{}/v1/scores/batch", t.base),
            json!({ "events": items }),
        )
    } else {
        let e = &events[0];
        (
            format!("{}/v1/boards/{}/scores", t.base, BOARDS[e.board].0),
            e.body(false),
        )
    };
    for attempt in 0..MAX_ATTEMPTS {
        if Instant::now() > t.give_up {
            break;
        }
        if attempt > 0 {
            t.tally.resent.fetch_add(1, Ordering::Relaxed);
            let backoff = Duration::from_millis((25u64 << attempt.min(5)).min(1_000));
            tokio::time::sleep(backoff).await;
        }
        let sent = t
            .http
            .post(&url)
            .json(&body)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        let Ok(r) = sent else { continue };
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap_or(Value::Null);
        match status {
            200 => {
                let duplicates = if batch {
                    answer["duplicates"].as_u64().unwrap_or(0)
                } else {
                    u64::from(answer["duplicate"] == true)
                };
                if attempt == 0 && duplicates > 0 {
                    t.tally
                        .fresh_duplicates
                        .fetch_add(duplicates, Ordering::Relaxed);
                }
                if first.elapsed() > Duration::from_secs(t.dedupe_secs) {
                    t.tally
                        .late
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                }
                let n = events.len() as u64;
                let counter = if batch {
                    &t.tally.batched
                } else {
                    &t.tally.single
                };
                counter.fetch_add(n, Ordering::Relaxed);
                t.tally.acked(&events);
                return;
            }
            // Not applied, or perhaps applied: the same event ids again. A batch partly applied
            // (409) is resent whole: the applied events come back as duplicates.
            503 => {}
            409 if batch => {}
            // Refused whole, so not applied: not in the model, and not sent again.
            400..=499 => {
                t.tally.unexpected(format!("{status} to {url}: {answer}"));
                return;
            }
            _ => t.tally.unexpected(format!("{status} to {url}: {answer}")),
        }
    }
    t.tally
        .unresolved
        .fetch_add(events.len() as u64, Ordering::Relaxed);
}

/// One client: random operations until the load ends.
async fn client(t: Arc<Target>, n: u64, seed: u64) {
    let mut rng = Rng(seed ^ (n + 1).wrapping_mul(0xa076_1d64_78bd_642f));
    let mut next_id = 0u64;
    let mut event = |rng: &mut Rng| {
        next_id += 1;
        Event {
            board: rng.range(0, BOARDS.len() as u64 - 1) as usize,
            member: rng.range(0, MEMBERS - 1),
            value: rng.range(1, 9),
            id: format!("c{n}-{next_id}"),
        }
    };
    for _ in 0..MAX_OPS {
        if Instant::now() >= t.load_end {
            return;
        }
        let pick = rng.range(0, 99);
        if pick < 55 {
            let e = event(&mut rng);
            send_until_acked(&t, vec![e], false).await;
        } else if pick < 70 {
            let events = (0..rng.range(5, 50)).map(|_| event(&mut rng)).collect();
            send_until_acked(&t, events, true).await;
        } else {
            let (board, scoped) = {
                let b = BOARDS[rng.range(0, BOARDS.len() as u64 - 1) as usize];
                (b.0, b.2)
            };
            let m = rng.range(0, MEMBERS - 1);
            let path = match rng.range(0, 2) {
                0 if scoped => format!("top?limit=50&scope=g:{}", m % SCOPES),
                0 => "top?limit=50".to_owned(),
                1 => format!("members/m{m}"),
                _ => format!("members/m{m}/around?radius=5"),
            };
            let url = format!("{}/v1/boards/{board}/{path}", t.base);
            if let Ok(r) = t.http.get(&url).timeout(REQUEST_TIMEOUT).send().await {
                match r.status().as_u16() {
                    200 => {
                        t.tally.reads.fetch_add(1, Ordering::Relaxed);
                    }
                    // A member not written yet; a board being rebuilt, or its backend away.
                    404 | 503 => {}
                    s => {
                        let body = r.text().await.unwrap_or_default();
                        t.tally.unexpected(format!("{s} to GET {url}: {body}"));
                    }
                }
            }
        }
    }
}

/// One RSS sample: seconds into the run, the stretch between faults, kB.
type Sample = (f64, u64, u64);

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Seconds of samples each floor of the fit is taken over.
const FLOOR_WINDOW: f64 = 10.0;

/// The lowest sample of each FLOOR_WINDOW seconds of each stretch: what rankd holds between its
/// passing peaks (a snapshot rebuilding a board in memory, a rebuild after a Redis restart), which
/// a fit of every sample follows instead of the trend when a short run ends on one.
fn floors(samples: Vec<Sample>) -> Vec<Sample> {
    let mut low: HashMap<(u64, u64), Sample> = HashMap::new();
    for s in samples {
        let window = (s.1, (s.0 / FLOOR_WINDOW) as u64);
        let held = low.entry(window).or_insert(s);
        if s.2 < held.2 {
            *held = s;
        }
    }
    let mut out: Vec<Sample> = low.into_values().collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The slope (kB/s) of RSS against time, pooled over stretches: each stretch's samples centred on
/// its own means. `None` without two samples in some stretch.
fn pooled_slope(samples: &[Sample]) -> Option<f64> {
    let mut stretches: HashMap<u64, Vec<(f64, f64)>> = HashMap::new();
    for &(t, stretch, kb) in samples {
        stretches.entry(stretch).or_default().push((t, kb as f64));
    }
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for points in stretches.values().filter(|p| p.len() >= 2) {
        let n = points.len() as f64;
        let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mr = points.iter().map(|p| p.1).sum::<f64>() / n;
        for (t, r) in points {
            sxy += (t - mt) * (r - mr);
            sxx += (t - mt) * (t - mt);
        }
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Reads every board (and each scope of the scoped one) and compares it with the model: `None`
/// when every member has the sum of its acknowledged events, else what differs.
async fn check_boards(t: &Target, deadline: Instant) -> Option<String> {
    let model = t.tally.model.lock().unwrap().clone();
    let mut differences = Vec::new();
    for (b, (board, _, scoped)) in BOARDS.iter().enumerate() {
        let mut views: Vec<(String, Option<u64>)> = vec![(String::new(), None)];
        if *scoped {
            views.extend((0..SCOPES).map(|s| (format!("&scope=g:{s}"), Some(s))));
        }
        for (query, scope) in views {
            let url = format!("{}/v1/boards/{board}/top?limit=1000{query}", t.base);
            let got = loop {
                let r = t.http.get(&url).timeout(REQUEST_TIMEOUT).send().await;
                if let Ok(r) = r {
                    if r.status() == 200 {
                        break r.json::<Value>().await.unwrap();
                    }
                }
                if Instant::now() > deadline {
                    return Some(format!("{url} never answered 200"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let got: HashMap<u64, f64> = got["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let m = e["member"].as_str().unwrap()[1..].parse().unwrap();
                    (m, e["score"].as_f64().unwrap())
                })
                .collect();
            let want: HashMap<u64, f64> = model
                .iter()
                .filter(|((mb, m), _)| *mb == b && scope.is_none_or(|s| m % SCOPES == s))
                .map(|((_, m), (_, sum))| (*m, *sum as f64))
                .collect();
            if got != want {
                let mut diff: Vec<String> = want
                    .iter()
                    .filter(|(m, v)| got.get(m) != Some(v))
                    .map(|(m, v)| format!("m{m}: {:?} for {v}", got.get(m)))
                    .chain(
                        got.keys()
                            .filter(|m| !want.contains_key(m))
                            .map(|m| format!("m{m}: not written, yet {}", got[m])),
                    )
                    .take(5)
                    .collect();
                diff.sort();
                differences.push(format!("{board}{query}: {}", diff.join(", ")));
            }
        }
    }
    (!differences.is_empty()).then(|| differences.join("; "))
}

/// The store's log against the model: per member, the number of stored events and their sum.
async fn check_store(s: &Services, model: &HashMap<(usize, u64), (u64, u64)>) -> Option<String> {
    let sql = "SELECT board, member, count(*), sum(value) * 1.0 FROM rankd_ops WHERE op = 'e' \
               GROUP BY board, member";
    let rows: Vec<(String, String, i64, f64)> = match s.engine {
        Engine::Redis => {
            let pool = sqlx::PgPool::connect(s.db_url().unwrap()).await.unwrap();
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        Engine::Embedded => {
            let file = s.dir.join("data").join("rankd.sqlite3");
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&file)
                .read_only(true);
            let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    };
    let stored: HashMap<(usize, u64), (u64, u64)> = rows
        .into_iter()
        .map(|(board, member, n, sum)| {
            let b = BOARDS.iter().position(|x| x.0 == board).unwrap();
            ((b, member[1..].parse().unwrap()), (n as u64, sum as u64))
        })
        .collect();
    if &stored == model {
        return None;
    }
    let diff: Vec<String> = model
        .iter()
        .filter(|(k, v)| stored.get(k) != Some(v))
        .take(5)
        .map(|((b, m), v)| {
            format!(
                "{} m{m}: stored {:?} for {v:?}",
                BOARDS[*b].0,
                stored.get(&(*b, *m))
            )
        })
        .collect();
    Some(format!(
        "{} members stored, {} in the model; {}",
        stored.len(),
        model.len(),
        diff.join(", ")
    ))
}

async fn soak(o: &Options, engine: Engine) -> Report {
    let mut services = Services::start(engine, std::process::id()).await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run(
        o,
        engine,
        &mut services,
    )))
    .await;
    services.remove().await;
    match outcome {
        Ok(report) => report,
        Err(p) => std::panic::resume_unwind(p),
    }
}

async fn run(o: &Options, engine: Engine, services: &mut Services) -> Report {
    let http = reqwest::Client::new();
    let mut rankd = Rankd {
        child: None,
        port: free_port(),
        life: 0,
    };
    rankd.start(services, &http).await;
    for (board, def, _) in BOARDS {
        let r = http
            .put(format!("{}/v1/boards/{board}", rankd.base()))
            .header("content-type", "application/json")
            .body(def)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "board {board} created");
    }
    let started = Instant::now();
    let load_end = started + Duration::from_secs(o.secs);
    let target = Arc::new(Target {
        base: rankd.base(),
        http: http.clone(),
        tally: Tally::default(),
        load_end,
        give_up: load_end + SETTLE,
        dedupe_secs: engine.dedupe_secs(),
    });
    let clients: Vec<_> = (0..o.clients)
        .map(|n| tokio::spawn(client(target.clone(), n, o.seed)))
        .collect();
    // The sampler reads whichever rankd lives now, and the stretch between faults it is in.
    let mut stretch = 1;
    let current: Arc<Mutex<Option<(u32, u64)>>> =
        Arc::new(Mutex::new(rankd.pid().map(|p| (p, stretch))));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let mut stretch_started: HashMap<u64, f64> = HashMap::from([(1, 0.0)]);
    let sampler = {
        let (current, samples) = (current.clone(), samples.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while Instant::now() < load_end {
                tick.tick().await;
                let now = *current.lock().unwrap();
                if let Some((pid, stretch)) = now {
                    if let Some(kb) = rss_kb(pid) {
                        let t = started.elapsed().as_secs_f64();
                        samples.lock().unwrap().push((t, stretch, kb));
                    }
                }
            }
        })
    };
    // Faults at random, --fault-gap (30–75 s) apart; on Redis, a Redis restart and a rankd kill in
    // turn.
    let mut rng = Rng(o.seed ^ 0x5eed);
    let mut redis_turn = rng.next().is_multiple_of(2);
    let (mut kills, mut restarts, mut longest) = (0u32, 0u32, Duration::ZERO);
    let mut faults = Vec::new();
    loop {
        let at = Instant::now() + Duration::from_secs(rng.range(o.gap.0, o.gap.1));
        if at + Duration::from_secs(5) >= load_end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let t = started.elapsed().as_secs_f64();
        let began = Instant::now();
        stretch += 1;
        stretch_started.insert(stretch, t);
        if engine == Engine::Redis && redis_turn {
            services.redis.as_mut().unwrap().restart().await;
            *current.lock().unwrap() = Some((rankd.pid().unwrap(), stretch));
            restarts += 1;
            // Recovered once every board answers again (rebuilt from Postgres).
            if let Some(d) = check_reachable(&target, began + Duration::from_secs(120)).await {
                faults.push(format!("{t:.0} s: Redis restart: {d}"));
            }
            faults.push(format!(
                "{t:.0} s: Redis restarted empty, boards answering after {:.1} s",
                began.elapsed().as_secs_f64()
            ));
        } else {
            *current.lock().unwrap() = None;
            rankd.kill();
            rankd.start(services, &http).await;
            *current.lock().unwrap() = Some((rankd.pid().unwrap(), stretch));
            kills += 1;
            faults.push(format!(
                "{t:.0} s: rankd SIGKILLed, ready again after {:.1} s",
                began.elapsed().as_secs_f64()
            ));
        }
        longest = longest.max(began.elapsed());
        redis_turn = !redis_turn;
    }
    for c in clients {
        c.await.unwrap();
    }
    sampler.await.unwrap();
    let settled = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + SETTLE;
    let live = check_boards(&target, deadline).await;
    // Once more, with nothing in flight: rankd killed (and Redis emptied), then read again.
    rankd.kill();
    if let Some(redis) = services.redis.as_mut() {
        redis.restart().await;
    }
    rankd.start(services, &http).await;
    let restarted = check_boards(&target, Instant::now() + SETTLE).await;
    rankd.kill();
    let model = target.tally.model.lock().unwrap().clone();
    let store = check_store(services, &model).await;

    let tally = &target.tally;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let samples = samples.lock().unwrap().clone();
    let fitted = floors(
        samples
            .iter()
            .copied()
            .filter(|(t, stretch, _)| {
                *t >= o.warmup && *t - stretch_started[stretch] >= STRETCH_WARMUP
            })
            .collect(),
    );
    let slope = pooled_slope(&fitted);
    let mb = |kb: u64| kb as f64 / 1024.0;
    let after_warmup = samples.iter().find(|s| s.0 >= o.warmup).map(|s| s.2);
    let end = samples.last().map(|s| s.2);
    let growth = match slope {
        Some(s) => format!("{:+.1} MB/h", s * 3600.0 / 1024.0),
        None => "– (no stretch past its warm-up)".to_owned(),
    };
    let verdict = |c: &Option<String>| if c.is_none() { "exact" } else { "DIFFERENT" };
    let passed = live.is_none()
        && restarted.is_none()
        && store.is_none()
        && load(&tally.unresolved) == 0
        && load(&tally.fresh_duplicates) == 0
        && load(&tally.unexpected) == 0;
    let single = load(&tally.single);
    let batched = load(&tally.batched);
    let row = format!(
        "| {} | {} ({single} + {batched}; {:.0}/s) | {} ({:.0}/s) | {} rankd SIGKILLs, {} Redis restarts | {:.1} s | {} | {} | {} | {} / {} / {} | {} → {} MB | {growth} |",
        engine.name(),
        single + batched,
        (single + batched) as f64 / o.secs as f64,
        load(&tally.reads),
        load(&tally.reads) as f64 / o.secs as f64,
        kills,
        restarts,
        longest.as_secs_f64(),
        load(&tally.resent),
        load(&tally.unresolved),
        load(&tally.unexpected),
        verdict(&live),
        verdict(&restarted),
        verdict(&store),
        after_warmup.map_or("–".to_owned(), |kb| format!("{:.1}", mb(kb))),
        end.map_or("–".to_owned(), |kb| format!("{:.1}", mb(kb))),
    );
    let mut details = format!(
        "\n## {}\n{} s of load, settled at {settled:.0} s; {} RSS samples, {} floors of {FLOOR_WINDOW} s in the fit (past {} s, and {STRETCH_WARMUP} s into each stretch between faults); rankd started {} times\nfaults:\n",
        engine.name(),
        o.secs,
        samples.len(),
        fitted.len(),
        o.warmup,
        rankd.life,
    );
    for f in &faults {
        details.push_str(&format!("  {f}\n"));
    }
    details.push_str("  RSS every 15 s (s: MB):");
    for s in samples.iter().step_by(15) {
        details.push_str(&format!(" {:.0}: {:.0}", s.0, mb(s.2)));
    }
    details.push('\n');
    for k in 1..=stretch {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.1 == k).collect();
        if let (Some(a), Some(b)) = (mine.first(), mine.last()) {
            details.push_str(&format!(
                "  stretch {k}: {:.0}–{:.0} s, RSS {:.1} → {:.1} MB (max {:.1})\n",
                a.0,
                b.0,
                mb(a.2),
                mb(b.2),
                mb(mine.iter().map(|s| s.2).max().unwrap())
            ));
        }
    }
    for (what, c) in [
        ("live boards", &live),
        ("after the final restart", &restarted),
        ("store log", &store),
    ] {
        if let Some(d) = c {
            details.push_str(&format!("  {what} DIFFER: {d}\n"));
        }
    }
    for (what, n) in [
        (
            "events acknowledged past the dedupe window",
            load(&tally.late),
        ),
        (
            "first sendings answered as duplicates",
            load(&tally.fresh_duplicates),
        ),
    ] {
        if n > 0 {
            details.push_str(&format!("  {what}: {n}\n"));
        }
    }
    for s in tally.samples.lock().unwrap().iter() {
        details.push_str(&format!("  unexpected: {s}\n"));
    }
    if !passed {
        // Kept for a look, out of the directory that is removed.
        let kept = std::env::temp_dir().join(format!(
            "rankd-soak-{}-{}.log",
            std::process::id(),
            engine_tag(engine)
        ));
        let _ = std::fs::copy(services.dir.join("rankd.log"), &kept);
        details.push_str(&format!("  FAILED: rankd's log is at {}\n", kept.display()));
    }
    Report {
        row,
        details,
        passed,
    }
}

/// Waits until every board answers a read (after a Redis restart: rebuilt); `Some` when one does
/// not by `deadline`.
async fn check_reachable(t: &Target, deadline: Instant) -> Option<String> {
    for (board, _, _) in BOARDS {
        let url = format!("{}/v1/boards/{board}/top?limit=1", t.base);
        loop {
            let r = t.http.get(&url).timeout(REQUEST_TIMEOUT).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                break;
            }
            if Instant::now() > deadline {
                return Some(format!("{board} not answering 200 by the deadline"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    None
}
