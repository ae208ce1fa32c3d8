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
        matches!(got, Err(rankd::Error::Unavailable(_))),
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
