//! Rebuild leases: a rebuild that works keeps its board, one that hangs or falls behind its lease is
//! taken over, and a takeover leaves the new holder's board alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::board::{BoardDef, BoardId, Display};
use rankd::config::Config;
use rankd::engine::{Limit, Submit, SystemClock, View};
use rankd::Engine;

use super::{durable_on, journaled, ranked, reconnected, until_ready, with_persister, Dropping};
use crate::helpers::{m, score, Hooked, Sending};
use crate::private::{PrivateRedis, TestDb};

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
    reconnected(&other).await;
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
    reconnected(&other).await;
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
    reconnected(&other).await;
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
    // The other instance's connection comes back from the restart in its own time.
    while !matches!(
        other.redis_state(&b).await,
        Ok(rankd::engine::RedisState::Rebuilding(_))
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
    reconnected(&other).await;
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
