//! Durability end to end: every acknowledged operation reaches Postgres, and a board Redis lost is
//! rebuilt from it exactly. Each test runs its own redis-server and its own database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::board::{BoardDef, BoardId, Display, EventId, Policy, RankMode, TieBreak};
use rankd::config::Config;
use rankd::engine::{Durability, Limit, Submit, SystemClock, View};
use rankd::window::Window;
use rankd::{Engine, Error};

use crate::cleanup::{Keyspace, ScratchDir};
use crate::helpers::{m, prefix, scope, score, spawn_rankd, Hooked, Redis, Sending};
use crate::private::{PrivateRedis, TestDb};

async fn engine(redis: &PrivateRedis, db: &TestDb, durability: Durability) -> Arc<Engine> {
    let config = Config {
        redis_url: Some(redis.url()),
        database_url: Some(db.url()),
        durability,
        key_prefix: prefix(),
        ..Config::default()
    };
    rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .expect("engine starts")
}

/// Everything a dashboard could read from a board, to compare before and after a loss.
async fn everything(e: &Engine, b: &BoardId, views: &[View]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for v in views {
        let top = e.top(b, v, Limit::new(1000).unwrap()).await?;
        out.push(format!("{v:?} total={} {:?}", top.total, top.entries));
    }
    Ok(out)
}

/// Retries an engine call while the board is being rebuilt (503), up to a deadline.
async fn until_ready<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("not ready: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_redis_lost_is_rebuilt_exactly_from_the_store() {
    let mut redis = PrivateRedis::start().await;
    let db = TestDb::create().await;
    let e = engine(&redis, &db, Durability::Sync).await;
    let b = BoardId::parse("season").unwrap();
    let def = BoardDef {
        windows: vec![Window::All, Window::Weekly],
        tie_break: TieBreak::First,
        rank_mode: RankMode::Dense,
        max_members: Some(50),
        ..BoardDef::default()
    };
    assert!(e.put_board(&b, def.clone()).await.unwrap());
    for i in 0..40u32 {
        let mut ev = Submit::new(
            b.clone(),
            m(&format!("u{}", i % 13)),
            score(f64::from(i % 7)),
        );
        if i % 3 == 0 {
            ev.scopes = vec![scope("class:1")];
        }
        ev.event_id = Some(EventId::parse(&format!("e{i}")).unwrap());
        e.submit(&ev).await.unwrap();
    }
    let batch: Vec<Submit> = (0..30u32)
        .map(|i| Submit::new(b.clone(), m(&format!("u{}", i % 17)), score(f64::from(i))))
        .collect();
    e.submit_batch(&batch).await.unwrap();
    e.remove_member(&b, &m("u3")).await.unwrap();
    e.put_display(
        &b,
        &m("u5"),
        Display {
            display_name: Some("Five".into()),
            data: None,
        },
    )
    .await
    .unwrap();
    // A later definition change (a new window) must replay at its place in the log.
    let mut wider = def.clone();
    wider.windows.push(Window::Daily);
    e.put_board(&b, wider).await.unwrap();
    e.submit(&Submit::new(b.clone(), m("u1"), score(2.0)))
        .await
        .unwrap();
    let views = [
        View::all_time(),
        View::all_time().scoped(scope("class:1")),
        View::current(Window::Weekly),
        View::current(Window::Daily),
    ];
    let before = everything(&e, &b, &views).await.unwrap();

    redis.kill();
    redis.restart().await;

    let after = until_ready(|| everything(&e, &b, &views)).await;
    assert_eq!(before, after);
    // Event ids seen before the loss are still duplicates after it, and still stand for their
    // own events only.
    let mut again = Submit::new(b.clone(), m("u0"), score(0.0));
    again.scopes = vec![scope("class:1")];
    again.event_id = Some(EventId::parse("e0").unwrap());
    assert!(e.submit(&again).await.unwrap().duplicate);
    again.scopes.clear();
    assert!(matches!(
        e.submit(&again).await,
        Err(Error::EventIdReused { .. })
    ));
    assert_eq!(
        e.top(&b, &View::all_time(), Limit::new(100).unwrap())
            .await
            .unwrap()
            .entries
            .iter()
            .find(|x| x.member == "u5")
            .unwrap()
            .display_name
            .as_deref(),
        Some("Five")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_board_whose_running_sum_would_leave_its_range_untrimmed_is_rebuilt() {
    // Each -1,500,000 is accepted alone because its member was trimmed after the one before; a
    // replay that summed them without the trims (-4,500,000, past the bound of 2,097,151) would
    // refuse the history the live board took, and the board would never come back.
    let mut redis = PrivateRedis::start().await;
    let db = TestDb::create().await;
    let e = engine(&redis, &db, Durability::Sync).await;
    let b = BoardId::parse("kept").unwrap();
    let def = BoardDef {
        tie_break: TieBreak::First,
        max_members: Some(1),
        ..BoardDef::default()
    };
    assert!(e.put_board(&b, def).await.unwrap());
    e.submit(&Submit::new(b.clone(), m("x"), score(1_000_000.0)))
        .await
        .unwrap();
    for _ in 0..3 {
        e.submit(&Submit::new(b.clone(), m("m"), score(-1_500_000.0)))
            .await
            .unwrap();
    }
    let before = exact(&e, &b).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].contains("\"x\""), "{before:?}");

    redis.kill();
    redis.restart().await;

    let views = [View::all_time()];
    until_ready(|| everything(&e, &b, &views)).await;
    assert_eq!(exact(&e, &b).await, before);
}

/// The members of a page, in rank order.
fn ranked(page: &rankd::engine::Page) -> Vec<&str> {
    page.entries.iter().map(|x| x.member.as_str()).collect()
}

/// Every key of a board exactly as Redis holds it: members, stored scores (ticks included), ranks.
async fn exact(e: &Engine, b: &BoardId) -> Vec<String> {
    let mut keys: Vec<String> = e
        .snapshot_board(b)
        .await
        .unwrap()
        .into_iter()
        .map(|k| {
            format!(
                "{} {} {:?} expires {:?}: {:?}",
                k.key.window, k.key.period, k.key.scope, k.key.expire_ms, k.entries
            )
        })
        .collect();
    keys.sort();
    keys
}

fn termly_def() -> BoardDef {
    BoardDef {
        windows: vec![Window::All, Window::Weekly],
        tie_break: TieBreak::First,
        rank_mode: RankMode::Dense,
        policy: Policy::Best,
        max_members: Some(40),
        ..BoardDef::default()
    }
}

fn termly_event(b: &BoardId, i: u32, id: &str) -> Submit {
    let mut ev = Submit::new(
        b.clone(),
        m(&format!("u{}", i % 53)),
        score(f64::from(i % 11)),
    );
    if i.is_multiple_of(4) {
        ev.scopes = vec![scope("class:1")];
    }
    ev.event_id = Some(EventId::parse(id).unwrap());
    ev
}

fn shown(name: &str) -> Display {
    Display {
        display_name: Some(name.into()),
        data: None,
    }
}

/// The sequence number of `b`'s last stored operation.
async fn stored_seq(store: &dyn rankd::store::Store, b: &BoardId) -> u64 {
    store
        .boards()
        .await
        .unwrap()
        .into_iter()
        .find(|(x, _)| x == b)
        .unwrap()
        .1
}

/// Writes a board around a snapshot: before it, events with ids, display data, removals and a
/// removed member's return; the snapshot; after it, more of each and a definition change. Returns
/// the snapshot's sequence number, checked to be a base a rebuild can start from.
async fn around_a_snapshot(e: &Engine, store: &dyn rankd::store::Store, b: &BoardId) -> u64 {
    assert!(e.put_board(b, termly_def()).await.unwrap());
    for i in 0..120u32 {
        e.submit(&termly_event(b, i, &format!("a{i}")))
            .await
            .unwrap();
    }
    e.put_display(b, &m("u5"), shown("Five")).await.unwrap();
    e.put_display(b, &m("u6"), shown("Six")).await.unwrap();
    e.remove_member(b, &m("u6")).await.unwrap();
    e.put_display(b, &m("u7"), shown("Seven")).await.unwrap();
    e.remove_member(b, &m("u7")).await.unwrap();
    let mut back = termly_event(b, 7, "a-back");
    back.value = score(100.0);
    e.submit(&back).await.unwrap();
    e.put_display(b, &m("u7"), shown("Seven again"))
        .await
        .unwrap();

    let report = rankd::store::snapshot::snapshot(e, store, Some(b))
        .await
        .unwrap();
    assert!(report.entries > 0, "{report:?}");

    for i in 120..200u32 {
        e.submit(&termly_event(b, i, &format!("b{i}")))
            .await
            .unwrap();
    }
    let mut wider = termly_def();
    wider.windows.push(Window::Daily);
    e.put_board(b, wider).await.unwrap();
    e.submit(&termly_event(b, 1, "b-daily")).await.unwrap();
    let mut eight = termly_event(b, 8, "b-eight");
    eight.value = score(99.0);
    e.submit(&eight).await.unwrap();
    e.put_display(b, &m("u8"), shown("Eight")).await.unwrap();
    e.remove_member(b, &m("u5")).await.unwrap();

    let stored_seq = stored_seq(store, b).await;
    let base = store
        .restore_base(b, stored_seq, 0)
        .await
        .unwrap()
        .expect("the snapshot is a base for rebuilds");
    assert!(
        base.seq > 0 && base.seq < stored_seq,
        "{base:?} vs {stored_seq}"
    );
    base.seq
}

