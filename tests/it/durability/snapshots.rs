//! Snapshots: a base for exact rebuilds only when read at one point and equal to what the log implies.

use std::collections::HashMap;
use std::sync::Arc;

use rankd::board::{BoardDef, BoardId, Display, EventId, Policy, RankMode, TieBreak};
use rankd::config::Config;
use rankd::engine::{Durability, Limit, Submit, SystemClock, View};
use rankd::window::Window;
use rankd::{Engine, Error};

use super::{durable_on, engine, everything, exact, journaled, redis_cli, until_ready};
use crate::cleanup::{Keyspace, ScratchDir};
use crate::helpers::{m, prefix, scope, score, Hooked, Redis, Sending};
use crate::private::{PrivateRedis, TestDb};

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

/// A private Redis and a test database, a sync engine on both, and the store opened beside it.
async fn on_postgres() -> (PrivateRedis, TestDb, Arc<Engine>, rankd::store::PgStore) {
    let redis = PrivateRedis::start().await;
    let db = TestDb::create().await;
    let e = engine(&redis, &db, Durability::Sync).await;
    let store = rankd::store::PgStore::connect(&db.url()).await.unwrap();
    (redis, db, e, store)
}

const TERMLY_VIEWS: [fn() -> View; 4] = [
    View::all_time,
    || View::all_time().scoped(scope("class:1")),
    || View::current(Window::Weekly),
    || View::current(Window::Daily),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_the_latest_snapshot_and_the_operations_after_it_is_exact() {
    let (mut redis, _db, e, store) = on_postgres().await;
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
    let (mut redis, _db, e, store) = on_postgres().await;
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

/// An embedded engine keeping its SQLite store in `dir` (`config` otherwise), the configuration it
/// started with (to start another on the same directory), and the store opened beside it.
async fn embedded_in(
    dir: &ScratchDir,
    config: Config,
) -> (Config, Arc<Engine>, rankd::store::SqliteStore) {
    let config = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config
    };
    let e = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .expect("embedded engine starts");
    let store = rankd::store::SqliteStore::open(dir.path()).await.unwrap();
    (config, e, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_restart_starts_from_the_latest_sqlite_snapshot_exactly() {
    let dir = ScratchDir::new("sqlite-restore");
    let (config, first, store) = embedded_in(&dir, Config::default()).await;
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

/// `n` events with ids `{tag}{i}` over 700 members, a third of them in a scope.
fn paged_events(b: &BoardId, tag: &str, n: u32) -> Vec<Submit> {
    (0..n)
        .map(|i| {
            let mut ev = Submit::new(
                b.clone(),
                m(&format!("p{}", i % 700)),
                score(f64::from(i % 13) + 0.5),
            );
            if i.is_multiple_of(3) {
                ev.scopes = vec![scope("class:2")];
            }
            ev.event_id = Some(EventId::parse(&format!("{tag}{i}")).unwrap());
            ev
        })
        .collect()
}

/// The sequence numbers of every page `pages` hands out, each page no longer than a store page.
async fn page_seqs(mut pages: rankd::engine::OpPages) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut count = 0;
    while let Some(page) = pages.next_page().await.unwrap() {
        assert!(
            page.len() <= rankd::store::OP_PAGE,
            "a page of {} operations",
            page.len()
        );
        count += 1;
        seqs.extend(page.iter().map(|o| o.seq));
    }
    assert!(count > 1, "the log spans several pages");
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_reads_the_log_a_page_at_a_time_and_is_exact_across_pages() {
    let (mut redis, _db, e, store) = on_postgres().await;
    let b = BoardId::parse("paged").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    // Before the snapshot, three pages of events with ids; display data on the first page, its
    // member removed on the second and shown again on the third.
    e.put_display(&b, &m("p1"), shown("One")).await.unwrap();
    e.put_display(&b, &m("p2"), shown("Two")).await.unwrap();
    let before = paged_events(&b, "a", 12_000);
    e.submit_batch(&before[..6_000]).await.unwrap();
    e.remove_member(&b, &m("p1")).await.unwrap();
    e.remove_member(&b, &m("p2")).await.unwrap();
    e.submit_batch(&before[6_000..]).await.unwrap();
    e.put_display(&b, &m("p2"), shown("Two again"))
        .await
        .unwrap();
    rankd::store::snapshot::snapshot(&e, &store, Some(&b))
        .await
        .unwrap();
    // After it, two pages and more of the log a rebuild replays.
    let tail = paged_events(&b, "b", 11_000);
    for part in tail.chunks(rankd::engine::MAX_BATCH) {
        e.submit_batch(part).await.unwrap();
    }
    e.put_display(&b, &m("p3"), shown("Three")).await.unwrap();

    let seq = stored_seq(&store, &b).await;
    let all: Vec<u64> = (1..=seq).collect();
    assert_eq!(page_seqs(store.op_pages(&b, 0, seq)).await, all);
    let base = store
        .restore_base(&b, seq, 0)
        .await
        .unwrap()
        .expect("the snapshot is a base");
    assert_eq!(
        page_seqs(store.op_pages(&b, base.seq, seq)).await,
        (base.seq + 1..=seq).collect::<Vec<_>>()
    );
    // Every event with an id and every display operation before the base, and nothing else.
    assert_eq!(page_seqs(base.before).await.len(), 12_000 + 3);
    assert_eq!(base.removed.len(), 2);

    let views = [View::all_time(), View::all_time().scoped(scope("class:2"))];
    let shown_before = everything(&e, &b, &views).await.unwrap();
    let exact_before = exact(&e, &b).await;
    redis.kill();
    redis.restart().await;
    assert_eq!(
        until_ready(|| everything(&e, &b, &views)).await,
        shown_before
    );
    assert_eq!(exact(&e, &b).await, exact_before);
    // Ids from the first and last page of each side are still duplicates.
    for ev in [&before[0], &before[11_999], &tail[0], &tail[10_999]] {
        assert!(e.submit(ev).await.unwrap().duplicate, "{:?}", ev.event_id);
    }
    let names: HashMap<String, Option<String>> = e
        .lookup(&b, &View::all_time(), &[m("p1"), m("p2"), m("p3")])
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|x| (x.member.clone(), x.display_name.clone()))
        .collect();
    assert_eq!(names["p1"], None, "its name went with its removal");
    assert_eq!(names["p2"].as_deref(), Some("Two again"));
    assert_eq!(names["p3"].as_deref(), Some("Three"));
}

/// The snapshot interval counts from the store's latest snapshot, not from the process's start: a
/// server restarted more often than the interval still takes its snapshots (else every start
/// replays all that was written since the last one, more at each restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_takes_a_snapshot_at_once_when_the_latest_is_older_than_the_interval() {
    let dir = ScratchDir::new("sqlite-snapshot-due");
    let every_minute = Config {
        snapshot_interval: std::time::Duration::from_secs(60),
        ..Config::default()
    };
    let (config, first, store) = embedded_in(&dir, every_minute).await;
    let b = BoardId::parse("due").unwrap();
    first.put_board(&b, BoardDef::default()).await.unwrap();
    first
        .submit(&Submit::new(b.clone(), m("a"), score(1.0)))
        .await
        .unwrap();
    rankd::store::snapshot::snapshot(&first, &store, Some(&b))
        .await
        .unwrap();
    drop(first);
    let age = || async {
        rankd::store::Store::last_snapshot_age_secs(&store)
            .await
            .unwrap()
            .unwrap()
    };
    // Taken a minute and a half ago, as far as the store knows: the next one is due.
    let db = dir.path().join(rankd::store::sqlite::FILE);
    let pool = sqlx::sqlite::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE rankd_snapshots SET taken_at = taken_at - 90")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(age().await >= 90);

    let _second = rankd::serve::build_engine(&config, Arc::new(SystemClock))
        .await
        .expect("embedded engine starts again");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while age().await >= 90 {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot within 15 s of a start a minute and a half after the last"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A snapshot of `b` taken while a writer never lets it rest: it is still a rebuild base (read in one
/// atomic call once the chunked reads keep meeting writes). Asserts that writes landed during the
/// snapshot, and that it became a base.
async fn a_busy_board_gets_a_base(e: Arc<Engine>, store: &dyn rankd::store::Store) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let b = BoardId::parse("busy").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    let seed: Vec<Submit> = (0..2_000u32)
        .map(|i| {
            let mut ev = Submit::new(b.clone(), m(&format!("m{i}")), score(f64::from(i % 97)));
            ev.scopes = vec![scope(&format!("c{}", i % 10))];
            ev
        })
        .collect();
    e.submit_batch(&seed).await.unwrap();
    let (stop, written) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let writer = tokio::spawn({
        let (e, b, stop, written) = (e.clone(), b.clone(), stop.clone(), written.clone());
        async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut ev = Submit::new(b.clone(), m(&format!("m{}", i % 2_000)), score(1.0));
                ev.scopes = vec![scope(&format!("c{}", i % 10))];
                e.submit(&ev).await.unwrap();
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }
    });
    // The writer is under way before the snapshot starts.
    while written.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before = written.load(Ordering::Relaxed);
    let report = rankd::store::snapshot::snapshot(&e, store, Some(&b))
        .await
        .unwrap();
    let during = written.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(during > 0, "the board changed during the snapshot");
    assert_eq!(report.keys, 11, "{report:?}");
    assert_eq!(
        report.bases, 1,
        "a busy board's snapshot is a base: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_under_steady_writes_still_gets_a_rebuild_base_in_sqlite() {
    let dir = ScratchDir::new("sqlite-busy-base");
    let (_, e, store) = embedded_in(&dir, Config::default()).await;
    a_busy_board_gets_a_base(e, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_under_steady_writes_still_gets_a_rebuild_base_in_postgres() {
    let (_redis, _db, e, store) = on_postgres().await;
    a_busy_board_gets_a_base(e, &store).await;
}
