//! Redis lost, restarted empty under load or failed over to a replica that was behind: every
//! acknowledged write comes back, once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::board::{BoardDef, BoardId, Display, EventId, Policy, RankMode, TieBreak};
use rankd::config::Config;
use rankd::engine::{Durability, Limit, Submit, SystemClock, View};
use rankd::window::Window;
use rankd::Error;

use super::{engine, everything, exact, journaled, redis_cli, until_ready};
use crate::helpers::{m, prefix, scope, score};
use crate::private::{PrivateRedis, TestDb};

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
                        Err(Error::Unavailable(_) | Error::Rebuilding(_))
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
                    Err(
                        Error::Unavailable(_) | Error::Rebuilding(_) | Error::Unconfirmed { .. },
                    ) if Instant::now() < deadline => {
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
