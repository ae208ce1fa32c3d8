//! A normal start (Redis intact, nothing to rebuild) against a store of any history: the server
//! listens at once, answers 503 until its start-up work is done, and that work does not grow with
//! the stored operations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::board::{BoardDef, BoardId};
use rankd::config::Config;
use rankd::engine::SystemClock;
use serde_json::Value;

use crate::cleanup::Keyspace;
use crate::helpers::{spawn_rankd, Redis};
use crate::private::TestDb;
use crate::server::free_port;

/// `/healthz` answers while the start-up work cannot finish (here: the store's board table is
/// locked, so the start-up check waits on it), and everything that needs the engine answers 503
/// saying rankd is starting, `/readyz` included, until the work is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_listens_at_once_and_answers_503_until_its_start_up_work_is_done() {
    let keys = Keyspace::new(Redis::Standalone);
    let db = TestDb::create().await;
    let store = rankd::store::PgStore::connect(&db.url()).await.unwrap();
    rankd::store::Store::migrate(&store).await.unwrap();
    let pool = db.pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::raw_sql("LOCK TABLE rankd_boards IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let port = free_port();
    // Live within seconds although the start-up work cannot finish.
    let mut child = spawn_rankd(port, "/healthz", Duration::from_secs(10), |c| {
        c.args(["--redis-url", &Redis::Standalone.url()])
            .args(["--key-prefix", keys.prefix()])
            .env("RANKD_DATABASE_URL", db.url())
            .env("RANKD_API_KEYS", "k:admin")
            .env("RANKD_METRICS_KEY", "scrape");
    })
    .await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let ask = |method: reqwest::Method, path: &'static str| {
        let r = http
            .request(method, url(path))
            .bearer_auth("k")
            .json(&serde_json::json!({"member": "a", "value": 1}))
            .send();
        async move {
            let r = r.await.unwrap();
            assert_eq!(r.status(), 503, "{path}");
            assert!(r.headers().contains_key("retry-after"), "{path}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["type"], "urn:rankd:problem:unavailable", "{path}: {v}");
            let detail = v["detail"].as_str().unwrap().to_owned();
            assert!(detail.starts_with("rankd is starting"), "{path}: {v}");
            detail
        }
    };
    // Each answer says what the start-up work is doing; here, soon, the check it waits in.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ask(reqwest::Method::GET, "/readyz")
        .await
        .contains("checking the boards of the durable store")
    {
        assert!(
            Instant::now() < deadline,
            "the start-up check not under way"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (method, path) in [
        (reqwest::Method::GET, "/v1/boards/early/top"),
        (reqwest::Method::POST, "/v1/boards/early/scores"),
    ] {
        let detail = ask(method, path).await;
        assert!(detail.contains("checking the boards"), "{path}: {detail}");
    }
    assert_eq!(
        http.get(url("/healthz")).send().await.unwrap().status(),
        200
    );
    // /metrics answers, to its key only, as once started.
    let metrics = |key: &str| http.get(url("/metrics")).bearer_auth(key).send();
    assert_eq!(metrics("scrape").await.unwrap().status(), 200);
    assert_eq!(metrics("k").await.unwrap().status(), 401);
    assert!(child.try_wait().unwrap().is_none(), "rankd exited");
    // The start-up work goes on once the table is free, and the server serves.
    lock.rollback().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(url("/readyz")).send().await.unwrap().status() != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready 20 s after the store was free"
        );
        assert!(child.try_wait().unwrap().is_none(), "rankd exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .put(url("/v1/boards/early"))
        .bearer_auth("k")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    drop(child);
    pool.close().await;
}

/// Boards in Redis and in a store of its own, `ops` stored operations a board besides the
/// definition (filled directly, not through rankd), with Redis' sequence counters where the store's
/// are: a normal restart's state, nothing to rebuild.
async fn intact(boards: usize, ops: u64) -> (Keyspace, TestDb, Config) {
    let keys = Keyspace::new(Redis::Standalone);
    let db = TestDb::create().await;
    let config = Config {
        redis_url: Some(Redis::Standalone.url()),
        database_url: Some(db.url()),
        key_prefix: keys.prefix().to_owned(),
        ..Config::default()
    };
    let engine = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .expect("engine starts");
    let ids: Vec<BoardId> = (0..boards)
        .map(|i| BoardId::parse(&format!("b{i}")).unwrap())
        .collect();
    for b in &ids {
        engine.put_board(b, BoardDef::default()).await.unwrap();
    }
    drop(engine);
    if ops > 0 {
        let pool = db.pool().await;
        sqlx::query(
            "INSERT INTO rankd_ops (board, seq, op, recv_ms, member, value, at_ms, scopes)
             SELECT b.board, g, 'e', g, 'm' || (g % 1000), 1, g, '{}'
             FROM rankd_boards b CROSS JOIN generate_series(2, $1::bigint + 1) AS g",
        )
        .bind(ops as i64)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::raw_sql("ANALYZE rankd_ops")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let k = rankd::keys::Keys::new(&config.key_prefix).unwrap();
        for b in &ids {
            let out = std::process::Command::new("redis-cli")
                .args(["-u", &Redis::Standalone.url(), "SET", &k.sequence(b)])
                .arg((ops + 1).to_string())
                .output()
                .expect("redis-cli runs");
            assert!(out.status.success(), "{out:?}");
        }
    }
    (keys, db, config)
}

/// The fastest of three starts of `config`'s engine and store (`rankd serve`'s start-up work, up to
/// where it serves).
async fn start_up(config: &Config) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let engine = rankd::serve::build_engine(config, Arc::new(SystemClock))
            .await
            .expect("engine starts");
        best = best.min(t.elapsed());
        drop(engine);
    }
    best
}

/// The same restart against a store of a million operations takes what it takes against a store
/// of none: start-up reads no stored operation, only a few rows of each board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_work_does_not_grow_with_the_stored_history() {
    let boards = 20;
    let (_fresh_keys, fresh_db, fresh) = intact(boards, 0).await;
    let (_old_keys, old_db, old) = intact(boards, 50_000).await;
    let (a, b) = (start_up(&fresh).await, start_up(&old).await);
    eprintln!("start-up: {a:?} at no stored operation, {b:?} at a million");
    assert!(
        b <= a.mul_f64(1.5) + Duration::from_millis(250),
        "start-up at a million stored operations took {b:?}, against {a:?} at none"
    );
    drop((fresh_db, old_db));
}

/// A restart with Redis intact reads no stored operation at all: it starts while `rankd_ops` is
/// locked against every reader (the boards' last numbers come from their board rows, which the
/// store keeps, not from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_redis_intact_reads_no_stored_operation() {
    let (_keys, db, config) = intact(3, 1_000).await;
    let pool = db.pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::raw_sql("LOCK TABLE rankd_ops IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let engine = tokio::time::timeout(
        Duration::from_secs(10),
        rankd::serve::build_engine(&config, Arc::new(SystemClock)),
    )
    .await
    .expect("the start-up work does not wait for the operation log")
    .expect("engine starts");
    let b = BoardId::parse("b0").unwrap();
    assert_eq!(
        engine.redis_state(&b).await.unwrap(),
        rankd::engine::RedisState::Live(1_001),
        "nothing was rebuilt"
    );
    drop(engine);
    lock.rollback().await.unwrap();
    pool.close().await;
}