/// After a rebuild of [`around_a_snapshot`]'s board: ids from both sides of the snapshot are still
/// duplicates, and display data is as the log left it.
async fn check_ids_and_names(e: &Engine, b: &BoardId) {
    let mut back = termly_event(b, 7, "a-back");
    back.value = score(100.0);
    for ev in [
        termly_event(b, 0, "a0"),
        termly_event(b, 119, "a119"),
        back,
        termly_event(b, 120, "b120"),
        termly_event(b, 1, "b-daily"),
    ] {
        let id = ev.event_id.clone().unwrap();
        let dup = e.submit(&ev).await.unwrap();
        assert!(dup.duplicate, "{id} is a duplicate after the rebuild");
        // And still stands for that event only.
        let other = termly_event(b, 3, id.as_str());
        let got = e.submit(&other).await;
        assert!(
            matches!(&got, Err(Error::EventIdReused { .. })),
            "{id} reused for another event after the rebuild: {got:?}"
        );
    }
    let names: HashMap<String, Option<String>> = e
        .top(b, &View::all_time(), Limit::new(100).unwrap())
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|x| (x.member.clone(), x.display_name.clone()))
        .collect();
    assert_eq!(names.get("u5"), None, "removed after the snapshot");
    assert_eq!(names.get("u6").cloned().flatten(), None);
    assert_eq!(names["u7"].as_deref(), Some("Seven again"));
    assert_eq!(names["u8"].as_deref(), Some("Eight"));
}

