//! Rebuilding a board from the store: with what only the Redis log still held, beside writes that
//! meet it, and never from a stored log that lost its beginning.

use std::sync::Arc;

use rankd::board::{BoardDef, BoardId};
use rankd::config::Config;
use rankd::engine::{Limit, Submit, SystemClock, View};
use rankd::{Engine, Error};

use super::{durable_on, journaled, ranked, reconnected, until_ready, Dropping};
use crate::helpers::{m, prefix, score, Hooked, Sending};
use crate::private::PrivateRedis;

/// A board behind its store, on a private Redis and Postgres: a, stored; b, answered 503
/// unconfirmed while the store was away, so only in the Redis log; c, an operation the store holds
/// and Redis lost (as after a failover to a replica that had not received it).
struct Behind {
    redis: PrivateRedis,
    pg: Arc<crate::private::PrivatePostgres>,
    config: Config,
    store: Arc<rankd::store::PgStore>,
    e: Arc<Engine>,
    b: BoardId,
}

async fn behind(name: &str) -> Behind {
    let redis = PrivateRedis::start().await;
    let pg = Arc::new(crate::private::PrivatePostgres::start().await);
    let config = Config {
        redis_url: Some(redis.url()),
        database_url: Some(pg.url("postgres")),
        key_prefix: prefix(),
        ..Config::default()
    };
    // Without the background sweep: the test decides when the store is checked.
    let store = Arc::new(
        rankd::store::PgStore::connect(&pg.url("postgres"))
            .await
            .unwrap(),
    );
    store.migrate().await.unwrap();
    let e = journaled(&config, store.clone(), Arc::new(SystemClock), None).await;
    let b = BoardId::parse(name).unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    e.submit(&Submit::new(b.clone(), m("a"), score(1.0)))
        .await
        .unwrap();
    pg.stop();
    let r = e.submit(&Submit::new(b.clone(), m("b"), score(2.0))).await;
    assert!(matches!(r, Err(Error::Unconfirmed { .. })), "{r:?}");
    pg.resume().await;
    let lost = rankd::engine::LoggedOp {
        board: b.clone(),
        seq: 4,
        recv_ms: e.now_ms(),
        op: rankd::engine::Op::Event {
            member: "c".into(),
            value: 3.0,
            event_id: None,
            at_ms: e.now_ms(),
            scopes: vec![],
        },
    };
    until_ready(|| async { store.insert_ops(std::slice::from_ref(&lost)).await }).await;
    Behind {
        redis,
        pg,
        config,
        store,
        e,
        b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_behind_the_store_is_rebuilt_with_what_its_redis_log_still_held() {
    // Bound, not dropped: the private services live as long as the test.
    let Behind {
        redis: _redis,
        pg: _pg,
        e,
        store,
        b,
        ..
    } = behind("behind").await;
    assert!(rankd::store::rebuild::rebuild(&e, store.as_ref(), &b)
        .await
        .unwrap());
    let all = View::all_time();
    let top = until_ready(|| e.top(&b, &all, Limit::new(10).unwrap())).await;
    let members = ranked(&top);
    assert_eq!(members, ["c", "b", "a"], "b, in Redis' log only, was kept");
}

/// Rebuilding a live board discards its Redis keys, log included, after saving the log: a write
/// answered between the two lived only in that log. Writes stop before the log is saved, so no
/// write is answered and then lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_the_rebuild_of_a_live_board_is_refused_or_kept() {
    let redis = PrivateRedis::start().await;
    let (_db, config, store) = durable_on(&redis).await;
    let e = journaled(&config, store.clone(), Arc::new(SystemClock), None).await;
    let b = BoardId::parse("live").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    e.submit(&Submit::new(b.clone(), m("a"), score(1.0)))
        .await
        .unwrap();
    // The store holds an operation Redis lost: the board is live, and behind.
    let lost = rankd::engine::LoggedOp {
        board: b.clone(),
        seq: 3,
        recv_ms: e.now_ms(),
        op: rankd::engine::Op::Event {
            member: "c".into(),
            value: 3.0,
            event_id: None,
            at_ms: e.now_ms(),
            scopes: vec![],
        },
    };
    store.insert_ops(&[lost]).await.unwrap();
    // Just before the rebuild discards the board's keys, another instance writes to it.
    let dropping = Arc::new(
        rankd::serve::connect(&config, Arc::new(SystemClock))
            .await
            .unwrap()
            .with_journal(Arc::new(Dropping)),
    );
    let answer = Arc::new(std::sync::Mutex::new(None));
    let (writer, board, seen) = (dropping.clone(), b.clone(), answer.clone());
    let fired = std::sync::atomic::AtomicBool::new(false);
    let exec = Hooked::on(
        &redis.url(),
        Box::new(move |sending| match sending {
            Sending::Many(calls)
                if calls
                    .first()
                    .is_some_and(|c| c.script.name() == rankd::engine::scripts::DISCARD.name())
                    && !fired.swap(true, std::sync::atomic::Ordering::Relaxed) =>
            {
                let (writer, board, seen) = (writer.clone(), board.clone(), seen.clone());
                Some(Box::pin(async move {
                    let r = writer
                        .submit(&Submit::new(board, m("late"), score(9.0)))
                        .await;
                    *seen.lock().unwrap() = Some(r.map(|_| ()));
                }))
            }
            _ => None,
        }),
    )
    .await;
    let slow = journaled(
        &config,
        store.clone(),
        Arc::new(SystemClock),
        Some(Arc::new(exec)),
    )
    .await;
    assert!(rankd::store::rebuild::rebuild(&slow, store.as_ref(), &b)
        .await
        .unwrap());
    let all = View::all_time();
    let top = until_ready(|| e.top(&b, &all, Limit::new(10).unwrap())).await;
    let members = ranked(&top);
    let answer = answer.lock().unwrap().take().expect("the write ran");
    if answer.is_ok() {
        assert!(
            members.contains(&"late"),
            "an answered write was lost: {members:?}"
        );
    }
    assert!(
        matches!(answer, Err(Error::Rebuilding(_))),
        "the write meets the rebuild: {answer:?}"
    );
    assert_eq!(members, ["c", "a"]);
}

/// A rebuild that took a live board and then cannot save its log (the store went away) gives the
/// board back as it was: it stays readable and writable, not held until its lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_that_cannot_save_the_log_gives_the_live_board_back() {
    let Behind {
        redis,
        pg,
        config,
        store,
        e,
        b,
    } = behind("given").await;
    // The store goes away again just as the rebuild starts reading the log it must save.
    let (postgres, fired) = (pg.clone(), std::sync::atomic::AtomicBool::new(false));
    let exec = Hooked::on(
        &redis.url(),
        Box::new(move |sending| match sending {
            Sending::One(call)
                if call.script.name() == rankd::engine::scripts::LOG_READ.name()
                    && !fired.swap(true, std::sync::atomic::Ordering::Relaxed) =>
            {
                let postgres = postgres.clone();
                Some(Box::pin(async move { postgres.stop() }))
            }
            _ => None,
        }),
    )
    .await;
    let slow = journaled(
        &config,
        store.clone(),
        Arc::new(SystemClock),
        Some(Arc::new(exec)),
    )
    .await;
    let r = rankd::store::rebuild::rebuild(&slow, store.as_ref(), &b).await;
    assert!(r.is_err(), "the log could not be saved: {r:?}");
    // At once, not after the lease: the board as it was.
    let all = View::all_time();
    let top = e.top(&b, &all, Limit::new(10).unwrap()).await.unwrap();
    let members = ranked(&top);
    assert_eq!(members, ["b", "a"]);
    // The store back, the rebuild completes.
    pg.resume().await;
    assert!(until_ready(|| rankd::store::rebuild::rebuild(&slow, store.as_ref(), &b)).await);
    let top = until_ready(|| e.top(&b, &all, Limit::new(10).unwrap())).await;
    let members = ranked(&top);
    assert_eq!(members, ["c", "b", "a"]);
}

