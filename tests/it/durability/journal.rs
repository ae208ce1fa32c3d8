//! The journal: operations reach the store in order and once, through the store's outages, and
//! leave the Redis log once stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::board::{BoardDef, BoardId, EventId};
use rankd::config::Config;
use rankd::engine::{Durability, Limit, Submit, SystemClock, View};
use rankd::Error;

use super::{durable_on, engine, journaled, redis_cli, until_ready, Binary};
use crate::cleanup::Keyspace;
use crate::helpers::{m, prefix, scope, score, Hooked, Redis, Sending};
use crate::private::{PrivateRedis, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_reaches_the_store_in_order_and_deletion_is_durable() {
    let redis = PrivateRedis::start().await;
    let db = TestDb::create().await;
    let e = engine(&redis, &db, Durability::Async).await;
    let b = BoardId::parse("logged").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    for i in 0..20 {
        e.submit(&Submit::new(b.clone(), m("a"), score(f64::from(i))))
            .await
            .unwrap();
    }
    e.remove_member(&b, &m("a")).await.unwrap();
    let pool = db.pool().await;
    // Async: the store catches up within a bounded time.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (n, kinds): (i64, String) = sqlx::query_as(
            "SELECT count(*), COALESCE(string_agg(op, '' ORDER BY seq), '') FROM rankd_ops WHERE board = 'logged'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n == 22 {
            assert_eq!(kinds, format!("d{}r", "e".repeat(20)));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store has {n} of 22 operations"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e.delete_board(&b).await.unwrap();
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM rankd_ops WHERE board = 'logged'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    let (boards,): (i64,) = sqlx::query_as("SELECT count(*) FROM rankd_boards")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(boards, 0);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_fails_sync_writes_fast_and_async_writes_catch_up() {
    let keys = Keyspace::new(Redis::Standalone);
    let pg = crate::private::PrivatePostgres::start().await;
    let db_url = pg.url("postgres");
    let config = |durability| Config {
        redis_url: Some(Redis::Standalone.url()),
        database_url: Some(db_url.clone()),
        durability,
        key_prefix: keys.prefix().to_owned(),
        ..Config::default()
    };
    let sync_cfg = config(Durability::Sync);
    let sync = rankd::serve::build_engine(&sync_cfg, Arc::new(SystemClock))
        .await
        .unwrap();
    let mut async_cfg = config(Durability::Async);
    async_cfg.key_prefix = sync_cfg.key_prefix.clone();
    let asy = rankd::serve::build_engine(&async_cfg, Arc::new(SystemClock))
        .await
        .unwrap();
    let b = BoardId::parse("pgdown").unwrap();
    sync.put_board(&b, BoardDef::default()).await.unwrap();
    sync.submit(&Submit::new(b.clone(), m("s"), score(1.0)))
        .await
        .unwrap();

    pg.stop();
    // Sync writes fail fast, and do not hang; Redis applied them, so the error must not say
    // they were not applied (a client would resend them and count them twice).
    let started = Instant::now();
    let r = sync
        .submit(&Submit::new(b.clone(), m("s"), score(1.0)))
        .await;
    assert!(
        matches!(&r, Err(Error::Unconfirmed { detail, .. }) if detail.contains("was applied")),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "sync write took {:?}",
        started.elapsed()
    );
    // Async writes keep succeeding.
    for i in 0..50 {
        asy.submit(&Submit::new(
            b.clone(),
            m(&format!("a{}", i % 5)),
            score(1.0),
        ))
        .await
        .unwrap();
    }
    pg.resume().await;
    // The store catches up: every event Redis applied, the failed sync one included, is stored once.
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM rankd_ops WHERE board = 'pgdown' AND op = 'e'")
                .fetch_one(&pool)
                .await
                .unwrap_or((0,));
        if n == 52 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store holds {n} of 52 events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = sync.standing(&b, &View::all_time(), &m("s")).await.unwrap();
    assert_eq!(
        s.score, 2.0,
        "the event that answered 503 was applied, and is stored too"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_the_store_recorded_completes_even_when_every_attempt_meets_a_change() {
    use rankd::store::PgStore;
    let redis = PrivateRedis::start().await;
    let db = TestDb::create().await;
    let prefix = prefix();
    let config = Config {
        redis_url: Some(redis.url()),
        database_url: Some(db.url()),
        key_prefix: prefix.clone(),
        ..Config::default()
    };
    let other = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let b = BoardId::parse("doomed").unwrap();
    other.put_board(&b, BoardDef::default()).await.unwrap();
    other
        .submit(&Submit::new(b.clone(), m("x"), score(1.0)))
        .await
        .unwrap();
    // This instance: the same Redis and store, its delete's first step preceded by the other's
    // writes. Before every start of the delete script, a write through the other instance in a new
    // scope, as a busy board's writers would: the key index changes right up to the deletion (which
    // from its start refuses writes, and goes through whatever keys the index then holds).
    let (writer, board) = (other.clone(), b.clone());
    let changes = std::sync::atomic::AtomicU32::new(0);
    let exec = Hooked::on(
        &redis.url(),
        Box::new(move |sending| match sending {
            Sending::One(call)
                if call.script.name() == rankd::engine::scripts::DELETE_BOARD.name()
                    && call.args[0] == "start" =>
            {
                let n = changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut ev = Submit::new(board.clone(), m("w"), score(1.0));
                ev.scopes = vec![scope(&format!("s{n}"))];
                let writer = writer.clone();
                Some(Box::pin(async move {
                    writer.submit(&ev).await.unwrap();
                }))
            }
            _ => None,
        }),
    )
    .await;
    let store = Arc::new(PgStore::connect(&db.url()).await.unwrap());
    let e = journaled(
        &config,
        store.clone(),
        Arc::new(SystemClock),
        Some(Arc::new(exec)),
    )
    .await;
    // Its tombstone is committed before the first attempt: the board is deleted either way, and
    // the answer says so rather than 409 while the store's check deletes it seconds later.
    e.delete_board(&b).await.unwrap();
    let r = other
        .top(&b, &View::all_time(), Limit::new(10).unwrap())
        .await;
    assert!(
        matches!(r, Err(Error::BoardNotFound(_))),
        "the board is gone now: {r:?}"
    );
    assert!(!store.has_board(&b).await.unwrap());
}

/// A single-board batch of 10,000 events is trimmed from the Redis log once the store has it, not
/// left to the sweep: the trim goes in bounded calls, as one call would pass Lua's unpack more
/// values than it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_ten_thousand_events_is_trimmed_from_the_redis_log_once_stored() {
    let redis = PrivateRedis::start().await;
    let (db, config, store) = durable_on(&redis).await;
    let e = journaled(&config, store, Arc::new(SystemClock), None).await;
    let b = BoardId::parse("trimmed").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    let events: Vec<Submit> = (0..10_000)
        .map(|i| Submit::new(b.clone(), m(&format!("u{i}")), score(1.0)))
        .collect();
    let out = e.submit_batch(&events).await.unwrap();
    assert_eq!(out.accepted, 10_000);
    // Sync durability: stored before the answer. The trim follows the commit.
    let log = rankd::keys::Keys::new(&config.key_prefix).unwrap().log(&b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let len = redis_cli(redis.port, &["XLEN", &log]);
        if len == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{len} entries are still in the Redis log 5 s after the store committed them"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rankd_ops WHERE board = 'trimmed' AND op = 'e'")
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
    assert_eq!(rows, 10_000);
}

/// While the store is out of reach, `rankd_store_lag_seconds` grows with the age of the oldest
/// operation not yet stored (the alert on it must fire), and falls back once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_lag_grows_while_the_store_is_out_of_reach() {
    let keys = Keyspace::new(Redis::Standalone);
    let db = TestDb::create().await;
    let port = crate::server::free_port();
    let bin = Binary::start(keys.prefix(), &db, "async", port).await;
    let http = reqwest::Client::new();
    let lag = || async {
        let scrape = http
            .get(format!("{}/metrics", bin.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        crate::helpers::series_value(&scrape, "rankd_store_lag_seconds")
    };
    let post = |member: &'static str| {
        http.post(format!("{}/v1/boards/lagging/scores", bin.base))
            .json(&serde_json::json!({"member": member, "value": 1}))
            .send()
    };
    let r = http
        .put(format!("{}/v1/boards/lagging", bin.base))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    db.refuse_connections(true).await;
    assert_eq!(
        post("a").await.unwrap().status(),
        200,
        "async answers after Redis"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let now = lag().await;
        seen.push(now);
        if now >= 4.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lag did not grow past 4 s while the store was away: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    db.refuse_connections(false).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while lag().await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the lag did not fall back once the store returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sync durability: a retried write answered as a duplicate gets 200 only once the operation it
/// repeats is committed. Its first sending was answered 503 `unconfirmed` while the store was out
/// of reach, and the retry comes while it still is: 503 again, never a 200 that a Redis loss could
/// make untrue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_answered_only_once_the_write_it_repeats_is_stored() {
    let mut redis = PrivateRedis::start().await;
    let (db, config, store) = durable_on(&redis).await;
    // No background sweep: only the answers themselves can have stored the event.
    let e = journaled(&config, store, Arc::new(SystemClock), None).await;
    let b = BoardId::parse("retried").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    e.submit(&Submit::new(b.clone(), m("bob"), score(1.0)))
        .await
        .unwrap();
    let mut ev = Submit::new(b.clone(), m("alice"), score(10.0));
    ev.event_id = Some(EventId::parse("ev-X").unwrap());
    let stored = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM rankd_ops WHERE event_id = 'ev-X'")
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
        n
    };

    db.refuse_connections(true).await;
    let first = e.submit(&ev).await;
    assert!(matches!(first, Err(Error::Unconfirmed { .. })), "{first:?}");
    let retry = e.submit(&ev).await;
    assert!(
        matches!(retry, Err(Error::Unconfirmed { .. })),
        "a duplicate of a write the store does not have must not be answered 200: {retry:?}"
    );
    let batch = e.submit_batch(std::slice::from_ref(&ev)).await;
    assert!(
        matches!(batch, Err(Error::Unconfirmed { .. })),
        "the same in a batch: {batch:?}"
    );

    // The store is back: the retry stores what it repeats before it is answered.
    db.refuse_connections(false).await;
    let retry = e.submit(&ev).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(stored().await, 1, "answered 200, so stored");
    let batch = e.submit_batch(std::slice::from_ref(&ev)).await.unwrap();
    assert_eq!((batch.accepted, batch.duplicates), (0, 1));

    // So a Redis loss keeps it.
    redis.kill();
    redis.restart().await;
    let (all, alice_id) = (View::all_time(), m("alice"));
    let alice = until_ready(|| e.standing(&b, &all, &alice_id)).await;
    assert_eq!(alice.score, 10.0);
    assert_eq!(stored().await, 1);
}