const TERMLY_VIEWS: [fn() -> View; 4] = [
    View::all_time,
    || View::all_time().scoped(scope("class:1")),
    || View::current(Window::Weekly),
    || View::current(Window::Daily),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_the_latest_snapshot_and_the_operations_after_it_is_exact() {
    let mut redis = PrivateRedis::start().await;
    let db = TestDb::create().await;
    let e = engine(&redis, &db, Durability::Sync).await;
    let store = rankd::store::PgStore::connect(&db.url()).await.unwrap();
    let b = BoardId::parse("termly").unwrap();
    around_a_snapshot(&e, &store, &b).await;
    let views: Vec<View> = TERMLY_VIEWS.iter().map(|v| v()).collect();
    let before = everything(&e, &b, &views).await.unwrap();
    let exact_before = exact(&e, &b).await;

    redis.kill();
    redis.restart().await;

    let after = until_ready(|| everything(&e, &b, &views)).await;
    assert_eq!(before, after);
    assert_eq!(exact_before, exact(&e, &b).await);
    check_ids_and_names(&e, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_read_whole_then_written_is_a_base_for_exact_rebuilds() {
    // The path a snapshot takes when the board changed while it was streamed: the board read whole,
    // then written in one COPY, here several of its buffers long.
    let mut redis = PrivateRedis::start().await;
    let db = TestDb::create().await;
    let e = engine(&redis, &db, Durability::Sync).await;
    let store = rankd::store::PgStore::connect(&db.url()).await.unwrap();
    let b = BoardId::parse("whole").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    let events: Vec<Submit> = (0..20_000u32)
        .map(|i| {
            Submit::new(
                b.clone(),
                m(&format!("member\\ with a backslash {i:06}")),
                score(f64::from(i % 997) + 0.25),
            )
        })
        .collect();
    for chunk in events.chunks(rankd::engine::MAX_BATCH) {
        e.submit_batch(chunk).await.unwrap();
    }
    let keys = e.snapshot_board(&b).await.unwrap();
    assert_eq!(keys.iter().map(|k| k.entries.len()).sum::<usize>(), 20_000);
    let run = store.write_snapshots(&b, &keys).await.unwrap().unwrap();
    let seq = stored_seq(&store, &b).await;
    assert!(
        rankd::store::snapshot::make_base(&e, &store, &b, run, seq)
            .await
            .unwrap(),
        "it holds what the log implies"
    );
    let base = store
        .restore_base(&b, seq, 0)
        .await
        .unwrap()
        .expect("the written snapshot is a base for rebuilds");
    assert_eq!(base.seq, seq, "taken after the last operation");
    let exact_before = exact(&e, &b).await;

    // Nothing follows the snapshot in the log: the rebuild is the snapshot's rows alone.
    redis.kill();
    redis.restart().await;
    let views = [View::all_time()];
    until_ready(|| everything(&e, &b, &views)).await;
    assert_eq!(exact_before, exact(&e, &b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_restart_starts_from_the_latest_sqlite_snapshot_exactly() {
    let dir = ScratchDir::new("sqlite-restore");
    let config = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..Config::default()
    };
    let first = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .expect("embedded engine starts");
    let store = rankd::store::SqliteStore::open(dir.path()).await.unwrap();
    let b = BoardId::parse("termly").unwrap();
    around_a_snapshot(&first, &store, &b).await;
    let views: Vec<View> = TERMLY_VIEWS.iter().map(|v| v()).collect();
    let before = everything(&first, &b, &views).await.unwrap();
    let exact_before = exact(&first, &b).await;

    // A second process on the same data directory starts with empty memory and rebuilds from it.
    let second = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .expect("embedded engine starts again");
    let after = until_ready(|| everything(&second, &b, &views)).await;
    assert_eq!(before, after);
    assert_eq!(exact_before, exact(&second, &b).await);
    check_ids_and_names(&second, &b).await;
}

/// A board whose engine holds a score no stored operation implies: alice 10 and bob 5, snapshotted
/// (a rebuild base), then `tamper` given the all-time key to write alice 999 into directly, then
/// carol 1 and another snapshot. That snapshot holds the bad score: it must not be the base, and a
/// rebuild (what `rankd admin clear-caches --boards` and `warm` do) gives back the board the log
/// implies.
async fn a_drifted_board_is_rebuilt_from_its_log<F, Fut>(
    e: &Engine,
    store: &dyn rankd::store::Store,
    tamper: F,
) where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use rankd::window::Period;
    let b = BoardId::parse("drift").unwrap();
    assert!(e.put_board(&b, BoardDef::default()).await.unwrap());
    for (member, value) in [("alice", 10.0), ("bob", 5.0)] {
        e.submit(&Submit::new(b.clone(), m(member), score(value)))
            .await
            .unwrap();
    }
    rankd::store::snapshot::snapshot(e, store, Some(&b))
        .await
        .unwrap();
    let first = store
        .restore_base(&b, stored_seq(store, &b).await, 0)
        .await
        .unwrap()
        .expect("a snapshot of what the log implies is a base")
        .seq;

    let all = Period::containing(Window::All, e.now_ms()).unwrap();
    tamper(e.keys().leaderboard(&b, &all, None).zset).await;
    let view = View::all_time();
    let top = e.top(&b, &view, Limit::new(10).unwrap()).await.unwrap();
    assert_eq!(top.entries[0].member, "alice");
    assert_eq!(top.entries[0].score, 999.0, "the fault is in place");
    e.submit(&Submit::new(b.clone(), m("carol"), score(1.0)))
        .await
        .unwrap();
    rankd::store::snapshot::snapshot(e, store, Some(&b))
        .await
        .unwrap();
    let stored = stored_seq(store, &b).await;
    let base = store
        .restore_base(&b, stored, 0)
        .await
        .unwrap()
        .expect("the first snapshot is still a base");
    assert_eq!(
        base.seq, first,
        "a snapshot of a board that differs from its log is no rebuild base"
    );

    e.discard(&b).await.unwrap();
    assert!(rankd::store::rebuild::rebuild(e, store, &b).await.unwrap());
    let top = until_ready(|| e.top(&b, &view, Limit::new(10).unwrap())).await;
    let scores: Vec<(&str, f64)> = top
        .entries
        .iter()
        .map(|x| (x.member.as_str(), x.score))
        .collect();
    assert_eq!(
        scores,
        [("alice", 10.0), ("bob", 5.0), ("carol", 1.0)],
        "the board is what its log implies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_redis_that_differs_from_its_log_is_no_rebuild_base() {
    let redis = PrivateRedis::start().await;
    let (_db, config, store) = durable_on(&redis).await;
    let e = journaled(&config, store.clone(), Arc::new(SystemClock), None).await;
    a_drifted_board_is_rebuilt_from_its_log(&e, store.as_ref(), |zset| async move {
        assert_eq!(redis_cli(redis.port, &["ZADD", &zset, "999", "alice"]), "0");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_snapshot_that_differs_from_its_sqlite_log_is_no_rebuild_base() {
    use rankd::backend::embedded::{EmbeddedExecutor, Value};
    let dir = ScratchDir::new("drift");
    let store = Arc::new(rankd::store::SqliteStore::open(dir.path()).await.unwrap());
    rankd::store::Store::migrate(store.as_ref()).await.unwrap();
    let clock: Arc<dyn rankd::engine::Clock> = Arc::new(SystemClock);
    let exec = Arc::new(EmbeddedExecutor::new(clock.clone()));
    let engine = Engine::new(
        exec.clone(),
        rankd::keys::Keys::new(&prefix()).unwrap(),
        clock,
        rankd::engine::EngineConfig::default(),
    )
    .await
    .unwrap();
    let persister = rankd::store::Persister::start(
        store.clone(),
        Durability::Sync,
        tokio_util::sync::CancellationToken::new(),
    );
    let e = Arc::new(engine.with_journal(persister.journal()));
    persister.attach(&e);
    a_drifted_board_is_rebuilt_from_its_log(&e, store.as_ref(), |zset| async move {
        exec.with_keyspace(move |ks, now| match ks.get_mut(zset.as_bytes(), now) {
            Some(Value::ZSet(z)) => z.insert(b"alice", 999.0),
            other => panic!("{zset} holds {other:?}"),
        })
        .await
        .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_read_while_the_board_changes_is_not_offered_as_one_point() {
    // Durable, as every engine that takes snapshots is: its writes move the board's sequence number.
    let keys = Keyspace::new(Redis::Standalone);
    let db = TestDb::create().await;
    let config = Config {
        redis_url: Some(Redis::Standalone.url()),
        database_url: Some(db.url()),
        durability: Durability::Async,
        key_prefix: keys.prefix().to_owned(),
        ..Config::default()
    };
    let e = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .expect("engine starts");
    let b = BoardId::parse("moving").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    // Four chunks of the read (25,000 members each), so that the write below lands between two of
    // them whatever the timing: see there.
    for start in (0..100_000u32).step_by(10_000) {
        let batch: Vec<Submit> = (start..start + 10_000)
            .map(|i| Submit::new(b.clone(), m(&format!("m{i}")), score(f64::from(i))))
            .collect();
        e.submit_batch(&batch).await.unwrap();
    }
    // Quiet: the read is at one point, and every entry arrives once.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<rankd::engine::SnapChunk>(4);
    let drain = tokio::spawn(async move {
        let mut n = 0;
        while let Some(c) = rx.recv().await {
            n += c.entries.len();
        }
        n
    });
    let keys = e
        .stream_snapshot(&b, tx)
        .await
        .unwrap()
        .expect("a quiet board reads at one point");
    assert_eq!(drain.await.unwrap(), 100_000);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].members, 100_000);

    // A write between two chunks: the read says so rather than offer a mixed snapshot. The channel
    // holds one chunk and the writer takes the second only after its write is done, so the read
    // cannot send the third, nor read the fourth, before the write: the fourth sees it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<rankd::engine::SnapChunk>(1);
    let writer = {
        let (e, b) = (e.clone(), b.clone());
        tokio::spawn(async move {
            let first = rx.recv().await.expect("a first chunk");
            e.submit(&Submit::new(b.clone(), m("late"), score(1.0)))
                .await
                .unwrap();
            while rx.recv().await.is_some() {}
            first.entries.len()
        })
    };
    assert_eq!(e.stream_snapshot(&b, tx).await.unwrap(), None);
    assert!(writer.await.unwrap() > 0);
}

/// An event between a snapshot's listing of the board's keys and its reads creates a key (a new
/// scope): every key read is then at one point, the one after that event, but the new key is not
/// among them. Such a read is no base for a rebuild, which would lose what the new key held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_missed_a_key_created_during_its_read_is_not_offered_as_one_point() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let keys = Keyspace::new(Redis::Standalone);
    let db = TestDb::create().await;
    let url = Redis::Standalone.url();
    let config = Config {
        redis_url: Some(url.clone()),
        database_url: Some(db.url()),
        durability: Durability::Async,
        key_prefix: keys.prefix().to_owned(),
        ..Config::default()
    };
    let other = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let b = BoardId::parse("newkey").unwrap();
    other.put_board(&b, BoardDef::default()).await.unwrap();
    other
        .submit(&Submit::new(b.clone(), m("x"), score(1.0)))
        .await
        .unwrap();
    // Armed, the first key read of a snapshot is preceded by another instance's event in a scope
    // the board has never had.
    let armed = Arc::new(AtomicU32::new(0));
    let (writer, board, fire) = (other.clone(), b.clone(), armed.clone());
    let exec = Hooked::on(
        &url,
        Box::new(move |sending| match sending {
            Sending::One(call)
                if call.script.name() == rankd::engine::scripts::SNAPSHOT_KEY.name() =>
            {
                let n = fire.swap(0, Ordering::Relaxed);
                (n > 0).then(|| {
                    let mut ev = Submit::new(board.clone(), m("y"), score(2.0));
                    ev.scopes = vec![scope(&format!("class:{n}"))];
                    let writer = writer.clone();
                    Box::pin(async move {
                        writer.submit(&ev).await.unwrap();
                    }) as _
                })
            }
            _ => None,
        }),
    )
    .await;
    let store = Arc::new(rankd::store::PgStore::connect(&db.url()).await.unwrap());
    let e = journaled(
        &config,
        store.clone(),
        Arc::new(SystemClock),
        Some(Arc::new(exec)),
    )
    .await;
    // Postgres' path: read and streamed at once.
    armed.store(1, Ordering::Relaxed);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<rankd::engine::SnapChunk>(16);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    assert_eq!(
        e.stream_snapshot(&b, tx).await.unwrap(),
        None,
        "the key of scope class:1 was missed"
    );
    drain.await.unwrap();
    // SQLite's path: read whole, again until it is at one point with every key.
    armed.store(2, Ordering::Relaxed);
    let keys = e.snapshot_board(&b).await.unwrap();
    let scopes: Vec<Option<&str>> = keys.iter().map(|k| k.key.scope.as_deref()).collect();
    assert!(
        scopes.contains(&Some("class:2")),
        "the key created during the first read is read: {scopes:?}"
    );
    assert!(rankd::engine::at_one_point(&keys).is_some());
    assert_eq!(armed.load(Ordering::Relaxed), 0, "the hook fired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_under_sync_load_keeps_every_acknowledged_event_exactly_once() {
    let mut redis = PrivateRedis::start().await;
    let db = TestDb::create().await;
    let e = engine(&redis, &db, Durability::Sync).await;
    let b = BoardId::parse("load").unwrap();
    e.put_board(
        &b,
        BoardDef {
            policy: Policy::Incr,
            ..BoardDef::default()
        },
    )
    .await
    .unwrap();
    let writers = 8;
    let per_writer = 150u32;
    // Acknowledgements and refused attempts, to prove the load spanned the outage.
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let e = e.clone();
        let b = b.clone();
        let (acks, refusals) = (acks.clone(), refusals.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked: Vec<(String, f64)> = Vec::new();
            for i in 0..per_writer {
                let member = format!("m{}", (w * 7 + i) % 23);
                let value = f64::from(1 + (i % 5));
                let mut ev = Submit::new(b.clone(), m(&member), score(value));
                ev.event_id = Some(EventId::parse(&format!("w{w}-{i}")).unwrap());
                // Retry until acknowledged: the event id makes retries safe.
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match e.submit(&ev).await {
                        Ok(_) => break,
                        // Unconfirmed: Redis may have applied it; the same event id makes the
                        // retry apply it at most once, as the answer says.
                        Err(Error::Unavailable(_))
                        | Err(Error::Unconfirmed { .. })
                        | Err(Error::Conflict(_)) => {
                            refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            assert!(Instant::now() < deadline, "never acknowledged");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(err) => panic!("{err}"),
                    }
                }
                acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                acked.push((member, value));
            }
            acked
        }));
    }
    // Mid-load (an eighth of the events acknowledged), Redis dies and comes back empty.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.load(std::sync::atomic::Ordering::Relaxed) < 150 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    let at_kill = acks.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.restart().await;
    let mut reference: HashMap<String, f64> = HashMap::new();
    for t in tasks {
        for (member, v) in t.await.unwrap() {
            *reference.entry(member).or_default() += v;
        }
    }
    // The load spanned the outage: writes acknowledged before Redis died, refused while it was
    // gone, and acknowledged after it came back.
    let total = acks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        at_kill > 0 && total > at_kill && refusals.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the load did not span the outage: {at_kill} acknowledged before it, {total} in all"
    );
    let all = View::all_time();
    let top = until_ready(|| e.top(&b, &all, Limit::new(1000).unwrap())).await;
    let got: HashMap<String, f64> = top
        .entries
        .iter()
        .map(|x| (x.member.clone(), x.score))
        .collect();
    assert_eq!(
        got, reference,
        "every acknowledged event counts exactly once"
    );
    // Ranks equal an independent reference: sort the reference the board's way.
    let mut want: Vec<(String, f64)> = reference.into_iter().collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    let order: Vec<String> = top.entries.iter().map(|x| x.member.clone()).collect();
    assert_eq!(order, want.into_iter().map(|(m, _)| m).collect::<Vec<_>>());
}

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

/// The rankd binary as a child process, against the shared Redis (own prefix) and a test database.
struct Binary {
    child: crate::helpers::RankdProcess,
    base: String,
}

impl Binary {
    async fn start(prefix: &str, db: &TestDb, durability: &str, port: u16) -> Self {
        let child = spawn_rankd(port, "/readyz", Duration::from_secs(20), |c| {
            c.args(["--redis-url", &Redis::Standalone.url()])
                .args(["--key-prefix", prefix])
                .env("RANKD_DATABASE_URL", db.url())
                .env("RANKD_DURABILITY", durability);
        })
        .await;
        let base = format!("http://127.0.0.1:{port}");
        Self { child, base }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writers posting score events to one URL, each until an answer fails (the process died), 20 s
/// pass, or it has sent its 5,000 events.
struct Writers {
    acked: Arc<std::sync::Mutex<Vec<(String, u32)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// `n` writers; `event(w, i)` is writer w's i-th event: its member, value and JSON body.
    fn start(
        http: &reqwest::Client,
        url: String,
        n: u32,
        event: fn(u32, u32) -> (String, u32, serde_json::Value),
    ) -> Self {
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Instant::now() + Duration::from_secs(20);
        let tasks = (0..n)
            .map(|w| {
                let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
                tokio::spawn(async move {
                    for i in 0..5000u32 {
                        if Instant::now() > stop {
                            break;
                        }
                        let (member, value, body) = event(w, i);
                        let sent = http
                            .post(&url)
                            .json(&body)
                            .timeout(Duration::from_secs(2))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 200 => {
                                acked.lock().unwrap().push((member, value))
                            }
                            _ => break,
                        }
                    }
                })
            })
            .collect();
        Self { acked, tasks }
    }

    /// Waits for every writer to stop; the (member, value) of each acknowledged event. Fails unless
    /// the load ran: more than 20 acknowledged.
    async fn acknowledged(self) -> Vec<(String, u32)> {
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        assert!(
            acked.len() > 20,
            "the load ran before the kill ({} acknowledged)",
            acked.len()
        );
        acked
    }
}

/// Member -> score of a top page.
async fn top_scores(http: &reqwest::Client, url: &str) -> HashMap<String, f64> {
    let top: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
    top["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{url}: {top}"))
        .iter()
        .map(|e| {
            (
                e["member"].as_str().unwrap().to_owned(),
                e["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Every member's score is at least the sum of its acknowledged values (events applied but not
/// acknowledged when the process died may add to it).
fn assert_holds(got: &HashMap<String, f64>, acked: &[(String, u32)], what: &str) {
    let mut want: HashMap<String, f64> = HashMap::new();
    for (mem, v) in acked {
        *want.entry(mem.clone()).or_default() += f64::from(*v);
    }
    for (mem, v) in &want {
        assert!(
            got.get(mem).copied().unwrap_or(0.0) >= *v,
            "{what} {mem}: {got:?} < {want:?}"
        );
    }
}

async fn killed_rankd_loses_nothing_acknowledged(durability: &str) {
    let keys = Keyspace::new(Redis::Standalone);
    let db = TestDb::create().await;
    let prefix = keys.prefix();
    let port = crate::server::free_port();
    let mut bin = Binary::start(prefix, &db, durability, port).await;
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/v1/boards/k9", bin.base))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let writers = Writers::start(
        &http,
        format!("{}/v1/boards/k9/scores", bin.base),
        6,
        |w, i| {
            let member = format!("m{}", i % 11);
            let value = 1 + i % 3;
            let body = serde_json::json!({"member": member, "value": value, "event_id": format!("w{w}-{i}")});
            (member, value, body)
        },
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    bin.kill9();
    let acked = writers.acknowledged().await;
    let bin = Binary::start(prefix, &db, durability, port).await;
    let metrics = http
        .get(format!("{}/metrics", bin.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "rankd_store_durable 1"),
        "a store, yet /metrics lacks rankd_store_durable 1:\n{metrics}"
    );
    // Every acknowledged event is in Redis: each member's score is at least what was acknowledged
    // (events applied but not acknowledged when the process died may add to it).
    let got = top_scores(&http, &format!("{}/v1/boards/k9/top?limit=100", bin.base)).await;
    assert_holds(&got, &acked, "top");
    // ... and the store holds exactly what Redis holds once the sweep has run: every applied event,
    // acknowledged ones included, once.
    let pool = db.pool().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<(String, f64)> = sqlx::query_as(
            "SELECT member, sum(value) FROM rankd_ops WHERE board = 'k9' AND op = 'e' GROUP BY member",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let stored: HashMap<String, f64> = rows.into_iter().collect();
        if stored == got {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store never caught up: {stored:?} vs {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n_acked = acked.len() as i64;
    let (n_events,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rankd_ops WHERE board = 'k9' AND op = 'e'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(n_events >= n_acked);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankd_killed_under_sync_load_loses_nothing_acknowledged() {
    killed_rankd_loses_nothing_acknowledged("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankd_killed_under_async_load_loses_nothing_acknowledged() {
    killed_rankd_loses_nothing_acknowledged("async").await;
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

/// The rankd binary on the embedded engine, its store an SQLite file in `dir`.
async fn embedded_binary(dir: &std::path::Path, port: u16) -> crate::helpers::RankdProcess {
    spawn_rankd(port, "/readyz", Duration::from_secs(20), |c| {
        c.env("RANKD_DATA_DIR", dir)
            .env_remove("RANKD_REDIS_URL")
            .env_remove("RANKD_DATABASE_URL");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_rankd_killed_and_restarted_keeps_every_acknowledged_event() {
    let dir = ScratchDir::new("data");
    let port = crate::server::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = embedded_binary(dir.path(), port).await;
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/v1/boards/emb"))
        .json(&serde_json::json!({"windows": ["all", "daily"], "tie_break": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let writers = Writers::start(&http, format!("{base}/v1/boards/emb/scores"), 4, |w, i| {
        let member = format!("m{}", i % 7);
        let value = 1 + i % 4;
        let body = serde_json::json!({"member": member, "value": value, "scopes": ["c:1"], "event_id": format!("w{w}-{i}")});
        (member, value, body)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = child.kill();
    let _ = child.wait();
    let acked = writers.acknowledged().await;
    let _child = embedded_binary(dir.path(), port).await;
    // Sync durability: everything acknowledged was committed before its answer; anything more was
    // applied and committed but its answer was lost with the process.
    for path in [
        "top?limit=100",
        "top?limit=100&scope=c:1",
        "top?limit=100&window=daily",
    ] {
        let got = top_scores(&http, &format!("{base}/v1/boards/emb/{path}")).await;
        assert_holds(&got, &acked, path);
    }
    // An acknowledged event id is still a duplicate after the restart.
    let (mem, _) = &acked[0];
    let body =
        serde_json::json!({"member": mem, "value": 1, "scopes": ["c:1"], "event_id": "w0-0"});
    let r: serde_json::Value = http
        .post(format!("{base}/v1/boards/emb/scores"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["duplicate"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_async_rankd_stopped_by_sigterm_stores_every_answered_write() {
    use futures::StreamExt;
    let dir = ScratchDir::new("async");
    let port = crate::server::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_rankd(port, "/readyz", Duration::from_secs(20), |c| {
        c.env("RANKD_DATA_DIR", dir.path())
            .env("RANKD_DURABILITY", "async")
            .env_remove("RANKD_REDIS_URL")
            .env_remove("RANKD_DATABASE_URL");
    })
    .await;
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/v1/boards/quit"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Answered once the in-memory log took them, before the store did. SIGTERM comes while
    // writes are still arriving, so that the store's queue is busy when the server stops.
    let url = format!("{base}/v1/boards/quit/scores");
    let pid = child.id().to_string();
    let mut answered = 0;
    let mut results = futures::stream::iter(0..600)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.post(url)
                    .json(&serde_json::json!({"member": format!("m{i}"), "value": 1}))
                    .send()
                    .await
                    .map(|r| r.status())
            }
        })
        .buffer_unordered(16);
    while let Some(r) = results.next().await {
        if r.is_ok_and(|s| s == 200) {
            answered += 1;
            if answered == 300 {
                let ok = std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap();
                assert!(ok.success());
            }
        }
    }
    assert!(answered >= 300, "{answered}");
    crate::helpers::exit_status(&mut child, Duration::from_secs(20)).await;
    let _child = embedded_binary(dir.path(), port).await;
    let v: serde_json::Value = http
        .get(format!("{base}/v1/boards/quit/top?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = v["total"].as_u64().unwrap();
    assert!(
        total >= answered,
        "{answered} writes were answered, {total} survived the stop: {v}"
    );
}

/// Offers `ops` to `store`, then what it holds of board `b`, as (seq, kind) pairs.
async fn offered(
    store: &dyn rankd::store::Store,
    b: &BoardId,
    ops: &[rankd::engine::LoggedOp],
) -> Vec<(u64, char)> {
    use rankd::engine::Op;
    store.insert_ops(ops).await.unwrap();
    store
        .ops(b)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            let kind = match o.op {
                Op::Define { .. } => 'd',
                Op::Event { .. } => 'e',
                Op::Remove { .. } => 'r',
                Op::Display { .. } => 'p',
            };
            (o.seq, kind)
        })
        .collect()
}

/// A board's first definition offered again (the sweep and the writer both offer what the log
/// holds) must not wipe what followed it; a new definition at sequence number 1, a new life of the
/// board, replaces the old life.
async fn first_definition_offered_twice(store: &dyn rankd::store::Store) {
    use rankd::engine::{LoggedOp, Op};
    store.migrate().await.unwrap();
    let b = BoardId::parse(&format!("twice{}", prefix().trim_end_matches(':'))).unwrap();
    let define = |version: &str| LoggedOp {
        board: b.clone(),
        seq: 1,
        recv_ms: 1,
        op: Op::Define {
            version: version.into(),
            json: serde_json::to_string(&BoardDef::default()).unwrap(),
        },
    };
    let event = |seq: u64| LoggedOp {
        board: b.clone(),
        seq,
        recv_ms: 2,
        op: Op::Event {
            member: "u".into(),
            value: 1.0,
            event_id: None,
            at_ms: 2,
            scopes: vec![],
        },
    };
    let life = [define("v1"), event(2), event(3)];
    assert_eq!(
        offered(store, &b, &life).await,
        [(1, 'd'), (2, 'e'), (3, 'e')]
    );
    assert_eq!(
        offered(store, &b, &life[..1]).await,
        [(1, 'd'), (2, 'e'), (3, 'e')],
        "offered again, the first definition keeps the operations after it"
    );
    assert_eq!(
        offered(store, &b, &[define("v2")]).await,
        [(1, 'd')],
        "a new life starts empty"
    );
    store.purge(&b).await.unwrap();
}

/// Two tests of one store check, `$check(&dyn Store)`: `$pg` on a test database in Postgres,
/// `$sqlite` on a file of its own in SQLite.
macro_rules! on_both_stores {
    ($check:ident, $pg:ident, $sqlite:ident) => {
        #[tokio::test]
        async fn $pg() {
            let db = TestDb::create().await;
            let store = rankd::store::PgStore::connect(&db.url()).await.unwrap();
            $check(&store).await;
        }

        #[tokio::test]
        async fn $sqlite() {
            let dir = ScratchDir::new(stringify!($check));
            let store = rankd::store::SqliteStore::open(dir.path()).await.unwrap();
            $check(&store).await;
        }
    };
}

on_both_stores!(
    first_definition_offered_twice,
    the_first_definition_offered_twice_keeps_what_followed_it_in_postgres,
    the_first_definition_offered_twice_keeps_what_followed_it_in_sqlite
);

/// Redis lost operations the store holds and numbered new ones again: the store keeps both. The
/// new ones wait, with every later one of their board, until merged after the store's own, in
/// Redis' order; offering any of them again, before or after the merge, changes nothing.
async fn numbered_again(store: &dyn rankd::store::Store) {
    use rankd::engine::{LoggedOp, Op};
    store.migrate().await.unwrap();
    let b = BoardId::parse(&format!("again{}", prefix().trim_end_matches(':'))).unwrap();
    let define = LoggedOp {
        board: b.clone(),
        seq: 1,
        recv_ms: 1,
        op: Op::Define {
            version: "v1".into(),
            json: serde_json::to_string(&BoardDef::default()).unwrap(),
        },
    };
    let event = |seq: u64, recv_ms: i64, member: &str| LoggedOp {
        board: b.clone(),
        seq,
        recv_ms,
        op: Op::Event {
            member: member.into(),
            value: 1.0,
            event_id: None,
            at_ms: recv_ms,
            scopes: vec![],
        },
    };
    let members = |ops: Vec<LoggedOp>| -> Vec<(u64, String)> {
        ops.into_iter()
            .map(|o| match o.op {
                Op::Define { .. } => (o.seq, "def".to_owned()),
                Op::Event { member, .. } => (o.seq, member),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let kept = [
        define,
        event(2, 10, "a"),
        event(3, 11, "b"),
        event(4, 12, "c"),
    ];
    assert_eq!(
        store.insert_ops(&kept).await.unwrap(),
        Vec::<BoardId>::new()
    );
    assert!(!store.diverged(&b).await.unwrap());
    // Redis lost 3 and 4, then gave 3, 4 and 5 to new operations, offered together.
    let again = [event(5, 22, "z"), event(3, 20, "x"), event(4, 21, "y")];
    assert_eq!(
        store.insert_ops(&again).await.unwrap(),
        std::slice::from_ref(&b)
    );
    let before = [(1, "def"), (2, "a"), (3, "b"), (4, "c")].map(|(s, m)| (s, m.to_owned()));
    assert_eq!(
        members(store.ops(&b).await.unwrap()),
        before,
        "5 is of the new numbering too: not stored at it"
    );
    assert!(store.diverged(&b).await.unwrap());
    // Offered again (the writer and the sweep), and the store's own offered again: no news.
    assert_eq!(
        store.insert_ops(&again).await.unwrap(),
        std::slice::from_ref(&b)
    );
    assert_eq!(
        store.insert_ops(&kept[1..]).await.unwrap(),
        std::slice::from_ref(&b)
    );
    // Later operations wait too, even at numbers the store never gave.
    assert_eq!(
        store.insert_ops(&[event(6, 23, "w")]).await.unwrap(),
        std::slice::from_ref(&b)
    );
    assert_eq!(members(store.ops(&b).await.unwrap()), before);
    assert_eq!(store.merge_parked(&b).await.unwrap(), 4);
    assert!(!store.diverged(&b).await.unwrap());
    let after = [
        (1, "def"),
        (2, "a"),
        (3, "b"),
        (4, "c"),
        (5, "x"),
        (6, "y"),
        (7, "z"),
        (8, "w"),
    ]
    .map(|(s, m)| (s, m.to_owned()));
    assert_eq!(members(store.ops(&b).await.unwrap()), after);
    // A late offer of merged operations (a sweep that read them before the merge), with one that
    // follows the merged log: only the new one is stored, at its own number.
    assert_eq!(
        store
            .insert_ops(&[event(4, 21, "y"), event(9, 30, "v")])
            .await
            .unwrap(),
        Vec::<BoardId>::new()
    );
    let mut last = after.to_vec();
    last.push((9, "v".to_owned()));
    assert_eq!(members(store.ops(&b).await.unwrap()), last);
    assert_eq!(store.merge_parked(&b).await.unwrap(), 0);
    store.tombstone(&b).await.unwrap();
    store.purge(&b).await.unwrap();
}

on_both_stores!(
    numbered_again,
    operations_redis_numbered_again_are_kept_after_the_stored_ones_in_postgres,
    operations_redis_numbered_again_are_kept_after_the_stored_ones_in_sqlite
);

/// Commits of one board's operations in Postgres wait for each other (and for a merge): whether an
/// operation is stored or parked depends on what the others wrote.
#[tokio::test]
async fn commits_of_one_board_take_turns_in_postgres() {
    use rankd::engine::{LoggedOp, Op};
    let db = TestDb::create().await;
    let store = rankd::store::PgStore::connect(&db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let b = BoardId::parse("turns").unwrap();
    let op = LoggedOp {
        board: b.clone(),
        seq: 1,
        recv_ms: 1,
        op: Op::Define {
            version: "v1".into(),
            json: serde_json::to_string(&BoardDef::default()).unwrap(),
        },
    };
    // Another transaction holds the board's lock, as a commit or a merge in progress would.
    let pool = db.pool().await;
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(7301, hashtext($1))")
        .bind(b.as_str())
        .execute(&mut *other)
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let (store, op) = (store.clone(), op.clone());
        async move { store.insert_ops(&[op]).await.unwrap() }
    });
    let merging = tokio::spawn({
        let (store, b) = (store.clone(), b.clone());
        async move { store.merge_parked(&b).await.unwrap() }
    });
    // Both wait for the board's lock (seen in pg_locks, not guessed from time).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (waiting_locks,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks
             WHERE locktype = 'advisory' AND classid = 7301 AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting_locks == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline && !waiting.is_finished() && !merging.is_finished(),
            "a commit or a merge ran beside another transaction on its board"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.commit().await.unwrap();
    assert!(waiting.await.unwrap().is_empty());
    assert_eq!(merging.await.unwrap(), 0);
    assert_eq!(store.ops(&b).await.unwrap().len(), 1);
    pool.close().await;
}

/// Concurrent commits on SQLite wait for the write lock rather than fail: each reads before it
/// writes, which a deferred transaction cannot do once another connection has written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_to_sqlite_all_succeed() {
    use rankd::engine::{LoggedOp, Op};
    let dir = ScratchDir::new("busy");
    let store = Arc::new(rankd::store::SqliteStore::open(dir.path()).await.unwrap());
    rankd::store::Store::migrate(store.as_ref()).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let b = BoardId::parse(&format!("busy{w}")).unwrap();
                for seq in 1..=40u64 {
                    let op = LoggedOp {
                        board: b.clone(),
                        seq,
                        recv_ms: seq as i64,
                        op: Op::Event {
                            member: format!("m{seq}"),
                            value: 1.0,
                            event_id: None,
                            at_ms: 1,
                            scopes: vec![],
                        },
                    };
                    rankd::store::Store::insert_ops(store.as_ref(), &[op])
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}, seq {seq}: {e}"));
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // Each writer's 40 operations are stored, in order.
    for w in 0..8 {
        let b = BoardId::parse(&format!("busy{w}")).unwrap();
        let ops = rankd::store::Store::ops(store.as_ref(), &b).await.unwrap();
        let seqs: Vec<u64> = ops.iter().map(|o| o.seq).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "{b}");
        assert!(ops.iter().enumerate().all(|(i, o)| matches!(
            &o.op, Op::Event { member, .. } if *member == format!("m{}", i + 1)
        )));
    }
}

/// Runs redis-cli against a private instance; its answer.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until the instance on `port` follows the one on `primary` and has caught up with it.
async fn following(port: u16, primary: u16) {
    let field = |info: &str, name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = redis_cli(port, &["INFO", "replication"]);
        let theirs = redis_cli(primary, &["INFO", "replication"]);
        if field(&info, "master_port") == Some(primary.to_string())
            && field(&info, "master_link_status").as_deref() == Some("up")
            && field(&info, "master_sync_in_progress").as_deref() == Some("0")
            && field(&info, "slave_repl_offset").is_some()
            && field(&info, "slave_repl_offset") == field(&theirs, "master_repl_offset")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replication never caught up: {info}\n{theirs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A failover to a replica that had not received the last acknowledged writes: Redis keeps the
/// board but lost operations the store holds, and its counter gives their numbers to new writes.
/// Every acknowledged write must survive: the board comes back with all of them, and the store
/// holds each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_a_failover_to_a_replica_that_was_behind_are_kept_with_the_ones_it_lost() {
    let primary = PrivateRedis::start().await;
    let replica = PrivateRedis::start().await;
    for r in [&primary, &replica] {
        // A full resync streams the data set and loads it from the socket, at once: no RDB file
        // is written anywhere (diskless sync is the primary's default).
        let set = [
            "CONFIG",
            "SET",
            "repl-diskless-load",
            "swapdb",
            "repl-diskless-sync-delay",
            "0",
        ];
        assert_eq!(redis_cli(r.port, &set), "OK");
    }
    let db = TestDb::create().await;
    redis_cli(
        replica.port,
        &["REPLICAOF", "127.0.0.1", &primary.port.to_string()],
    );
    following(replica.port, primary.port).await;
    // Without the background checks, which could repair Redis before the writes below: the
    // resync is the writer's, at the first write Redis numbers again.
    let config = Config {
        redis_url: Some(primary.url()),
        database_url: Some(db.url()),
        key_prefix: prefix(),
        ..Config::default()
    };
    let store = Arc::new(rankd::store::PgStore::connect(&db.url()).await.unwrap());
    store.migrate().await.unwrap();
    let e = journaled(&config, store.clone(), Arc::new(SystemClock), None).await;
    let b = BoardId::parse("failover").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    let submit = |who: &'static str, v: f64| {
        let (e, b) = (e.clone(), b.clone());
        async move {
            let mut ev = Submit::new(b, m(who), score(v));
            ev.event_id = Some(EventId::parse(who).unwrap());
            // Resent with its event id while the board is being rebuilt or the answer is unknown.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match e.submit(&ev).await {
                    Ok(_) => return,
                    Err(Error::Unavailable(_) | Error::Unconfirmed { .. })
                        if Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(err) => panic!("{who}: {err}"),
                }
            }
        }
    };
    submit("a", 1.0).await;
    submit("b", 2.0).await;
    // The replica holds a and b, then stops receiving: c and d are acknowledged, and stored,
    // without it.
    following(replica.port, primary.port).await;
    redis_cli(replica.port, &["REPLICAOF", "NO", "ONE"]);
    submit("c", 3.0).await;
    submit("d", 4.0).await;
    // The failover, seen from rankd: its Redis now holds the replica's data (it resyncs from the
    // replica, which is then promoted in its place).
    redis_cli(
        primary.port,
        &["REPLICAOF", "127.0.0.1", &replica.port.to_string()],
    );
    following(primary.port, replica.port).await;
    redis_cli(primary.port, &["REPLICAOF", "NO", "ONE"]);
    let all = View::all_time();
    let top = until_ready(|| e.top(&b, &all, Limit::new(10).unwrap())).await;
    assert_eq!(top.total, 2, "Redis lost c and d: {:?}", top.entries);
    // Redis numbers these two as it numbered c and d.
    submit("e", 5.0).await;
    submit("f", 6.0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let top = loop {
        let top = until_ready(|| e.top(&b, &all, Limit::new(10).unwrap())).await;
        if top.total == 6 || Instant::now() > deadline {
            break top;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let standing: Vec<(&str, f64)> = top
        .entries
        .iter()
        .map(|x| (x.member.as_str(), x.score))
        .collect();
    assert_eq!(
        standing,
        [
            ("f", 6.0),
            ("e", 5.0),
            ("d", 4.0),
            ("c", 3.0),
            ("b", 2.0),
            ("a", 1.0)
        ],
        "every acknowledged write, once"
    );
    let mut stored: Vec<String> = store
        .ops(&b)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|o| match o.op {
            rankd::engine::Op::Event { member, .. } => Some(member),
            _ => None,
        })
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        ["a", "b", "c", "d", "e", "f"],
        "the store holds each once"
    );
    drop(e);
}

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

/// A journal that takes every operation and keeps none: async durability with its queue full,
/// where an answered write lives only in the Redis log until the sweep copies it.
struct Dropping;

#[async_trait::async_trait]
impl rankd::engine::Journal for Dropping {
    async fn record(&self, _ops: Vec<rankd::engine::LoggedOp>) -> Result<(), Error> {
        Ok(())
    }
    async fn board_deleting(&self, _board: &BoardId) -> Result<bool, Error> {
        Ok(true)
    }
    async fn board_deleted(&self, _board: &BoardId) -> Result<(), Error> {
        Ok(())
    }
    async fn lost(&self, _board: &BoardId) -> Result<bool, Error> {
        Ok(false)
    }
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
        matches!(answer, Err(Error::Unavailable(_))),
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
    // This instance: the same Redis and store, its delete calls preceded by the other's writes.
    // Before every call of the delete script, a write through the other instance in a new scope,
    // as a busy board's writers would: every attempt then finds the key index changed since it
    // read it.
    let (writer, board) = (other.clone(), b.clone());
    let changes = std::sync::atomic::AtomicU32::new(0);
    let exec = Hooked::on(
        &redis.url(),
        Box::new(move |sending| match sending {
            Sending::One(call)
                if call.script.name() == rankd::engine::scripts::DELETE_BOARD.name() =>
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

/// [`journaled`] over `exec`, with a rebuild lease of `lease`.
async fn journaled_with_lease(
    config: &Config,
    store: Arc<rankd::store::PgStore>,
    exec: Arc<dyn rankd::backend::Executor>,
    lease: Duration,
) -> Arc<Engine> {
    let engine = Engine::new(
        exec,
        rankd::keys::Keys::new(&config.key_prefix).unwrap(),
        Arc::new(SystemClock),
        rankd::engine::EngineConfig {
            rebuild_lease: lease,
            ..rankd::engine::EngineConfig::default()
        },
    )
    .await
    .unwrap();
    with_persister(engine, store)
}

/// Two instances on a private Redis and a test database, with rebuild leases short enough for a
/// test: `other`, and the lease; [`plain`] gives the second its executor.
struct Leased {
    redis: PrivateRedis,
    db: TestDb,
    config: Config,
    store: Arc<rankd::store::PgStore>,
    lease: Duration,
    other: Arc<Engine>,
}

async fn leased() -> Leased {
    let redis = PrivateRedis::start().await;
    let (db, config, store) = durable_on(&redis).await;
    // Long enough that a renewal late by a busy machine still comes in time.
    let lease = Duration::from_millis(1_600);
    let other = journaled_with_lease(&config, store.clone(), plain(&redis).await, lease).await;
    Leased {
        redis,
        db,
        config,
        store,
        lease,
        other,
    }
}

/// A plain executor on `redis`.
async fn plain(redis: &PrivateRedis) -> Arc<dyn rankd::backend::Executor> {
    use rankd::backend::redis::{RedisConfig, RedisExecutor};
    Arc::new(
        RedisExecutor::connect(&RedisConfig::new(redis.url()))
            .await
            .unwrap(),
    )
}

/// A rebuild whose replay of eight display operations (one Redis call each) is held up for three
/// leases in all, while another instance checks the board: `progressing`, each call waits half a
/// lease; otherwise the first waits all three leases at once (a rebuild that hangs). Returns what
/// the other instance's check returned, what the slow rebuild returned, and the members after.
async fn long_rebuild(progressing: bool) -> (String, String, Vec<String>) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let Leased {
        mut redis,
        db: _db,
        config,
        store,
        lease,
        other,
    } = leased().await;
    let b = BoardId::parse("long").unwrap();
    other.put_board(&b, BoardDef::default()).await.unwrap();
    for (i, member) in ["a", "b", "c"].into_iter().enumerate() {
        other
            .submit(&Submit::new(b.clone(), m(member), score(i as f64 + 1.0)))
            .await
            .unwrap();
    }
    for i in 0..8 {
        let shown = Display {
            display_name: Some(format!("A{i}")),
            data: None,
        };
        other.put_display(&b, &m("a"), shown).await.unwrap();
    }
    let exec = plain(&redis).await;
    redis.kill();
    redis.restart().await;
    let taken = Arc::new(std::sync::Mutex::new(None));
    let (checker, held, board, seen) = (other.clone(), store.clone(), b.clone(), taken.clone());
    let calls = AtomicU32::new(0);
    let hooked = Hooked {
        inner: exec,
        hook: Box::new(move |sending| match sending {
            Sending::One(call)
                if call.script.name() == rankd::engine::scripts::DISPLAY_PUT.name() =>
            {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                let wait = match (progressing, n) {
                    (true, _) => lease / 2,
                    (false, 0) => lease * 3,
                    (false, _) => Duration::ZERO,
                };
                // The check comes once three leases have passed since the replay began.
                let check = if progressing { n == 6 } else { n == 0 };
                let (checker, held, board, seen) =
                    (checker.clone(), held.clone(), board.clone(), seen.clone());
                Some(Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    if check {
                        let r =
                            rankd::store::rebuild::rebuild(&checker, held.as_ref(), &board).await;
                        *seen.lock().unwrap() = Some(format!("{r:?}"));
                    }
                }))
            }
            _ => None,
        }),
    };
    let slow = journaled_with_lease(&config, store.clone(), Arc::new(hooked), lease).await;
    let r = rankd::store::rebuild::rebuild(&slow, store.as_ref(), &b).await;
    let all = View::all_time();
    let top = until_ready(|| other.top(&b, &all, Limit::new(10).unwrap())).await;
    let members = top.entries.iter().map(|x| x.member.clone()).collect();
    let taken = taken.lock().unwrap().clone().unwrap_or_default();
    (taken, format!("{r:?}"), members)
}

/// A rebuild that takes longer than its lease, still working, keeps the board: it renews its hold,
/// and another instance's check leaves it alone rather than start the same work over (and, with
/// every rebuild of a big board taken over in turn, never finish). One that hangs does not: the
/// board is taken over after a lease, as from a rebuild that crashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_longer_than_its_lease_keeps_the_board_while_it_works() {
    let (taken, slow, members) = long_rebuild(true).await;
    assert_eq!(
        taken, "Ok(false)",
        "the other instance left the working rebuild alone"
    );
    assert_eq!(slow, "Ok(true)", "the slow rebuild finished");
    assert_eq!(members, ["c", "b", "a"]);
    let (taken, slow, members) = long_rebuild(false).await;
    assert_eq!(
        taken, "Ok(true)",
        "the other instance took the hung rebuild over"
    );
    assert!(
        slow.starts_with("Err"),
        "the hung rebuild lost its hold: {slow}"
    );
    assert_eq!(members, ["c", "b", "a"]);
}

/// Two rebuilds in one process, one working and one hung: the working one's progress does not
/// keep the hung one's hold, which another instance takes over after a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_rebuild_beside_a_working_one_is_taken_over() {
    let Leased {
        mut redis,
        db: _db,
        config,
        store,
        lease,
        other,
    } = leased().await;
    let (hung, working) = (
        BoardId::parse("hung").unwrap(),
        BoardId::parse("working").unwrap(),
    );
    for b in [&hung, &working] {
        other.put_board(b, BoardDef::default()).await.unwrap();
        other
            .submit(&Submit::new(b.clone(), m("a"), score(1.0)))
            .await
            .unwrap();
        for i in 0..8 {
            let shown = Display {
                display_name: Some(format!("A{i}")),
                data: None,
            };
            other.put_display(b, &m("a"), shown).await.unwrap();
        }
    }
    let exec = plain(&redis).await;
    redis.kill();
    redis.restart().await;
    let taken = Arc::new(std::sync::Mutex::new(None));
    let (checker, held, board, seen) = (other.clone(), store.clone(), hung.clone(), taken.clone());
    let first = std::sync::atomic::AtomicBool::new(true);
    let hooked = Hooked {
        inner: exec,
        hook: Box::new(move |sending| match sending {
            Sending::One(call)
                if call.script.name() == rankd::engine::scripts::DISPLAY_PUT.name() =>
            {
                if call.keys[0].contains("{working}") {
                    return Some(Box::pin(tokio::time::sleep(lease / 2)));
                }
                if !first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    return None;
                }
                let (checker, held, board, seen) =
                    (checker.clone(), held.clone(), board.clone(), seen.clone());
                Some(Box::pin(async move {
                    tokio::time::sleep(lease * 3).await;
                    let r = rankd::store::rebuild::rebuild(&checker, held.as_ref(), &board).await;
                    *seen.lock().unwrap() = Some(format!("{r:?}"));
                }))
            }
            _ => None,
        }),
    };
    let slow = journaled_with_lease(&config, store.clone(), Arc::new(hooked), lease).await;
    let (h, w) = tokio::join!(
        rankd::store::rebuild::rebuild(&slow, store.as_ref(), &hung),
        rankd::store::rebuild::rebuild(&slow, store.as_ref(), &working),
    );
    assert_eq!(
        taken.lock().unwrap().as_deref(),
        Some("Ok(true)"),
        "the other instance took the hung rebuild over"
    );
    assert!(h.is_err(), "the hung rebuild lost its hold: {h:?}");
    assert!(matches!(w, Ok(true)), "the working rebuild finished: {w:?}");
}

/// Two instances take over one abandoned rebuild at once. The one that removes the board's
/// definition first rebuilds it; the other's discard stops there rather than remove what the first
/// rebuilt, with a write answered since that only the Redis log held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_takeovers_of_one_abandoned_rebuild_leave_the_winners_board_alone() {
    let Leased {
        mut redis,
        db: _db,
        config,
        store,
        lease,
        other,
    } = leased().await;
    let b = BoardId::parse("taken").unwrap();
    other.put_board(&b, BoardDef::default()).await.unwrap();
    for (i, member) in ["a", "b"].into_iter().enumerate() {
        other
            .submit(&Submit::new(b.clone(), m(member), score(i as f64 + 1.0)))
            .await
            .unwrap();
    }
    redis.kill();
    redis.restart().await;
    // A rebuild that claims the board, then never sends its first pipeline.
    let hang = Hooked {
        inner: plain(&redis).await,
        hook: Box::new(|sending| match sending {
            Sending::Many(_) => Some(Box::pin(std::future::pending())),
            Sending::One(_) => None,
        }),
    };
    let abandoned = journaled_with_lease(&config, store.clone(), Arc::new(hang), lease).await;
    let task = tokio::spawn({
        let (store, b) = (store.clone(), b.clone());
        async move { rankd::store::rebuild::rebuild(&abandoned, store.as_ref(), &b).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        other.redis_state(&b).await.unwrap(),
        rankd::engine::RedisState::Rebuilding(_)
    ) {
        assert!(
            Instant::now() < deadline,
            "the rebuild never claimed the board"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    // Just before this instance's discard: the other instance takes the board over and rebuilds
    // it, and a third answers a write only the Redis log holds.
    let dropping = Arc::new(
        rankd::serve::connect(&config, Arc::new(SystemClock))
            .await
            .unwrap()
            .with_journal(Arc::new(Dropping)),
    );
    let outcome = Arc::new(std::sync::Mutex::new(None));
    let (winner, held, board, seen) = (other.clone(), store.clone(), b.clone(), outcome.clone());
    let fired = std::sync::atomic::AtomicBool::new(false);
    let hooked = Hooked {
        inner: plain(&redis).await,
        hook: Box::new(move |sending| match sending {
            Sending::Many(calls)
                if calls
                    .first()
                    .is_some_and(|c| c.script.name() == rankd::engine::scripts::DISCARD.name())
                    && !fired.swap(true, std::sync::atomic::Ordering::Relaxed) =>
            {
                let (winner, held, board, seen, writer) = (
                    winner.clone(),
                    held.clone(),
                    board.clone(),
                    seen.clone(),
                    dropping.clone(),
                );
                Some(Box::pin(async move {
                    let r = rankd::store::rebuild::rebuild(&winner, held.as_ref(), &board).await;
                    let w = writer
                        .submit(&Submit::new(board, m("late"), score(9.0)))
                        .await;
                    *seen.lock().unwrap() = Some((format!("{r:?}"), w.is_ok()));
                }))
            }
            _ => None,
        }),
    };
    let loser = journaled_with_lease(&config, store.clone(), Arc::new(hooked), lease).await;
    let r = rankd::store::rebuild::rebuild(&loser, store.as_ref(), &b).await;
    let (won, written) = outcome.lock().unwrap().clone().expect("the hook ran");
    assert_eq!(
        won, "Ok(true)",
        "the other instance took the board over first"
    );
    assert!(written, "the late write was answered");
    assert!(
        matches!(r, Ok(false)),
        "the second takeover stood down: {r:?}"
    );
    let all = View::all_time();
    let top = until_ready(|| other.top(&b, &all, Limit::new(10).unwrap())).await;
    let members = ranked(&top);
    assert_eq!(members, ["late", "b", "a"]);
}

/// A test database beside `redis`, a configuration naming both, and the store, migrated.
async fn durable_on(redis: &PrivateRedis) -> (TestDb, Config, Arc<rankd::store::PgStore>) {
    let db = TestDb::create().await;
    let config = Config {
        redis_url: Some(redis.url()),
        database_url: Some(db.url()),
        key_prefix: prefix(),
        ..Config::default()
    };
    let store = Arc::new(rankd::store::PgStore::connect(&db.url()).await.unwrap());
    store.migrate().await.unwrap();
    (db, config, store)
}

/// An engine on `config`'s Redis with a journal on `store`, as `rankd serve` builds it but without
/// the background sweep and checks, over `exec` (a plain Redis executor when none).
async fn journaled(
    config: &Config,
    store: Arc<rankd::store::PgStore>,
    clock: Arc<dyn rankd::engine::Clock>,
    exec: Option<Arc<dyn rankd::backend::Executor>>,
) -> Arc<Engine> {
    let engine = match exec {
        Some(exec) => Engine::new(
            exec,
            rankd::keys::Keys::new(&config.key_prefix).unwrap(),
            clock,
            rankd::engine::EngineConfig::default(),
        )
        .await
        .unwrap(),
        None => rankd::serve::connect(config, clock).await.unwrap(),
    };
    with_persister(engine, store)
}

/// `engine` with a sync-mode journal on `store`, and no background sweep or checks.
fn with_persister(engine: Engine, store: Arc<rankd::store::PgStore>) -> Arc<Engine> {
    let persister = rankd::store::Persister::start(
        store,
        Durability::Sync,
        tokio_util::sync::CancellationToken::new(),
    );
    let e = Arc::new(engine.with_journal(persister.journal()));
    persister.attach(&e);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_taken_over_after_its_lease_leaves_the_new_holders_board_alone() {
    let mut redis = PrivateRedis::start().await;
    let (_db, config, store) = durable_on(&redis).await;
    let b = BoardId::parse("leased").unwrap();
    let other = journaled(&config, store.clone(), Arc::new(SystemClock), None).await;
    other.put_board(&b, BoardDef::default()).await.unwrap();
    for (i, member) in ["a", "b", "c"].into_iter().enumerate() {
        other
            .submit(&Submit::new(b.clone(), m(member), score(i as f64 + 1.0)))
            .await
            .unwrap();
    }
    redis.kill();
    redis.restart().await;
    // This instance's clock is two minutes behind: its rebuild's lease looks expired at once to
    // the other, which takes the board over during this one's replay.
    let behind = rankd::engine::ManualClock::new(chrono::Utc::now().timestamp_millis() - 120_000);
    // Before its first pipeline, the other instance takes the board over and rebuilds it whole.
    let (rebuilder, held, board) = (other.clone(), store.clone(), b.clone());
    let done = std::sync::atomic::AtomicBool::new(false);
    let exec = Hooked::on(
        &redis.url(),
        Box::new(move |sending| match sending {
            Sending::Many(_) if !done.swap(true, std::sync::atomic::Ordering::Relaxed) => {
                let (rebuilder, held, board) = (rebuilder.clone(), held.clone(), board.clone());
                Some(Box::pin(async move {
                    let rebuilt = rankd::store::rebuild::rebuild(&rebuilder, held.as_ref(), &board)
                        .await
                        .unwrap();
                    assert!(rebuilt, "the other instance takes the expired lease over");
                }))
            }
            _ => None,
        }),
    )
    .await;
    let slow = journaled(
        &config,
        store.clone(),
        Arc::new(behind),
        Some(Arc::new(exec)),
    )
    .await;
    let r = rankd::store::rebuild::rebuild(&slow, store.as_ref(), &b).await;
    assert!(r.is_err(), "its token is gone, so its replay fails: {r:?}");
    // The other's rebuild stands: the failed one did not discard it on its way out.
    let top = other
        .top(&b, &View::all_time(), Limit::new(10).unwrap())
        .await
        .unwrap();
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

/// The checks that run every few seconds read each board's last stored number by one descent of
/// the primary key, not by a scan of every stored operation: with a million operations stored they
/// answer well within a statement timeout of 100 ms (the scan took about half a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_the_stored_boards_costs_the_same_at_any_history_size() {
    let db = TestDb::create().await;
    let store = rankd::store::PgStore::connect(&db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let pool = db.pool().await;
    for sql in [
        "INSERT INTO rankd_boards (board, definition, version) VALUES ('old', '{}', 'v1'), ('new', '{}', 'v2')",
        "INSERT INTO rankd_ops (board, seq, op, recv_ms, member, value, at_ms, scopes)
         SELECT 'old', g, 'e', g, 'm' || (g % 1000), 1, g, '{}' FROM generate_series(1, 1000000) AS g",
        "INSERT INTO rankd_ops (board, seq, op, recv_ms, member, value, at_ms, scopes) VALUES ('new', 1, 'e', 1, 'a', 1, 1, '{}')",
        "VACUUM ANALYZE rankd_ops",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{}\" SET statement_timeout = '100ms'",
        db.name
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    // New connections take the timeout.
    let store = rankd::store::PgStore::connect(&db.url()).await.unwrap();
    for _ in 0..3 {
        let boards = store.boards().await.unwrap();
        let got: Vec<(String, u64)> = boards
            .into_iter()
            .map(|(b, s)| (b.as_str().to_owned(), s))
            .collect();
        assert_eq!(got, vec![("new".into(), 1), ("old".into(), 1_000_000)]);
    }
    drop(store);
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
        matches!(got, Err(Error::Unavailable(_))),
        "its operations are stored: 503, not 404: {got:?}"
    );
    let got = rankd::store::rebuild::rebuild(&e, store.as_ref(), &cut).await;
    assert!(
        matches!(&got, Err(Error::Unavailable(m)) if m.contains("start of board cut")),
        "{got:?}"
    );
    assert!(matches!(
        e.standing(&cut, &View::all_time(), &m("u15")).await,
        Err(Error::Unavailable(_))
    ));
}

/// SQLite tells the operations it already holds from new ones whether the numbers offered lie
/// close together (one range look-up) or far apart (looked up by number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stores_new_operations_beside_ones_offered_again_near_and_far() {
    use rankd::engine::{LoggedOp, Op};
    use rankd::store::Store;
    let dir = ScratchDir::new("again");
    let store = rankd::store::SqliteStore::open(dir.path()).await.unwrap();
    store.migrate().await.unwrap();
    let b = BoardId::parse("again").unwrap();
    let op = |seq: u64| LoggedOp {
        board: b.clone(),
        seq,
        recv_ms: seq as i64,
        op: Op::Event {
            member: format!("m{seq}"),
            value: 1.0,
            event_id: None,
            at_ms: 1,
            scopes: vec![],
        },
    };
    let first: Vec<LoggedOp> = (1..=10).map(op).collect();
    store.insert_ops(&first).await.unwrap();
    // Near: 8..=12 (three held, two new). Far: 5 and 20,000 (one held, one new).
    store
        .insert_ops(&(8..=12).map(op).collect::<Vec<_>>())
        .await
        .unwrap();
    store.insert_ops(&[op(5), op(20_000)]).await.unwrap();
    let seqs: Vec<u64> = store.ops(&b).await.unwrap().iter().map(|o| o.seq).collect();
    let mut want: Vec<u64> = (1..=12).collect();
    want.push(20_000);
    assert_eq!(seqs, want);
    assert!(
        !store.diverged(&b).await.unwrap(),
        "nothing was taken for another operation"
    );
}