/// A rebuild replays what the store holds, and must not log it again: the sweep would offer those
/// events back under the numbers Redis gave them during the replay, where the store holds other
/// operations, and the store would keep them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_leaves_nothing_in_the_redis_log_to_store_again() {
    let mut redis = PrivateRedis::start().await;
    let (_db, config, store) = durable_on(&redis).await;
    let e = journaled(&config, store.clone(), Arc::new(SystemClock), None).await;
    let b = BoardId::parse("replayed").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    for (i, member) in ["a", "b", "c"].into_iter().enumerate() {
        e.submit(&Submit::new(b.clone(), m(member), score(i as f64 + 1.0)))
            .await
            .unwrap();
    }
    redis.kill();
    redis.restart().await;
    reconnected(&e).await;
    assert!(rankd::store::rebuild::rebuild(&e, store.as_ref(), &b)
        .await
        .unwrap());
    // What the sweep would copy.
    let pending = e.log_pending(&b, 100).await.unwrap();
    assert_eq!(pending, [], "the replay logged its events again");
    assert_eq!(
        store.insert_ops(&pending).await.unwrap(),
        Vec::<BoardId>::new()
    );
    assert_eq!(store.ops(&b).await.unwrap().len(), 4);
    // And the board takes new writes under the store's numbering.
    e.submit(&Submit::new(b.clone(), m("d"), score(4.0)))
        .await
        .unwrap();
    assert!(!store.diverged(&b).await.unwrap());
    assert_eq!(store.ops(&b).await.unwrap().len(), 5);
}

