//! The stores' own contract, on Postgres and SQLite: operations offered again, numbered again by
//! Redis, committed concurrently, and listed at any history size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::board::{BoardDef, BoardId};

use crate::cleanup::ScratchDir;
use crate::helpers::prefix;
use crate::private::TestDb;

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

/// The highest number the store lists for board `b`, by both of its readings, which must agree
/// (Postgres keeps it on the board row, by triggers, after every statement that changes the log).
async fn listed(store: &dyn rankd::store::Store, b: &BoardId) -> Option<u64> {
    let one = store.board_seq(b).await.unwrap();
    let all = store
        .boards()
        .await
        .unwrap()
        .into_iter()
        .find(|(x, _)| x == b)
        .map(|(_, s)| s);
    assert_eq!(
        one, all,
        "the board alone and the list of boards agree on {b}"
    );
    one
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
    assert_eq!(listed(store, &b).await, Some(3));
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
    assert_eq!(listed(store, &b).await, Some(1), "the new life's number");
    store.tombstone(&b).await.unwrap();
    assert_eq!(
        listed(store, &b).await,
        None,
        "a deleted board is not listed"
    );
    store.purge(&b).await.unwrap();
    assert_eq!(listed(store, &b).await, None);
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
    assert_eq!(listed(store, &b).await, Some(4));
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
    assert_eq!(listed(store, &b).await, Some(4), "5 was taken back");
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
    assert_eq!(
        listed(store, &b).await,
        Some(8),
        "the merged operations count"
    );
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
    assert_eq!(listed(store, &b).await, Some(9));
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
