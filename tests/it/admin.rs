//! `rankd admin` end to end: the real binary against real Redis and a database of the test's own.

use std::process::Command;
use std::sync::Arc;

use rankd::board::{BoardDef, BoardId};
use rankd::config::Config;
use rankd::engine::{Submit, SystemClock};

use crate::cleanup::Keyspace;
use crate::helpers::{m, prefix, score, Redis};
use crate::private::TestDb;

fn admin(prefix: &str, db: &TestDb, args: &[&str]) -> (i32, String) {
    admin_on(&Redis::Standalone.url(), prefix, db, args)
}

/// `rankd admin` against the Redis at `redis_url`: its exit status and output.
fn admin_on(redis_url: &str, prefix: &str, db: &TestDb, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rankd"))
        .arg("admin")
        .args(args)
        .args(["--redis-url", redis_url, "--key-prefix", prefix])
        .args(["--database-url", &db.url()])
        .env_remove("RANKD_CONFIG")
        .env("RANKD_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("rankd admin runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_migrate_verify_warm_snapshot_and_analyze_the_store() {
    // Dropped after the database: no store is left to rebuild the board's keys from.
    let keys = Keyspace::new(Redis::Standalone);
    let db = TestDb::create().await;
    let prefix = keys.prefix().to_owned();
    let config = Config {
        redis_url: Some(Redis::Standalone.url()),
        database_url: Some(db.url()),
        key_prefix: prefix.clone(),
        ..Config::default()
    };
    let durable = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let b = BoardId::parse("ops").unwrap();
    durable.put_board(&b, BoardDef::default()).await.unwrap();
    for i in 0..30 {
        durable
            .submit(&Submit::new(
                b.clone(),
                m(&format!("u{}", i % 9)),
                score(f64::from(i)),
            ))
            .await
            .unwrap();
    }

    let (code, out) = admin(&prefix, &db, &["migrate", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("up to date"), "{out}");

    let (code, out) = admin(&prefix, &db, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.trim_end().ends_with("Redis and the store agree"),
        "{out}"
    );

    // A write that bypasses the store (an engine with no journal) makes Redis differ.
    let mut plain = config.clone();
    plain.database_url = None;
    let rogue = rankd::serve::build_engine(&plain, Arc::new(SystemClock))
        .await
        .unwrap();
    rogue
        .submit(&Submit::new(b.clone(), m("u1"), score(1000.0)))
        .await
        .unwrap();
    let (code, out) = admin(&prefix, &db, &["verify", "--board", "ops"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ops all all -") && out.contains("first difference"),
        "{out}"
    );

    // Redis loses the board: warm says what it would do, then does it.
    durable.discard(&b).await.unwrap();
    let (code, out) = admin(&prefix, &db, &["warm", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ops: would rebuild"), "{out}");
    assert!(
        durable.redis_state(&b).await.unwrap() == rankd::engine::RedisState::Missing,
        "dry run changed nothing"
    );
    let (code, out) = admin(&prefix, &db, &["warm"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ops: rebuilt"), "{out}");
    let (code, out) = admin(&prefix, &db, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.trim_end().ends_with("Redis and the store agree"),
        "{out}"
    );

    let (code, out) = admin(&prefix, &db, &["snapshot", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("would snapshot ops all all - (9 members)"),
        "{out}"
    );
    let (code, out) = admin(&prefix, &db, &["snapshot"]);
    assert_eq!(code, 0, "{out}");
    let pool = db.pool().await;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM rankd_snapshot_entries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 9);
    let (rank, member): (i64, String) = sqlx::query_as(
        "SELECT e.rank, e.member FROM rankd_snapshot_entries e JOIN rankd_snapshots s ON s.id = e.snapshot_id \
         WHERE s.board = 'ops' ORDER BY e.rank LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rank, member.as_str()), (1, "u2"));
    pool.close().await;

    // analyze also times the read scripts, and reads a running server's own cache figures.
    let server = crate::server::TestApp::spawn_with(|c| {
        c.key_prefix = prefix.clone();
        c.database_url = None;
    })
    .await;
    assert_eq!(server.get("/v1/boards/ops/members/u2").await.status(), 200);
    let url = format!("http://{}", server.addr);
    let (code, out) = admin(
        &prefix,
        &db,
        &[
            "analyze",
            "--server",
            &url,
            "--api-key",
            crate::server::READER,
        ],
    );
    assert_eq!(code, 0, "{out}");
    for line in [
        "script latency, read_members (a member's standing): p50 ",
        "script latency, read_page (top 20): p50 ",
        "over 20 calls on 1 board(s)",
        "cache hit rate, Redis keyspace",
        "persister lag: 0 operations await the store, the oldest for 0.0 s",
        "board ops: 9 members (all-time, global), ",
        " bytes in Redis (MEMORY USAGE, sampled), store seq ",
        &format!("cache hit rate, definitions (server {url}): "),
        &format!("cache hit rate, scripts (server {url}): "),
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let bytes: u64 = out
        .split("members (all-time, global), ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(bytes > 100, "board memory is measured: {out}");
    // A server that refuses the key is an error that says so.
    let (code, out) = admin(
        &prefix,
        &db,
        &["analyze", "--server", &url, "--api-key", "not-a-key"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("401"), "{out}");
    server.stop().await;

    let (code, out) = admin(&prefix, &db, &["analyze"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("table rankd_ops")
            && out.contains("plan of rank history")
            && out.contains("recommend:"),
        "{out}"
    );

    let (code, out) = admin(&prefix, &db, &["clear-caches", "--boards"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--yes"), "{out}");
}

/// A store dropped and created again under a running rankd holds none of the history Redis was
/// built from: rankd stores nothing in it and rebuilds nothing from it (a board Redis then loses is
/// 503, never 404), `verify` says so with exit status 1, until an operator pairs Redis with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_lost_and_created_again_is_not_taken_for_the_one_redis_was_built_from() {
    use rankd::engine::View;
    use rankd::store::Store;
    use std::time::{Duration, Instant};

    let mut redis = crate::private::PrivateRedis::start().await;
    let db = TestDb::create().await;
    let prefix = prefix();
    let config = Config {
        redis_url: Some(redis.url()),
        database_url: Some(db.url()),
        key_prefix: prefix.clone(),
        ..Config::default()
    };
    let e = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let b = BoardId::parse("kept").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    for i in 0..20 {
        e.submit(&Submit::new(b.clone(), m(&format!("u{i}")), score(1.0)))
            .await
            .unwrap();
    }
    assert_eq!(admin_on(&redis.url(), &prefix, &db, &["verify"]).0, 0);

    // The store is lost, and an empty one created and migrated in its place.
    db.recreate().await;
    let fresh = rankd::store::PgStore::connect(&db.url()).await.unwrap();
    fresh.migrate().await.unwrap();
    let got = e
        .submit(&Submit::new(b.clone(), m("late"), score(1.0)))
        .await;
    assert!(
        matches!(got, Err(rankd::Error::Unconfirmed { .. })),
        "a write the store cannot be trusted with is unconfirmed: {got:?}"
    );
    let stored = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM rankd_ops")
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
        n
    };
    assert_eq!(stored().await, 0, "nothing is stored into the new store");
    let (code, out) = admin_on(&redis.url(), &prefix, &db, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not the store Redis was paired with"), "{out}");

    // Redis loses the board: the new store knows nothing of it, which is no proof it never was.
    redis.kill();
    redis.restart().await;
    let got = e.standing(&b, &View::all_time(), &m("u1")).await;
    assert!(
        matches!(
            got,
            Err(rankd::Error::Unavailable(_) | rankd::Error::Rebuilding(_))
        ),
        "503, never 404: {got:?}"
    );

    // An operator decides the history is lost for good.
    let (code, out) = admin_on(&redis.url(), &prefix, &db, &["pair-store"]);
    assert_ne!(code, 0, "pair-store asks for --yes: {out}");
    let (code, out) = admin_on(&redis.url(), &prefix, &db, &["pair-store", "--yes"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        e.store_pairing(None, false).await.unwrap(),
        Some(fresh.store_id().await.unwrap())
    );
    // The server follows within its ten-second check, and stores again.
    let next = BoardId::parse("next").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let wrote = match e.put_board(&next, BoardDef::default()).await {
            Ok(_) => e
                .submit(&Submit::new(next.clone(), m("a"), score(1.0)))
                .await
                .map(|_| ()),
            Err(err) => Err(err),
        };
        if wrote.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not follow the new pairing: {wrote:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(stored().await >= 2, "the new board is stored");
}

/// The store's URL in libpq's other forms: the user and a Unix socket as parameters, and no user
/// at all (PGUSER then stands in, as libpq takes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_url_takes_libpq_forms() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let (dirs,): (String,) = sqlx::query_as("SHOW unix_socket_directories")
        .fetch_one(&pool)
        .await
        .unwrap();
    let socket = dirs.split(',').next().unwrap().trim().to_owned();
    let (port,): (String,) = sqlx::query_as("SHOW port").fetch_one(&pool).await.unwrap();
    pool.close().await;
    let migrate = |url: String, pguser: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rankd"));
        c.args(["admin", "migrate"])
            .env("RANKD_DATABASE_URL", &url)
            .env_remove("RANKD_REDIS_URL")
            .env_remove("RANKD_CONFIG")
            .env("RANKD_LOG", "warn")
            .current_dir(std::env::temp_dir());
        match pguser {
            Some(u) => c.env("PGUSER", u),
            None => c.env_remove("PGUSER"),
        };
        let out = c.output().expect("rankd admin runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    let name = &db.name;
    for (url, pguser) in [
        (
            format!("postgres:///{name}?host={socket}&port={port}&user=postgres"),
            None,
        ),
        (
            format!("postgres://127.0.0.1:{port}/{name}"),
            Some("postgres"),
        ),
    ] {
        let (code, out) = migrate(url.clone(), pguser);
        assert_eq!(code, 0, "{url}: {out}");
    }
}

/// What one `rankd admin` run printed, apart, and how it exited.
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `rankd admin` with exactly the settings `configure` gives it (no variable of the test's
/// environment), in `dir`.
pub(crate) fn bare_admin(
    dir: &std::path::Path,
    args: &[&str],
    configure: impl FnOnce(&mut Command),
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rankd"));
    c.arg("admin").args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("RANKD_") {
            c.env_remove(k);
        }
    }
    c.env("RANKD_LOG", "warn").env_remove("RUST_BACKTRACE");
    configure(&mut c);
    c
}

pub(crate) fn run(mut c: Command) -> Run {
    let out = c.output().expect("rankd admin runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `rankd admin` on Redis at `redis_url` and the store `db`, under `prefix`.
fn on(redis_url: &str, prefix: &str, db: &TestDb, args: &[&str]) -> Command {
    let (redis_url, db) = (redis_url.to_owned(), db.url());
    let prefix = prefix.to_owned();
    bare_admin(&std::env::temp_dir(), args, move |c| {
        c.args(["--redis-url", &redis_url, "--key-prefix", &prefix])
            .args(["--database-url", &db]);
    })
}

/// An error says what went wrong in words: no debug text of internal types, no backtrace, no
/// cause repeating the message.
pub(crate) fn in_words(r: &Run) {
    for internal in [
        "Os {",
        "Caused by",
        "Stack backtrace",
        "SnapEntry",
        "Live(",
        "Error: ",
    ] {
        assert!(
            !r.stdout.contains(internal) && !r.stderr.contains(internal),
            "{internal:?} in {r}"
        );
    }
}

/// A durable engine on `redis_url` and `db` with board `id` of `members` members.
async fn stored_board(
    redis_url: &str,
    db: &TestDb,
    prefix: &str,
    id: &str,
    members: usize,
) -> (Arc<rankd::Engine>, BoardId) {
    let config = Config {
        redis_url: Some(redis_url.to_owned()),
        database_url: Some(db.url()),
        key_prefix: prefix.to_owned(),
        ..Config::default()
    };
    let e = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let b = BoardId::parse(id).unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    let events: Vec<Submit> = (0..members)
        .map(|i| Submit::new(b.clone(), m(&format!("u{i}")), score(i as f64)))
        .collect();
    for chunk in events.chunks(5000) {
        e.submit_batch(chunk).await.unwrap();
    }
    (e, b)
}

/// `verify` does not run on the per-call timeout meant for live requests: a Redis that answers
/// nothing for a second (a busy host) is waited out even with `RANKD_REDIS_TIMEOUT_MS=50`. Stopped
/// by a signal it exits 2, and an error exits 2 in words: 1 means only "a difference was found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_waits_out_a_busy_redis_and_its_errors_exit_2_in_words() {
    let mut redis = crate::private::PrivateRedis::start().await;
    let db = TestDb::create().await;
    let prefix = prefix();
    let (_e, _b) = stored_board(&redis.url(), &db, &prefix, "busy", 300).await;

    redis.pause();
    let mut c = on(&redis.url(), &prefix, &db, &["verify"]);
    c.env("RANKD_REDIS_TIMEOUT_MS", "50")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    redis.resume();
    let out = child.wait_with_output().unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.trim_end().ends_with("Redis and the store agree"),
        "{r}"
    );

    // Interrupted while Redis answers nothing: it stops at once, with the error status.
    redis.pause();
    let mut c = on(&redis.url(), &prefix, &db, &["verify"]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    redis.resume();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");

    // Redis gone: an error, in words, with status 2.
    redis.kill();
    let r = run(on(&redis.url(), &prefix, &db, &["verify"]));
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("rankd admin: ") && r.stderr.contains("Redis"),
        "{r}"
    );
    assert!(r.stdout.is_empty(), "{r}");
    in_words(&r);
}

/// The keys of every scratch copy under `prefix` (what `verify` used to leave behind).
fn scratch_keys(prefix: &str) -> Vec<String> {
    let out = Command::new("redis-cli")
        .args(["-u", &Redis::Standalone.url(), "--scan", "--pattern"])
        .arg(format!("{prefix}verify*"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `verify` leaves nothing in Redis, even interrupted: watched while it runs, no scratch key ever
/// shows. What runs of earlier versions left (`<prefix>verify<pid>:`, keys without expiry) shows in
/// `analyze`, and `clear-caches` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_leaves_no_scratch_keys_and_clear_caches_removes_old_ones() {
    let db = TestDb::create().await;
    let prefix = prefix();
    let (e, b) = stored_board(&Redis::Standalone.url(), &db, &prefix, "big", 20_000).await;

    let mut c = on(&Redis::Standalone.url(), &prefix, &db, &["verify"]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        seen = scratch_keys(&prefix);
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = child.wait();
    let left = scratch_keys(&prefix);
    assert!(
        seen.is_empty() && left.is_empty(),
        "verify wrote scratch keys into Redis: {} seen, {} left",
        seen.len(),
        left.len()
    );

    // What an interrupted verify of an earlier version left: a whole board under a scratch prefix.
    let scratch = crate::helpers::Ctx::with_prefix(
        Redis::Standalone,
        &format!("{prefix}verify4242:"),
        rankd::engine::EngineConfig::default(),
    )
    .await;
    let sb = scratch.board("big", BoardDef::default()).await;
    scratch.submit(&sb, "u1", 1.0).await;
    let n = scratch_keys(&prefix).len();
    assert!(n > 0);

    let r = run(on(&Redis::Standalone.url(), &prefix, &db, &["analyze"]));
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains(&format!(
            "scratch keys of interrupted verify runs: {n} keys under {prefix}verify<pid>:"
        )) && r.stdout.contains("`rankd admin clear-caches` removes them"),
        "{r}"
    );
    let r = run(on(
        &Redis::Standalone.url(),
        &prefix,
        &db,
        &["clear-caches", "--dry-run"],
    ));
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains(&format!("would remove {n} scratch keys")),
        "{r}"
    );
    assert_eq!(scratch_keys(&prefix).len(), n, "a dry run removes nothing");
    let r = run(on(
        &Redis::Standalone.url(),
        &prefix,
        &db,
        &["clear-caches"],
    ));
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains(&format!("removed {n} scratch keys")),
        "{r}"
    );
    assert!(scratch_keys(&prefix).is_empty());
    let r = run(on(&Redis::Standalone.url(), &prefix, &db, &["analyze"]));
    assert!(
        r.stdout
            .contains("scratch keys of interrupted verify runs: none"),
        "{r}"
    );
    // The board itself is untouched.
    assert_eq!(
        run(on(&Redis::Standalone.url(), &prefix, &db, &["verify"])).code,
        0
    );
    e.delete_board(&b).await.unwrap();
}

/// Each command connects to what it uses, and names what is missing: without Redis, verify checks
/// the store on its own (never "missing from Redis" of an empty engine in the admin process), warm
/// and clear-caches refuse; migrate needs no Redis; without a store, what needs one refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_needs_exactly_what_it_uses_and_names_what_is_missing() {
    let db = TestDb::create().await;
    let prefix = prefix();
    let (e, b) = stored_board(&Redis::Standalone.url(), &db, &prefix, "xp", 30).await;
    let tmp = std::env::temp_dir();
    let store_only = |args: &[&str]| {
        let url = db.url();
        run(bare_admin(&tmp, args, |c| {
            c.args(["--database-url", &url]);
        }))
    };

    let r = store_only(&["verify"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("verifying the store on its own"), "{r}");
    assert!(!r.stdout.contains("missing from Redis"), "{r}");
    for cmd in ["warm", "clear-caches", "pair-store"] {
        let r = store_only(&[cmd, "--dry-run"]);
        assert_eq!(r.code, 2, "{cmd}: {r}");
        assert!(
            r.stderr
                .contains(&format!("{cmd} works on Redis: set RANKD_REDIS_URL")),
            "{cmd}: {r}"
        );
    }

    // migrate touches the store only: a Redis out of reach does not matter.
    let url = db.url();
    let r = run(bare_admin(&tmp, &["migrate"], |c| {
        c.args(["--database-url", &url, "--redis-url", "redis://127.0.0.1:1"]);
    }));
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(r.stdout, "the store is up to date\n", "{r}");

    // Redis without a store: what needs one says so.
    for cmd in ["verify", "snapshot", "migrate"] {
        let r = run(bare_admin(&tmp, &[cmd], |c| {
            c.args([
                "--redis-url",
                &Redis::Standalone.url(),
                "--key-prefix",
                &prefix,
            ]);
        }));
        assert_eq!(r.code, 2, "{cmd}: {r}");
        assert!(
            r.stderr.contains("needs the durable store") && r.stderr.contains("RANKD_DATABASE_URL"),
            "{cmd}: {r}"
        );
    }
    e.delete_board(&b).await.unwrap();
}

/// Results on stdout, a line per board, logs on stderr, no colour codes when piped, states and
/// entries in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_one_line_per_board_on_stdout_logs_on_stderr_and_no_colour_when_piped() {
    let db = TestDb::create().await;
    let prefix = prefix();
    let url = Redis::Standalone.url();
    let (e, b) = stored_board(&url, &db, &prefix, "alpha", 5).await;
    let two = BoardId::parse("beta").unwrap();
    e.put_board(&two, BoardDef::default()).await.unwrap();
    e.submit(&Submit::new(two.clone(), m("u1"), score(1.0)))
        .await
        .unwrap();
    let logged = |args: &[&str]| {
        let mut c = on(&url, &prefix, &db, args);
        c.env("RANKD_LOG", "info");
        run(c)
    };
    let count = |text: &str, needle: &str| text.matches(needle).count();

    let r = logged(&["warm"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(count(&r.stdout, "alpha: present in Redis"), 1, "{r}");
    assert_eq!(count(&r.stdout, "beta: present in Redis"), 1, "{r}");
    assert_eq!(r.stdout.lines().count(), 2, "{r}");
    for out in [&r.stdout, &r.stderr] {
        assert!(!out.contains('\u{1b}'), "colour codes when piped: {r}");
    }

    let r = logged(&["optimize"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(count(&r.stdout, "alpha: present in Redis"), 1, "{r}");
    assert_eq!(count(&r.stdout, "snapshot alpha: "), 1, "{r}");
    assert_eq!(count(&r.stdout, "snapshot beta: "), 1, "{r}");
    assert!(
        !r.stdout.contains("INFO")
            && r.stderr.contains("INFO")
            && r.stderr.contains("snapshot taken"),
        "logs go to stderr: {r}"
    );
    assert!(
        !r.stdout.contains('\u{1b}') && !r.stderr.contains('\u{1b}'),
        "{r}"
    );
    in_words(&r);

    // States and entries in words.
    e.discard(&two).await.unwrap();
    let r = logged(&["warm", "--dry-run", "--board", "beta"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .contains("beta: would rebuild (missing from Redis, the store at seq 2)"),
        "{r}"
    );
    in_words(&r);
    let mut plain = Config {
        redis_url: Some(url.clone()),
        key_prefix: prefix.clone(),
        ..Config::default()
    };
    plain.database_url = None;
    let rogue = rankd::serve::build_engine(&plain, Arc::new(SystemClock))
        .await
        .unwrap();
    rogue
        .submit(&Submit::new(b.clone(), m("u1"), score(1000.0)))
        .await
        .unwrap();
    let r = logged(&["verify", "--board", "alpha"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout.contains(
            "first difference: Redis has u1 at rank 1 with 1001, the store u4 at rank 1 with 4"
        ),
        "{r}"
    );
    in_words(&r);
    e.delete_board(&b).await.unwrap();
    let _ = e.delete_board(&two).await;
}

/// One rule for every command: a board the store does not hold is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_board_is_an_error_naming_it_for_every_command() {
    let db = TestDb::create().await;
    let prefix = prefix();
    let (e, b) = stored_board(&Redis::Standalone.url(), &db, &prefix, "known", 3).await;
    for cmd in ["warm", "snapshot", "verify"] {
        for dry in [false, true] {
            let mut args = vec![cmd, "--board", "nosuch"];
            if dry {
                args.push("--dry-run");
            }
            let r = run(on(&Redis::Standalone.url(), &prefix, &db, &args));
            assert_eq!(r.code, 2, "{args:?}: {r}");
            assert!(
                r.stderr
                    .contains("board nosuch: the store holds no such board"),
                "{args:?}: {r}"
            );
        }
    }
    e.delete_board(&b).await.unwrap();
}

/// `admin snapshot` takes the snapshot run lease that the periodic snapshot takes: while another
/// run holds it, it refuses and writes nothing; it gives the lease up when done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_snapshot_takes_the_snapshot_run_lease() {
    let db = TestDb::create().await;
    let prefix = prefix();
    let (e, b) = stored_board(&Redis::Standalone.url(), &db, &prefix, "leased", 50).await;
    let pool = db.pool().await;
    let until = chrono::Utc::now().timestamp_millis() + 60_000;
    sqlx::query("INSERT INTO rankd_leases (name, holder, until_ms) VALUES ('snapshot-run', 'another run', $1)")
        .bind(until)
        .execute(&pool)
        .await
        .unwrap();
    let runs = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM rankd_snapshots")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    let r = run(on(&Redis::Standalone.url(), &prefix, &db, &["snapshot"]));
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr
            .contains("another snapshot run holds the store's snapshot lease"),
        "{r}"
    );
    assert_eq!(runs().await, 0, "nothing written");

    sqlx::query("DELETE FROM rankd_leases")
        .execute(&pool)
        .await
        .unwrap();
    let r = run(on(&Redis::Standalone.url(), &prefix, &db, &["snapshot"]));
    assert_eq!(r.code, 0, "{r}");
    assert!(runs().await > 0);
    let (held,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rankd_leases WHERE name = 'snapshot-run'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(held, 0, "the lease is given up when the run ends");

    // The periodic snapshot skips its turn while an admin run holds the lease.
    sqlx::query("INSERT INTO rankd_leases (name, holder, until_ms) VALUES ('snapshot-run', 'rankd admin', $1)")
        .bind(until)
        .execute(&pool)
        .await
        .unwrap();
    let store = rankd::store::PgStore::connect(&db.url()).await.unwrap();
    let before = runs().await;
    let took = rankd::store::snapshot::periodic(&e, &store, "server", 30)
        .await
        .unwrap();
    assert!(took.is_none() && runs().await == before);
    pool.close().await;
    e.delete_board(&b).await.unwrap();
}

/// A busy Lua script of `ms` milliseconds on the Redis at `port`: a slowlog entry.
fn busy_script(port: u16, ms: u64) {
    let script = format!(
        "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] \
         while true do local n = redis.call('TIME') \
         if n[1] * 1000000 + n[2] - t0 > {} then break end end return 1",
        ms * 1000
    );
    let ok = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "EVAL", &script, "0"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// `optimize` judges the slowlog as it was before its own work: a slow command logged while it runs
/// (its own snapshot of big boards, or anything else meanwhile) is no advice to snapshot less often.
/// `analyze` run afterwards does show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_does_not_take_what_runs_during_it_for_advice() {
    let redis = crate::private::PrivateRedis::start().await;
    let db = TestDb::create().await;
    let prefix = prefix();
    let (_e, _b) = stored_board(&redis.url(), &db, &prefix, "opt", 20).await;

    // The snapshot optimize takes waits for this lock: the slow command runs meanwhile.
    let mut lock = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE rankd_snapshots IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let mut c = on(&redis.url(), &prefix, &db, &["optimize"]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let pool = db.pool().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "optimize never reached its snapshot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    busy_script(redis.port, 150);
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    let out = child.wait_with_output().unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("snapshot opt: "), "{r}");
    assert!(!r.stdout.contains("commands over 100 ms"), "{r}");

    let r = run(on(&redis.url(), &prefix, &db, &["analyze"]));
    assert!(r.stdout.contains("commands over 100 ms"), "{r}");
    pool.close().await;
}

/// An idle server (its definition cache has seen a few lookups, most of them each board's first)
/// is no sign that boards are redefined often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_gives_an_idle_server_no_cache_advice() {
    let db = TestDb::create().await;
    let prefix = prefix();
    let (e, b) = stored_board(&Redis::Standalone.url(), &db, &prefix, "idle", 3).await;
    let server = crate::server::TestApp::spawn_with(|c| {
        c.key_prefix = prefix.clone();
        c.database_url = None;
        c.metrics_sample = std::time::Duration::from_millis(100);
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let url = format!("http://{}", server.addr);
    let r = run(on(
        &Redis::Standalone.url(),
        &prefix,
        &db,
        &[
            "analyze",
            "--server",
            &url,
            "--api-key",
            crate::server::READER,
        ],
    ));
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains("cache hit rate, definitions (server"),
        "{r}"
    );
    assert!(!r.stdout.contains("redefined often"), "{r}");
    server.stop().await;
    e.delete_board(&b).await.unwrap();
}

/// `rankd serve` with no settings at all (the embedded engine, its store in ./rankd-data), and
/// `rankd admin` beside it with no settings either: every store command runs. `snapshot` rebuilds
/// each board here from the store and makes a new rebuild base; `verify` checks each board's base
/// against its log, and finds a base that does not hold what the log implies; `analyze` reports the
/// store; the server's next start rebuilds from the new base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_runs_on_the_embedded_engines_store_with_no_settings() {
    use std::time::Duration;
    let dir = std::env::temp_dir().join(format!("rankd-admin-{}", prefix().trim_end_matches(':')));
    std::fs::create_dir_all(&dir).unwrap();
    let port = crate::server::free_port();
    let serve = |dir: std::path::PathBuf| async move {
        crate::helpers::spawn_rankd(port, "/readyz", Duration::from_secs(30), |c| {
            for (k, _) in std::env::vars() {
                if k.starts_with("RANKD_") {
                    c.env_remove(k);
                }
            }
            c.current_dir(dir);
        })
        .await
    };
    let mut server = serve(dir.clone()).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let put = http
        .put(format!("{base}/v1/boards/xp"))
        .json(&serde_json::json!({"windows": ["all", "weekly"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    for i in 0..40 {
        let r = http
            .post(format!("{base}/v1/boards/xp/scores"))
            .json(&serde_json::json!({"member": format!("u{}", i % 7), "value": i, "scopes": ["class:1"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let admin = |args: &[&str]| run(bare_admin(&dir, args, |_| {}));

    let r = admin(&["migrate", "--dry-run"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "the store is up to date\n"),
        "{r}"
    );
    let r = admin(&["migrate"]);
    assert_eq!(r.code, 0, "{r}");
    let r = admin(&["verify"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .contains("xp: its 41 operations replay; no rebuild base yet"),
        "{r}"
    );
    let r = admin(&["verify", "--dry-run"]);
    assert!(
        r.code == 0 && r.stdout.contains("would verify xp up to seq 41"),
        "{r}"
    );
    let r = admin(&["snapshot", "--dry-run"]);
    assert!(
        r.code == 0 && r.stdout.contains("would snapshot xp at seq 41"),
        "{r}"
    );
    let r = admin(&["snapshot"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains("snapshot xp: 4 keys, ") && r.stdout.contains("a rebuild base"),
        "{r}"
    );
    let r = admin(&["verify"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains("xp: its rebuild base (seq 41) holds what its log implies; a start replays the 0 operations after it"),
        "{r}"
    );
    let r = admin(&["analyze"]);
    assert_eq!(r.code, 0, "{r}");
    for line in [
        "board xp: store seq 41, rebuild base at seq 41 (a rebuild replays 0 operations)",
        "store: SQLite, ",
        "table rankd_ops: 41 rows",
        "plan of rank history of a member:",
        "recommend: ",
    ] {
        assert!(r.stdout.contains(line), "{line:?} missing: {r}");
    }
    for args in [&["optimize", "--dry-run"][..], &["optimize"]] {
        let r = admin(args);
        assert_eq!(r.code, 0, "{args:?}: {r}");
        assert!(
            r.stdout.contains("warm: nothing to do without Redis"),
            "{r}"
        );
    }

    // The server's next start rebuilds from the base: the board is as it was.
    let top = |b: String| async move {
        reqwest::get(format!("{b}/v1/boards/xp/top?limit=3"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = top(base.clone()).await;
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    crate::helpers::exit_status(&mut server, Duration::from_secs(15)).await;
    let server = serve(dir.clone()).await;
    assert_eq!(top(base.clone()).await, before);

    // A base that does not hold what the log implies is found.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.join("rankd-data/rankd.sqlite3").display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "UPDATE rankd_snapshot_entries SET score = score + 1000, stored = NULL WHERE rank = 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let r = admin(&["verify"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout
            .contains("first difference: its rebuild base and the operations after it has u"),
        "{r}"
    );
    in_words(&r);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