/// A stored log that lost its beginning (the store restored from a partial copy, rows removed) is
/// never replayed into a board that never was: a board whose definition the store lacks answers
/// 503, not 404, and one whose log does not start at its definition is not rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_missing_the_start_of_a_board_is_not_rebuilt_from() {
    let mut redis = PrivateRedis::start().await;
    let (db, config, store) = durable_on(&redis).await;
    let e = journaled(&config, store.clone(), Arc::new(SystemClock), None).await;
    let (cut, headless) = (
        BoardId::parse("cut").unwrap(),
        BoardId::parse("headless").unwrap(),
    );
    for b in [&cut, &headless] {
        e.put_board(b, BoardDef::default()).await.unwrap();
        for i in 0..20 {
            e.submit(&Submit::new(b.clone(), m(&format!("u{i}")), score(1.0)))
                .await
                .unwrap();
        }
    }
    let pool = db.pool().await;
    for sql in [
        "DELETE FROM rankd_ops WHERE board IN ('cut', 'headless') AND seq <= 10",
        "DELETE FROM rankd_boards WHERE board = 'headless'",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    redis.kill();
    redis.restart().await;
    let got = e.standing(&headless, &View::all_time(), &m("u1")).await;
    assert!(
        matches!(got, Err(Error::Unavailable(_) | Error::Rebuilding(_))),
        "its operations are stored: 503, not 404: {got:?}"
    );
    let got = rankd::store::rebuild::rebuild(&e, store.as_ref(), &cut).await;
    assert!(
        matches!(&got, Err(Error::Unavailable(m)) if m.contains("start of board cut")),
        "{got:?}"
    );
    assert!(matches!(
        e.standing(&cut, &View::all_time(), &m("u15")).await,
        Err(Error::Unavailable(_) | Error::Rebuilding(_))
    ));
}

/// The embedded engine loads its boards from its own store at every start: said at INFO, never as
/// a board Redis lost.
#[tokio::test]
async fn the_embedded_engine_loading_its_store_at_start_is_no_warning() {
    use std::process::Stdio;
    use std::time::Duration;

    let dir = crate::cleanup::ScratchDir::new("embedded-start");
    std::fs::create_dir_all(dir.path()).unwrap();
    let port = crate::server::free_port();
    let serve = |log: &str| {
        let log = std::fs::File::create(dir.path().join(log)).unwrap();
        let data = dir.path().join("data");
        crate::helpers::spawn_rankd(port, "/readyz", Duration::from_secs(30), move |c| {
            for (k, _) in std::env::vars() {
                if k.starts_with("RANKD_") {
                    c.env_remove(k);
                }
            }
            c.env("RANKD_DATA_DIR", data).stdout(Stdio::from(log));
        })
    };
    let server = serve("first.log").await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let r = http
        .put(format!("{base}/v1/boards/xp"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{base}/v1/boards/xp/scores"))
        .json(&serde_json::json!({"member": "u1", "value": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(server);

    let _server = serve("second.log").await;
    let r = http
        .get(format!("{base}/v1/boards/xp/members/u1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the board was loaded from the store");
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    let loading: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("loading the board from the store"))
        .collect();
    assert!(
        loading.len() == 1 && loading[0].contains(" INFO ") && loading[0].contains("xp"),
        "one INFO line for the board loaded:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("lost")),
        "no warning of a loss:\n{log}"
    );
}
