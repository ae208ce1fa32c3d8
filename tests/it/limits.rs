//! Bounds on what one writer can make a board hold, and on the work of one script call over a big
//! board: `max_scopes`, member removal and board deletion in chunks, a lowered `max_members`
//! trimmed in slices.

use rankd::board::{BoardDef, BoardId};
use rankd::engine::Submit;
use rankd::error::Error;
use rankd::window::Window;

use crate::helpers::{m, scope, score, Ctx};
use crate::on_both;

fn scoped(b: &BoardId, member: &str, scopes: &[&str]) -> Submit {
    Submit {
        scopes: scopes.iter().map(|s| scope(s)).collect(),
        ..Submit::new(b.clone(), m(member), score(1.0))
    }
}

/// Asserts a refusal of `field` that names the limit.
fn refused_scopes(r: Result<impl std::fmt::Debug, Error>, field: &str, limit: u32) {
    match r {
        Err(Error::Invalid(inv)) => {
            assert_eq!(inv.field, field, "{inv}");
            assert!(
                inv.message.contains(&format!("at most {limit} scopes"))
                    && inv.message.contains("max_scopes"),
                "{inv}"
            );
        }
        other => panic!("expected a refusal of {field}, got {other:?}"),
    }
}

async fn a_scope_beyond_max_scopes_is_refused_and_known_ones_stay_open(t: &Ctx) {
    let def = BoardDef {
        max_scopes: 3,
        ..BoardDef::default()
    };
    let b = t.board("capped", def).await;
    t.engine
        .submit(&scoped(&b, "a", &["s1", "s2"]))
        .await
        .unwrap();
    t.engine.submit(&scoped(&b, "b", &["s3"])).await.unwrap();
    // A fourth scope: refused, and nothing of the event written (not even its global key).
    refused_scopes(
        t.engine.submit(&scoped(&b, "c", &["s1", "s4"])).await,
        "scopes",
        3,
    );
    assert!(matches!(
        t.engine
            .standing(&b, &rankd::engine::View::all_time(), &m("c"))
            .await,
        Err(Error::MemberNotFound { .. })
    ));
    // Known scopes take any number of writes.
    for i in 0..5 {
        t.engine
            .submit(&scoped(&b, &format!("m{i}"), &["s3", "s2", "s1"]))
            .await
            .unwrap();
    }
    // A batch naming a new scope is refused as a whole, the event named by its index.
    let batch = vec![
        scoped(&b, "d", &["s1"]),
        Submit::new(b.clone(), m("e"), score(2.0)),
        scoped(&b, "f", &["s2", "s5"]),
    ];
    match t.engine.submit_batch(&batch).await {
        Err(Error::InvalidBatch(list)) => {
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!(list[0].0, 2);
            assert_eq!(list[0].1.field, "scopes");
            assert!(list[0].1.message.contains("at most 3 scopes"), "{list:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(t
        .engine
        .standing(&b, &rankd::engine::View::all_time(), &m("e"))
        .await
        .is_err());
    // Raising the limit opens the board to the scope.
    let raised = BoardDef {
        max_scopes: 4,
        ..BoardDef::default()
    };
    assert!(!t.engine.put_board(&b, raised).await.unwrap());
    t.engine.submit(&scoped(&b, "c", &["s4"])).await.unwrap();
    refused_scopes(
        t.engine.submit(&scoped(&b, "c", &["s5"])).await,
        "scopes",
        4,
    );
}

/// A batch of several calls (chunks of 500 events) is checked as a whole before any call writes:
/// the scopes of its first chunk leave no room for the new scope of its last.
async fn a_batch_of_several_calls_is_refused_before_any_call_writes(t: &Ctx) {
    let def = BoardDef {
        max_scopes: 2,
        ..BoardDef::default()
    };
    let b = t.board("chunky", def).await;
    let mut batch: Vec<Submit> = (0..1200)
        .map(|i| scoped(&b, &format!("u{i}"), &[["x", "y"][i % 2]]))
        .collect();
    batch.push(scoped(&b, "late", &["z"]));
    match t.engine.submit_batch(&batch).await {
        Err(Error::InvalidBatch(list)) => {
            assert_eq!(list.len(), 1, "{list:?}");
            assert_eq!(list[0].0, 1200);
            assert_eq!(list[0].1.field, "scopes");
        }
        other => panic!("{other:?}"),
    }
    let page = t
        .engine
        .top(
            &b,
            &rankd::engine::View::all_time(),
            rankd::engine::Limit::new(10).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(page.total, 0, "nothing of the batch is written");
}

/// Two instances writing new scopes at once never keep more than the limit between them: the
/// count is taken inside the write's own script call.
async fn two_instances_together_stay_within_max_scopes(t: &Ctx) {
    let def = BoardDef {
        max_scopes: 5,
        ..BoardDef::default()
    };
    let b = t.board("racing", def).await;
    let twin = t.twin().await;
    let writes = (0..40).map(|i| {
        let engine = if i % 2 == 0 { &t.engine } else { &twin.engine };
        let ev = scoped(&b, &format!("u{i}"), &[&format!("s{i}")]);
        async move { engine.submit(&ev).await }
    });
    let results = futures::future::join_all(writes).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 5, "{results:?}");
    for r in results.into_iter().filter(|r| r.is_err()) {
        refused_scopes(r, "scopes", 5);
    }
}

/// A scope whose keys have all expired stops counting: a board of daily periods keeps the scopes of
/// its live periods only.
async fn a_scope_stops_counting_once_its_keys_expire(t: &Ctx) {
    let def = BoardDef {
        max_scopes: 2,
        windows: vec![Window::Daily],
        retention_periods: 0,
        ..BoardDef::default()
    };
    let b = t.board("daily", def).await;
    t.engine
        .submit(&scoped(&b, "a", &["p", "q"]))
        .await
        .unwrap();
    refused_scopes(t.engine.submit(&scoped(&b, "a", &["r"])).await, "scopes", 2);
    // Two days later the day's keys have expired (by the board's clock): room for two new scopes.
    t.clock.advance(2 * 86_400_000);
    t.engine
        .submit(&scoped(&b, "a", &["r", "s"]))
        .await
        .unwrap();
    refused_scopes(t.engine.submit(&scoped(&b, "a", &["p"])).await, "scopes", 2);
}

on_both!(
    a_scope_beyond_max_scopes_is_refused_and_known_ones_stay_open,
    a_batch_of_several_calls_is_refused_before_any_call_writes,
    two_instances_together_stay_within_max_scopes,
    a_scope_stops_counting_once_its_keys_expire,
);

#[tokio::test]
async fn the_embedded_engine_counts_scopes_as_redis_does() {
    let t = Ctx::embedded().await;
    a_scope_beyond_max_scopes_is_refused_and_known_ones_stay_open(&t).await;
    a_scope_stops_counting_once_its_keys_expire(&t).await;
}

/// Every script call an engine made: its script's name and how many keys it named.
type Calls = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, usize)>>>;

/// What runs before the n-th call (counted from 1) of one script, once.
struct Before {
    script: &'static str,
    nth: usize,
    work: std::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

/// An engine on `redis` under `prefix` whose every call is recorded in `calls`, and which first runs
/// `before`'s work, if any, when its call comes.
async fn recorded(
    redis: crate::helpers::Redis,
    prefix: &str,
    calls: Calls,
    before: Option<std::sync::Arc<Before>>,
) -> rankd::Engine {
    use crate::helpers::{Hooked, Sending};
    let hook: crate::helpers::Hook = Box::new(move |sending| {
        let mut seen = calls.lock().unwrap();
        let list: Vec<&rankd::backend::Call> = match sending {
            Sending::One(c) => vec![c],
            Sending::Many(cs) => cs.iter().collect(),
        };
        let mut run = None;
        for c in list {
            seen.push((c.script.name(), c.keys.len()));
            if let Some(b) = &before {
                let n = seen.iter().filter(|(s, _)| *s == b.script).count();
                if c.script.name() == b.script && n == b.nth {
                    run = b.work.lock().unwrap().take();
                }
            }
        }
        run
    });
    let exec = Hooked::on(&redis.url(), hook).await;
    rankd::Engine::new(
        std::sync::Arc::new(exec),
        rankd::keys::Keys::new(prefix).unwrap(),
        std::sync::Arc::new(rankd::engine::SystemClock),
        rankd::engine::EngineConfig::default(),
    )
    .await
    .unwrap()
}

/// The calls of `script` in `calls`: how many, and the most keys one of them named.
fn calls_of(calls: &Calls, script: &str) -> (usize, usize) {
    let seen = calls.lock().unwrap();
    let of: Vec<usize> = seen
        .iter()
        .filter(|(s, _)| *s == script)
        .map(|(_, k)| *k)
        .collect();
    (of.len(), of.into_iter().max().unwrap_or(0))
}

/// A board of 20,001 leaderboard keys: member `x` in the global key and in 20,000 scopes
/// (2,500 events of 8 new scopes each), member `y` in a few of them.
async fn twenty_thousand_keys(engine: &rankd::Engine, b: &BoardId) {
    let def = BoardDef {
        max_scopes: 25_000,
        ..BoardDef::default()
    };
    assert!(engine.put_board(b, def).await.unwrap());
    let mut events: Vec<Submit> = (0..2500)
        .map(|i| {
            let names: Vec<String> = (0..8).map(|j| format!("s{}", i * 8 + j)).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            scoped(b, "x", &names)
        })
        .collect();
    events.push(scoped(b, "y", &["s9998", "s0"]));
    engine.submit_batch(&events).await.unwrap();
}

fn view(s: Option<&str>) -> rankd::engine::View {
    let v = rankd::engine::View::all_time();
    match s {
        Some(s) => v.scoped(scope(s)),
        None => v,
    }
}

/// Member removal over 20,001 keys goes in calls of at most 500 keys, and a write of the member
/// that lands between two of them, on a key already gone through and on a new key, is removed too
/// before the removal answers: the member is absent from every key in the end, and a member written
/// meanwhile on the same keys stays.
async fn a_member_removal_goes_in_bounded_calls_and_misses_no_write_between_them(t: &Ctx) {
    let b = BoardId::parse("wide").unwrap();
    twenty_thousand_keys(&t.engine, &b).await;
    let calls: Calls = Default::default();
    let twin = std::sync::Arc::new(t.twin().await);
    let writer = twin.clone();
    let board = b.clone();
    // The first chunk went through the keys latest in the index's order ("s9999" and the 500
    // before it): by the tenth call they are behind the walk.
    let between = async move {
        let e = &writer.engine;
        e.submit(&scoped(&board, "x", &["s9999", "fresh"]))
            .await
            .unwrap();
        e.submit(&scoped(&board, "y", &["s9999"])).await.unwrap();
    };
    let before = std::sync::Arc::new(Before {
        script: "remove_member",
        nth: 10,
        work: std::sync::Mutex::new(Some(Box::pin(between))),
    });
    let engine = recorded(t.redis, &t.prefix, calls.clone(), Some(before.clone())).await;
    let removed = engine.remove_member(&b, &m("x")).await.unwrap();
    let (n, widest) = calls_of(&calls, "remove_member");
    // The definition, index and removal hash, 500 leaderboards, and the cache hash.
    assert!(widest <= 3 + 500 + 1, "a call named {widest} keys");
    assert!(n >= 20_001 / 500, "{n} calls");
    assert!(before.work.lock().unwrap().is_none(), "the write went in");
    assert!(removed >= 20_001, "{removed}");
    for s in [
        None,
        Some("s9999"),
        Some("fresh"),
        Some("s0"),
        Some("s12345"),
    ] {
        assert!(
            matches!(
                t.engine.standing(&b, &view(s), &m("x")).await,
                Err(Error::MemberNotFound { .. })
            ),
            "x is still in {s:?}"
        );
    }
    for s in ["s9999", "s9998", "s0"] {
        t.engine
            .standing(&b, &view(Some(s)), &m("y"))
            .await
            .unwrap();
    }
}

/// Deleting a board of 20,001 keys goes in calls of at most 500 leaderboards (1,500 keys on a
/// dense board), and a board defined again while the deletion runs starts empty: its definition
/// ends the deletion first.
async fn a_board_deletion_goes_in_bounded_calls_and_a_new_board_sees_nothing_old(t: &Ctx) {
    let b = BoardId::parse("doomed").unwrap();
    twenty_thousand_keys(&t.engine, &b).await;
    let calls: Calls = Default::default();
    let twin = std::sync::Arc::new(t.twin().await);
    let again = twin.clone();
    let board = b.clone();
    let between = async move {
        let e = &again.engine;
        assert!(e.put_board(&board, BoardDef::default()).await.unwrap());
        e.submit(&scoped(&board, "new", &["s1"])).await.unwrap();
    };
    let before = std::sync::Arc::new(Before {
        script: "delete_board",
        nth: 5,
        work: std::sync::Mutex::new(Some(Box::pin(between))),
    });
    let engine = recorded(t.redis, &t.prefix, calls.clone(), Some(before.clone())).await;
    engine.delete_board(&b).await.unwrap();
    let (n, widest) = calls_of(&calls, "delete_board");
    assert!(widest <= 2 + 3 * 500, "a call named {widest} keys");
    assert!(n >= 5, "{n} calls");
    assert!(
        before.work.lock().unwrap().is_none(),
        "the board was defined again"
    );
    // The board defined again holds its own write only.
    let bref = &b;
    let top = |s: Option<&str>| {
        let v = view(s);
        let e = &t.engine;
        async move {
            e.top(bref, &v, rankd::engine::Limit::new(10).unwrap())
                .await
                .unwrap()
        }
    };
    assert_eq!(top(None).await.total, 1);
    assert_eq!(top(Some("s1")).await.total, 1);
    assert_eq!(top(Some("s2")).await.total, 0);
    assert_eq!(top(Some("s9999")).await.total, 0);
    // The new board's keys, its cache hash among them (board_put records the definition's version
    // there).
    assert_eq!(
        keys_under(t.redis, &t.prefix).await,
        7,
        "the new board's keys only"
    );

    // A deletion with nothing in its way ends in calls of 500 leaderboards too, and leaves no key.
    let calls: Calls = Default::default();
    let b2 = BoardId::parse("doomed2").unwrap();
    twenty_thousand_keys(&t.engine, &b2).await;
    let engine = recorded(t.redis, &t.prefix, calls.clone(), None).await;
    engine.delete_board(&b).await.unwrap();
    engine.delete_board(&b2).await.unwrap();
    let (n, widest) = calls_of(&calls, "delete_board");
    assert!(n >= 20_001 / 500, "{n} calls");
    assert!(widest <= 2 + 3 * 500, "a call named {widest} keys");
    assert_eq!(keys_under(t.redis, &t.prefix).await, 0, "no key is left");
}

/// How many keys lie under `prefix`.
async fn keys_under(redis: crate::helpers::Redis, prefix: &str) -> usize {
    use fred::prelude::{Builder, ClientLike, Config, Key};
    use futures::TryStreamExt;
    let client = Builder::from_config(Config::from_url(&redis.url()).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let pattern = format!("{prefix}*");
    let keys: Vec<Key> = if client.is_clustered() {
        client
            .scan_cluster_buffered(pattern, Some(1000), None)
            .try_collect()
            .await
    } else {
        client
            .scan_buffered(pattern, Some(1000), None)
            .try_collect()
            .await
    }
    .unwrap();
    let _ = client.quit().await;
    keys.len()
}

/// Lowering max_members on a key of 100,000 members trims it before the change is answered, in
/// calls of at most 1,000 members; dense ranks stay right through the trim.
async fn a_lower_max_members_trims_in_bounded_calls_before_it_is_answered(t: &Ctx) {
    for dense in [false, true] {
        let def = BoardDef {
            rank_mode: if dense {
                rankd::board::RankMode::Dense
            } else {
                rankd::board::RankMode::Ordinal
            },
            ..BoardDef::default()
        };
        let b = t
            .board(if dense { "crowd-dense" } else { "crowd" }, def.clone())
            .await;
        let n = if dense { 20_000 } else { 100_000 };
        for start in (0..n).step_by(10_000) {
            let events: Vec<Submit> = (start..start + 10_000)
                .map(|i| Submit::new(b.clone(), m(&format!("u{i}")), score(f64::from(i % 5_000))))
                .collect();
            t.engine.submit_batch(&events).await.unwrap();
        }
        let calls: Calls = Default::default();
        let engine = recorded(t.redis, &t.prefix, calls.clone(), None).await;
        let lower = BoardDef {
            max_members: Some(10),
            ..def
        };
        assert!(!engine.put_board(&b, lower).await.unwrap());
        let (made, _) = calls_of(&calls, "trim");
        assert!(made as u32 >= (n - 10) / 1_000, "{made} trim calls");
        let top = t
            .engine
            .top(&b, &view(None), rankd::engine::Limit::new(20).unwrap())
            .await
            .unwrap();
        assert_eq!(top.total, 10, "trimmed before the change was answered");
        // The best 10 stay: each value 4,999 down is held by n / 5,000 members.
        let per_value = n / 5_000;
        let scores: Vec<f64> = top.entries.iter().map(|e| e.score).collect();
        let want: Vec<f64> = (0..10).map(|i| f64::from(4_999 - i / per_value)).collect();
        assert_eq!(scores, want, "{top:?}");
        let ranks: Vec<u64> = top.entries.iter().map(|e| e.rank).collect();
        if dense {
            let want: Vec<u64> = (0..10).map(|i| u64::from(1 + i / per_value)).collect();
            assert_eq!(ranks, want, "dense ranks count the values left");
            // The trimmed members' values left the distinct-value index: a newcomer far below
            // ranks just under the three values left.
            let open = BoardDef {
                rank_mode: rankd::board::RankMode::Dense,
                ..BoardDef::default()
            };
            t.engine.put_board(&b, open).await.unwrap();
            let r = t.submit(&b, "newcomer", 1.0).await;
            assert_eq!(r.results[0].rank, Some(4), "{r:?}");
        } else {
            assert_eq!(ranks, (1..=10).collect::<Vec<u64>>());
        }
    }
}

on_both!(
    a_member_removal_goes_in_bounded_calls_and_misses_no_write_between_them,
    a_board_deletion_goes_in_bounded_calls_and_a_new_board_sees_nothing_old,
    a_lower_max_members_trims_in_bounded_calls_before_it_is_answered,
);

/// Commands Redis ran since its last `CONFIG RESETSTAT`, scripts' own `redis.call`s counted and the
/// calls that ran them (EVALSHA, and INFO, CONFIG) not.
fn commands_run(port: u16) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "commandstats"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter(|l| {
            // Scripts are counted by the commands they run; what the client sends on its own
            // (health PINGs, connection set-up) is not the write's.
            ![
                "evalsha:", "eval:", "info:", "config|", "script|", "ping:", "client|", "hello:",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .filter_map(|l| {
            let calls = l.split("calls=").nth(1)?.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

fn reset_stats(port: u16) {
    let ok = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "config", "resetstat"])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The write path pays for max_scopes only where a key is new: a write whose keys the key index
/// already holds makes no command more than its keys' own work (the score read, the write and two
/// ranks each), on a private Redis whose command counts only this test moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_known_scopes_makes_no_command_for_the_scope_count() {
    let redis = crate::private::PrivateRedis::start().await;
    let exec = rankd::backend::redis::RedisExecutor::connect(
        &rankd::backend::redis::RedisConfig::new(redis.url()),
    )
    .await
    .unwrap();
    let engine = crate::helpers::engine_on(std::sync::Arc::new(exec)).await;
    let b = BoardId::parse("lean").unwrap();
    engine.put_board(&b, BoardDef::default()).await.unwrap();
    // Each measured write is a second one: its keys exist and the key index holds them.
    let mut made = Vec::new();
    for (i, scopes) in [&[][..], &["s1"][..], &["s1", "s2"][..]]
        .into_iter()
        .enumerate()
    {
        let ev = scoped(&b, &format!("u{i}"), scopes);
        engine.submit(&ev).await.unwrap();
        // The least of three repeats: a command a loaded machine's client adds on its own (a
        // retried connection check) only ever adds to a count, never takes from it.
        let mut least = u64::MAX;
        for _ in 0..3 {
            reset_stats(redis.port);
            engine.submit(&ev).await.unwrap();
            least = least.min(commands_run(redis.port));
        }
        made.push(least);
    }
    // One key more costs 4 commands, whether it is a scope's or not; nothing else.
    assert_eq!(made[1], made[0] + 4, "{made:?}");
    assert_eq!(made[2], made[1] + 4, "{made:?}");
    // A new scope: one ZSCORE, one ZCOUNT, and its entry in the scope index.
    let ev = scoped(&b, "u9", &["s3"]);
    reset_stats(redis.port);
    engine.submit(&ev).await.unwrap();
    let first = commands_run(redis.port);
    eprintln!(
        "commands per write: repeat with 0, 1, 2 scopes {made:?}; first with a new scope {first}"
    );
}

/// The embedded engine runs the same chunked removal, deletion and trim: over 600 keys (more than
/// one chunk), the member leaves every key, the board leaves nothing a new one could see, and a
/// lower max_members holds at once.
#[tokio::test]
async fn the_embedded_engine_removes_deletes_and_trims_in_chunks() {
    let t = Ctx::embedded().await;
    let b = t.board("small", BoardDef::default()).await;
    let events: Vec<Submit> = (0..75)
        .flat_map(|i| {
            let names: Vec<String> = (0..8).map(|j| format!("s{}", i * 8 + j)).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            [
                scoped(&b, "x", &names),
                scoped(&b, &format!("y{i}"), &names),
            ]
        })
        .collect();
    t.engine.submit_batch(&events).await.unwrap();
    assert_eq!(t.engine.remove_member(&b, &m("x")).await.unwrap(), 601);
    for s in [None, Some("s0"), Some("s599")] {
        assert!(matches!(
            t.engine.standing(&b, &view(s), &m("x")).await,
            Err(Error::MemberNotFound { .. })
        ));
    }
    let lower = BoardDef {
        max_members: Some(1),
        ..BoardDef::default()
    };
    t.engine.put_board(&b, lower).await.unwrap();
    let top = t
        .engine
        .top(&b, &view(None), rankd::engine::Limit::new(10).unwrap())
        .await
        .unwrap();
    assert_eq!(top.total, 1);
    t.engine.delete_board(&b).await.unwrap();
    let b = t.board("small", BoardDef::default()).await;
    let top = t
        .engine
        .top(
            &b,
            &view(Some("s0")),
            rankd::engine::Limit::new(10).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(top.total, 0);
}

/// A rebuild replays what was accepted, whatever max_scopes says now: a board's stored log from
/// before the limit may name more scopes than the default keeps (here 10,008), and the replay
/// applies them all rather than fail the rebuild.
#[tokio::test]
async fn a_replay_applies_every_accepted_scope_past_the_limit() {
    use rankd::engine::{Clock, LoggedOp, Op};
    let t = Ctx::embedded().await;
    let b = BoardId::parse("legacy").unwrap();
    let now = t.clock.now_ms();
    let mut ops = vec![LoggedOp {
        board: b.clone(),
        seq: 1,
        recv_ms: now,
        op: Op::Define {
            version: "v1".into(),
            json: r#"{"windows":["all"]}"#.into(),
        },
    }];
    for i in 0..1251u64 {
        ops.push(LoggedOp {
            board: b.clone(),
            seq: i + 2,
            recv_ms: now,
            op: Op::Event {
                member: format!("u{i}"),
                value: 1.0,
                event_id: None,
                at_ms: now,
                scopes: (0..8).map(|j| format!("s{}", i * 8 + j)).collect(),
            },
        });
    }
    assert!(t
        .engine
        .replay(&b, rankd::engine::OpPages::of(ops))
        .await
        .unwrap());
    let last = t
        .engine
        .top(
            &b,
            &view(Some("s10007")),
            rankd::engine::Limit::new(1).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(last.total, 1);
    // Live writes meet the limit again: the board keeps 10,008 scopes, past the default.
    refused_scopes(
        t.engine.submit(&scoped(&b, "v", &["new"])).await,
        "scopes",
        10_000,
    );
}

/// A board whose keys were written before the scope index existed (no index, no `sx` mark on its
/// definition) gets its scopes entered at the next start, and `max_scopes` then counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_enters_the_scopes_of_boards_written_before_the_scope_index() {
    let redis = crate::private::PrivateRedis::start().await;
    let prefix = crate::helpers::prefix();
    let config = rankd::config::Config {
        redis_url: Some(redis.url()),
        key_prefix: prefix.clone(),
        ..rankd::config::Config::default()
    };
    let first =
        rankd::serve::build_engine(&config, std::sync::Arc::new(rankd::engine::SystemClock))
            .await
            .unwrap();
    let b = BoardId::parse("older").unwrap();
    let def = BoardDef {
        max_scopes: 3,
        windows: vec![Window::All, Window::Weekly],
        ..BoardDef::default()
    };
    first.put_board(&b, def).await.unwrap();
    first.submit(&scoped(&b, "a", &["s1", "s2"])).await.unwrap();
    first.submit(&scoped(&b, "b", &["s3:x"])).await.unwrap();
    assert!(
        !first.backfill_scopes(&b).await.unwrap(),
        "a board created with the index is never walked"
    );
    // What an older rankd left: the same keys, no scope index, no mark.
    let keys = rankd::keys::Keys::new(&prefix).unwrap();
    let cli = |args: &[&str]| crate::durability::redis_cli(redis.port, args);
    cli(&["DEL", &keys.scopes(&b)]);
    cli(&["HDEL", &keys.definition(&b), "sx"]);
    drop(first);

    let second =
        rankd::serve::build_engine(&config, std::sync::Arc::new(rankd::engine::SystemClock))
            .await
            .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cli(&["HGET", &keys.definition(&b), "sx"]) != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the start never walked the board"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let scopes = cli(&["ZRANGE", &keys.scopes(&b), "0", "-1", "WITHSCORES"]);
    assert_eq!(
        scopes.lines().collect::<Vec<_>>(),
        ["s1", "inf", "s2", "inf", "s3:x", "inf"],
        "each scope, kept as long as its latest key (the all-time one, for ever)"
    );
    refused_scopes(second.submit(&scoped(&b, "c", &["s4"])).await, "scopes", 3);
    second
        .submit(&scoped(&b, "c", &["s1", "s3:x"]))
        .await
        .unwrap();
    assert!(!second.backfill_scopes(&b).await.unwrap(), "walked once");
}
