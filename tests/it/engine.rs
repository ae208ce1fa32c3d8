//! The engine end to end: writes, reads, rank modes, windows, scopes, errors.

use rankd::backend::redis::{RedisConfig, RedisExecutor};
use rankd::board::{BoardDef, Display, EventId, Order, Policy, RankMode, TieBreak};
use rankd::engine::{Cursor, Limit, Offset, Radius, Submit, View};
use rankd::window::{Period, Window};
use rankd::Error;

use crate::helpers::{m, scope, score, Clock, Ctx, Hooked, Redis, Sending};
use crate::on_both;

fn ranks(page: &rankd::engine::Page) -> Vec<(u64, String, f64)> {
    page.entries
        .iter()
        .map(|e| (e.rank, e.member.clone(), e.score))
        .collect()
}

on_both!(
    incr_updates_global_and_scoped_keys_of_every_window_in_one_call,
    rank_modes_number_equal_scores_as_documented,
    best_and_set_policies_follow_the_board_order,
    first_tie_break_ranks_whoever_reached_the_score_first,
    around_me_keeps_rank_one_and_fills_to_two_radius_plus_one,
    cursor_pages_never_skip_or_repeat_members_whose_scores_hold,
    lookup_reports_ranks_in_order_and_the_missing_members,
    score_ranges_are_ranked_consistently_with_pages,
    event_ids_make_submits_idempotent,
    an_event_id_reused_for_another_event_is_refused_and_writes_nothing,
    batches_apply_in_order_across_boards_and_count_duplicates,
    a_chunk_wider_than_one_multi_member_call_applies_every_event,
    invalid_batches_write_nothing_and_name_every_bad_event,
    max_members_trims_the_worst_inside_the_script,
    remove_member_clears_every_key_and_display_data,
    delete_board_removes_every_key_and_the_definition,
    updates_refuse_unsafe_changes_and_reach_other_instances,
    a_refusal_by_another_instances_older_definition_is_judged_again,
    periods_expire_and_old_events_are_rejected,
    keys_outlive_their_write_when_rankd_runs_behind_redis,
    bad_input_names_the_field_and_the_limit,
    standing_reports_percentile_and_display_data,
    concurrent_standings_share_script_calls_and_each_gets_its_own,
    concurrent_identical_page_reads_share_script_calls,
    a_shared_call_answers_each_event_as_a_serial_replay,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_call_on_the_embedded_engine_answers_each_event_as_a_serial_replay() {
    let ctx = Ctx::embedded().await;
    a_shared_call_answers_each_event_as_a_serial_replay(&ctx).await;
}

async fn incr_updates_global_and_scoped_keys_of_every_window_in_one_call(t: &Ctx) {
    let b = t
        .board(
            "xp",
            BoardDef {
                windows: vec![Window::All, Window::Weekly],
                ..BoardDef::default()
            },
        )
        .await;
    let mut ev = Submit::new(b.clone(), m("u42"), score(10.0));
    ev.scopes = vec![scope("class:42")];
    let r = t.engine.submit(&ev).await.unwrap();
    assert!(!r.duplicate);
    assert_eq!(r.results.len(), 4, "{r:?}");
    let week = Period::containing(Window::Weekly, t.clock.now_ms())
        .unwrap()
        .id();
    let shapes: Vec<_> = r
        .results
        .iter()
        .map(|k| {
            (
                k.window,
                k.period.clone(),
                k.scope.as_ref().map(|s| s.to_string()),
                k.score,
                k.rank,
                k.previous_rank,
            )
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            (Window::All, None, None, Some(10.0), Some(1), None),
            (
                Window::All,
                None,
                Some("class:42".into()),
                Some(10.0),
                Some(1),
                None
            ),
            (
                Window::Weekly,
                Some(week.clone()),
                None,
                Some(10.0),
                Some(1),
                None
            ),
            (
                Window::Weekly,
                Some(week),
                Some("class:42".into()),
                Some(10.0),
                Some(1),
                None
            ),
        ]
    );
    t.submit(&b, "u7", 25.0).await;
    let r = t.engine.submit(&ev).await.unwrap();
    assert_eq!(r.results[0].score, Some(20.0));
    assert_eq!(r.results[0].rank, Some(2));
    assert_eq!(r.results[0].previous_rank, Some(2));
    assert_eq!(r.results[1].rank, Some(1), "u7 is not in class 42");
    let weekly_class = View::current(Window::Weekly).scoped(scope("class:42"));
    assert_eq!(t.engine.count(&b, &weekly_class).await.unwrap(), 1);
    assert_eq!(t.engine.count(&b, &View::all_time()).await.unwrap(), 2);
    let top = t
        .engine
        .top(&b, &View::all_time(), Limit::new(20).unwrap())
        .await
        .unwrap();
    assert_eq!(
        ranks(&top),
        vec![(1, "u7".into(), 25.0), (2, "u42".into(), 20.0)]
    );
    assert_eq!(top.total, 2);
    let neg = t.submit(&b, "u7", -30.0).await;
    assert_eq!(neg.results[0].score, Some(-5.0));
    assert_eq!(neg.results[0].rank, Some(2));
}

async fn rank_modes_number_equal_scores_as_documented(t: &Ctx) {
    for (id, mode, want) in [
        ("ord", RankMode::Ordinal, vec![1, 2, 3, 4]),
        ("comp", RankMode::Competition, vec![1, 1, 3, 4]),
        ("dense", RankMode::Dense, vec![1, 1, 2, 3]),
    ] {
        let b = t
            .board(
                id,
                BoardDef {
                    rank_mode: mode,
                    ..BoardDef::default()
                },
            )
            .await;
        for (who, v) in [("a", 10.0), ("b", 10.0), ("c", 7.0), ("d", 3.0)] {
            t.submit(&b, who, v).await;
        }
        let all = View::all_time();
        let top = t
            .engine
            .top(&b, &all, Limit::new(10).unwrap())
            .await
            .unwrap();
        let got: Vec<u64> = top.entries.iter().map(|e| e.rank).collect();
        assert_eq!(got, want, "{mode:?}");
        // Every read agrees with the pages.
        for e in &top.entries {
            let s = t.engine.standing(&b, &all, &m(&e.member)).await.unwrap();
            assert_eq!(s.rank, e.rank, "{mode:?} standing of {}", e.member);
        }
        let page = t
            .engine
            .page(&b, &all, Offset::new(1).unwrap(), Limit::new(2).unwrap())
            .await
            .unwrap();
        assert_eq!(
            page.entries.iter().map(|e| e.rank).collect::<Vec<_>>(),
            want[1..3].to_vec(),
            "{mode:?}"
        );
        let around = t
            .engine
            .around(&b, &all, &m("c"), Radius::new(0).unwrap())
            .await
            .unwrap();
        assert_eq!(around.entries[0].rank, want[2], "{mode:?}");
        let range = t
            .engine
            .score_range(&b, &all, score(3.0), score(7.0), Limit::new(10).unwrap())
            .await
            .unwrap();
        assert_eq!(
            range.entries.iter().map(|e| e.rank).collect::<Vec<_>>(),
            want[2..].to_vec(),
            "{mode:?}"
        );
        // Moving a tied member keeps the dense index right.
        t.submit(&b, "b", -3.0).await;
        let top = t
            .engine
            .top(&b, &all, Limit::new(10).unwrap())
            .await
            .unwrap();
        let want_after: Vec<u64> = match mode {
            RankMode::Ordinal => vec![1, 2, 3, 4],
            RankMode::Competition => vec![1, 2, 2, 4],
            RankMode::Dense => vec![1, 2, 2, 3],
        };
        assert_eq!(
            top.entries.iter().map(|e| e.rank).collect::<Vec<_>>(),
            want_after,
            "{mode:?} {top:?}"
        );
    }
}

async fn best_and_set_policies_follow_the_board_order(t: &Ctx) {
    let best_asc = t
        .board(
            "laps",
            BoardDef {
                order: Order::Asc,
                policy: Policy::Best,
                ..BoardDef::default()
            },
        )
        .await;
    t.submit(&best_asc, "a", 61.5).await;
    assert_eq!(
        t.submit(&best_asc, "a", 70.0).await.results[0].score,
        Some(61.5)
    );
    assert_eq!(
        t.submit(&best_asc, "a", 59.25).await.results[0].score,
        Some(59.25)
    );
    t.submit(&best_asc, "b", 60.0).await;
    let top = t
        .engine
        .top(&best_asc, &View::all_time(), Limit::new(5).unwrap())
        .await
        .unwrap();
    assert_eq!(
        ranks(&top),
        vec![(1, "a".into(), 59.25), (2, "b".into(), 60.0)]
    );

    let best_desc = t
        .board(
            "high",
            BoardDef {
                policy: Policy::Best,
                ..BoardDef::default()
            },
        )
        .await;
    t.submit(&best_desc, "a", 5.0).await;
    assert_eq!(
        t.submit(&best_desc, "a", 3.0).await.results[0].score,
        Some(5.0)
    );
    assert_eq!(
        t.submit(&best_desc, "a", 8.0).await.results[0].score,
        Some(8.0)
    );

    let set = t
        .board(
            "level",
            BoardDef {
                policy: Policy::Set,
                ..BoardDef::default()
            },
        )
        .await;
    t.submit(&set, "a", 5.0).await;
    assert_eq!(t.submit(&set, "a", 2.0).await.results[0].score, Some(2.0));
}

async fn first_tie_break_ranks_whoever_reached_the_score_first(t: &Ctx) {
    let b = t
        .board(
            "race",
            BoardDef {
                tie_break: TieBreak::First,
                windows: vec![Window::All, Window::Daily],
                ..BoardDef::default()
            },
        )
        .await;
    // "zed" reaches 10 first, then "abe"; byte order alone would put zed first on a desc board,
    // so make the later one sort first by bytes to prove time decides.
    t.submit(&b, "abe", 5.0).await;
    t.clock.advance(1_000);
    t.submit(&b, "zed", 10.0).await;
    t.clock.advance(1_000);
    t.submit(&b, "abe", 5.0).await;
    for view in [View::all_time(), View::current(Window::Daily)] {
        let top = t
            .engine
            .top(&b, &view, Limit::new(5).unwrap())
            .await
            .unwrap();
        assert_eq!(
            ranks(&top),
            vec![(1, "zed".into(), 10.0), (2, "abe".into(), 10.0)],
            "{view:?}"
        );
    }
    // Reaching the same score again (incr by 0) does not reset the time.
    t.clock.advance(1_000);
    t.submit(&b, "zed", 0.0).await;
    let top = t
        .engine
        .top(&b, &View::all_time(), Limit::new(5).unwrap())
        .await
        .unwrap();
    assert_eq!(top.entries[0].member, "zed");
    // Values must stay within the exact range, named in the error.
    let too_big = t
        .engine
        .submit(&Submit::new(b.clone(), m("x"), score(2_097_152.0)))
        .await;
    match too_big {
        Err(Error::Invalid(e)) => {
            assert_eq!(e.field, "value");
            assert!(e.message.contains("2097151"), "{e}");
        }
        other => panic!("expected an invalid value, got {other:?}"),
    }
    assert!(matches!(
        t.engine
            .submit(&Submit::new(b.clone(), m("x"), score(1.5)))
            .await,
        Err(Error::Invalid(_))
    ));
    // A sum leaving the range is refused by the script, and nothing is written.
    t.submit(&b, "big", 2_097_000.0).await;
    match t
        .engine
        .submit(&Submit::new(b.clone(), m("big"), score(1_000.0)))
        .await
    {
        Err(Error::Invalid(e)) => assert!(e.message.contains("2097151"), "{e}"),
        other => panic!("expected an invalid sum, got {other:?}"),
    }
    let s = t
        .engine
        .standing(&b, &View::current(Window::Daily), &m("big"))
        .await
        .unwrap();
    assert_eq!(s.score, 2_097_000.0);
}

async fn around_me_keeps_rank_one_and_fills_to_two_radius_plus_one(t: &Ctx) {
    let b = t.board("arena", BoardDef::default()).await;
    for i in 1..=20 {
        t.submit(&b, &format!("p{i:02}"), f64::from(100 - i)).await;
    }
    let all = View::all_time();
    let r = Radius::new(3).unwrap();
    let top = t.engine.around(&b, &all, &m("p01"), r).await.unwrap();
    assert_eq!(
        top.entries.iter().map(|e| e.rank).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6, 7]
    );
    let second = t.engine.around(&b, &all, &m("p02"), r).await.unwrap();
    assert_eq!(second.entries.first().unwrap().rank, 1);
    assert_eq!(second.entries.len(), 7);
    let mid = t.engine.around(&b, &all, &m("p10"), r).await.unwrap();
    assert_eq!(
        mid.entries.iter().map(|e| e.rank).collect::<Vec<_>>(),
        (7..=13).collect::<Vec<_>>()
    );
    let last = t.engine.around(&b, &all, &m("p20"), r).await.unwrap();
    assert_eq!(
        last.entries.iter().map(|e| e.rank).collect::<Vec<_>>(),
        (14..=20).collect::<Vec<_>>()
    );
    let wide = t
        .engine
        .around(&b, &all, &m("p05"), Radius::new(100).unwrap())
        .await
        .unwrap();
    assert_eq!(wide.entries.len(), 20);
    assert!(matches!(
        t.engine.around(&b, &all, &m("nobody"), r).await,
        Err(Error::MemberNotFound { .. })
    ));
}

async fn cursor_pages_never_skip_or_repeat_members_whose_scores_hold(t: &Ctx) {
    let b = t.board("pages", BoardDef::default()).await;
    // Ties on purpose: ten members on each of five scores.
    for i in 0..50 {
        t.submit(&b, &format!("m{i:02}"), f64::from(i % 5)).await;
    }
    let all = View::all_time();
    let limit = Limit::new(7).unwrap();
    let mut seen = Vec::new();
    let mut page = t
        .engine
        .page(&b, &all, Offset::new(0).unwrap(), limit)
        .await
        .unwrap();
    let mut round = 0;
    loop {
        seen.extend(page.entries.iter().map(|e| e.member.clone()));
        // Others move between pages: the member the cursor names changes score, others join.
        if round == 1 {
            let c = page.next.clone().unwrap();
            let last = page.entries.last().unwrap().member.clone();
            t.submit(&b, &last, 100.0).await;
            t.submit(&b, "late-joiner", 1000.0).await;
            let encoded = Cursor::decode(&c.encode()).unwrap();
            assert_eq!(encoded, c);
        }
        round += 1;
        let Some(next) = page.next.clone() else { break };
        page = t.engine.after(&b, &all, &next, limit).await.unwrap();
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no member repeated: {seen:?}");
    for i in 0..50 {
        assert!(seen.contains(&format!("m{i:02}")), "m{i:02} was skipped");
    }
}

async fn lookup_reports_ranks_in_order_and_the_missing_members(t: &Ctx) {
    let b = t
        .board(
            "friends",
            BoardDef {
                rank_mode: RankMode::Competition,
                ..BoardDef::default()
            },
        )
        .await;
    for (who, v) in [("a", 3.0), ("b", 9.0), ("c", 9.0), ("d", 1.0)] {
        t.submit(&b, who, v).await;
    }
    let l = t
        .engine
        .lookup(
            &b,
            &View::all_time(),
            &[m("d"), m("ghost"), m("b"), m("c"), m("b")],
        )
        .await
        .unwrap();
    assert_eq!(
        l.entries
            .iter()
            .map(|e| (e.rank, e.member.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "c"), (1, "b"), (4, "d")],
        "ties in Redis' order: byte order reversed on a desc board"
    );
    assert_eq!(l.missing, vec![m("ghost")]);
    assert_eq!(l.total, 4);
    let e = t
        .engine
        .lookup(&b, &View::all_time(), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Invalid(ref i) if i.field == "members"),
        "{e}"
    );
}

async fn score_ranges_are_ranked_consistently_with_pages(t: &Ctx) {
    let b = t
        .board(
            "times",
            BoardDef {
                order: Order::Asc,
                rank_mode: RankMode::Dense,
                ..BoardDef::default()
            },
        )
        .await;
    for (who, v) in [("a", 1.0), ("b", 2.0), ("c", 2.0), ("d", 3.5), ("e", 9.0)] {
        t.submit(&b, who, v).await;
    }
    let all = View::all_time();
    let r = t
        .engine
        .score_range(&b, &all, score(2.0), score(3.5), Limit::new(10).unwrap())
        .await
        .unwrap();
    assert_eq!(
        ranks(&r),
        vec![
            (2, "b".into(), 2.0),
            (2, "c".into(), 2.0),
            (3, "d".into(), 3.5)
        ]
    );
    let r = t
        .engine
        .score_range(&b, &all, score(2.5), score(3.0), Limit::new(10).unwrap())
        .await
        .unwrap();
    assert!(r.entries.is_empty());
    let e = t
        .engine
        .score_range(&b, &all, score(5.0), score(1.0), Limit::new(10).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Invalid(ref i) if i.field == "min"),
        "{e}"
    );
}

async fn event_ids_make_submits_idempotent(t: &Ctx) {
    let b = t.board("once", BoardDef::default()).await;
    let mut ev = Submit::new(b.clone(), m("u1"), score(5.0));
    ev.event_id = Some(EventId::parse("evt-1").unwrap());
    let first = t.engine.submit(&ev).await.unwrap();
    assert!(!first.duplicate);
    let again = t.engine.submit(&ev).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.results[0].score, Some(5.0));
    assert_eq!(again.results[0].rank, Some(1));
    // After the dedupe window the id is forgotten.
    t.clock.advance(24 * 3600 * 1000 + 1);
    let later = t.engine.submit(&ev).await.unwrap();
    assert!(!later.duplicate);
    assert_eq!(later.results[0].score, Some(10.0));
}

async fn an_event_id_reused_for_another_event_is_refused_and_writes_nothing(t: &Ctx) {
    let reused = |field: &str, got: Result<_, Error>| match got {
        Err(Error::EventIdReused { field: f, event_id }) => {
            assert_eq!((f.as_str(), event_id.as_str()), (field, "ev1"));
        }
        other => panic!("{field}: {other:?}"),
    };
    let with_id = |b: &rankd::board::BoardId, who: &str, v: f64, scopes: &[&str], id: &str| {
        let mut ev = Submit::new(b.clone(), m(who), score(v));
        ev.scopes = scopes.iter().map(|s| scope(s)).collect();
        ev.event_id = Some(EventId::parse(id).unwrap());
        ev
    };
    for (name, def) in [
        ("reuse", BoardDef::default()),
        (
            "reusetrim",
            BoardDef {
                max_members: Some(3),
                ..BoardDef::default()
            },
        ),
    ] {
        let b = t.board(name, def).await;
        let other = t.board(&format!("{name}2"), BoardDef::default()).await;
        let first = with_id(&b, "alice", 10.0, &["c:1", "c:2"], "ev1");
        assert!(!t.engine.submit(&first).await.unwrap().duplicate);
        // Another member, value or set of scopes under the same id: refused, nothing written.
        for ev in [
            with_id(&b, "bob", 10.0, &["c:1", "c:2"], "ev1"),
            with_id(&b, "alice", 11.0, &["c:1", "c:2"], "ev1"),
            with_id(&b, "alice", 10.0, &["c:1"], "ev1"),
        ] {
            reused("event_id", t.engine.submit(&ev).await.map(|_| ()));
        }
        // The same event again, its scopes in another order: a duplicate.
        let again = with_id(&b, "alice", 10.0, &["c:2", "c:1"], "ev1");
        assert!(t.engine.submit(&again).await.unwrap().duplicate);
        // In a batch of one call, of several calls, and within the batch itself: nothing of it is
        // written.
        let carol = with_id(&b, "carol", 1.0, &[], "ev2");
        let dave = with_id(&other, "dave", 1.0, &[], "ev3");
        let bob = with_id(&b, "bob", 10.0, &[], "ev1");
        reused(
            "events[1].event_id",
            t.engine
                .submit_batch(&[carol.clone(), bob.clone()])
                .await
                .map(|_| ()),
        );
        reused(
            "events[1].event_id",
            t.engine
                .submit_batch(&[dave.clone(), bob.clone()])
                .await
                .map(|_| ()),
        );
        let erin = with_id(&b, "erin", 1.0, &[], "ev1x");
        let frank = with_id(&b, "frank", 1.0, &[], "ev1x");
        match t.engine.submit_batch(&[dave.clone(), erin, frank]).await {
            Err(Error::EventIdReused { field, event_id }) => {
                assert_eq!(
                    (field.as_str(), event_id.as_str()),
                    ("events[2].event_id", "ev1x")
                )
            }
            other => panic!("{other:?}"),
        }
        for (board, who) in [(&b, "bob"), (&b, "carol"), (&other, "dave"), (&b, "erin")] {
            let got = t.engine.standing(board, &View::all_time(), &m(who)).await;
            assert!(
                matches!(got, Err(Error::MemberNotFound { .. })),
                "{name}: {who} was written: {got:?}"
            );
        }
        let alice = t
            .engine
            .standing(&b, &View::all_time(), &m("alice"))
            .await
            .unwrap();
        assert_eq!(alice.score, 10.0);
        // Past the dedupe window the id is free again, for any event.
        t.clock.advance(24 * 3600 * 1000 + 1);
        assert!(!t.engine.submit(&bob).await.unwrap().duplicate);
    }
}

async fn batches_apply_in_order_across_boards_and_count_duplicates(t: &Ctx) {
    let a = t
        .board(
            "ba",
            BoardDef {
                policy: Policy::Set,
                ..BoardDef::default()
            },
        )
        .await;
    let b = t.board("bb", BoardDef::default()).await;
    let mut events = Vec::new();
    for i in 0..1200 {
        let board = if i % 2 == 0 { a.clone() } else { b.clone() };
        let mut ev = Submit::new(board, m(&format!("u{}", i % 7)), score(f64::from(i)));
        if i % 10 == 0 {
            // A repeated id is a retry: the same event again.
            ev = Submit::new(
                ev.board,
                m(&format!("u{}", i % 20 % 7)),
                score(f64::from(i % 20)),
            );
            ev.event_id = Some(EventId::parse(&format!("e{}", i % 20)).unwrap());
        }
        events.push(ev);
    }
    let out = t.engine.submit_batch(&events).await.unwrap();
    // Ids e0 and e10 repeat every 20 events: each counts once.
    let ids = events.iter().filter(|e| e.event_id.is_some()).count() as u64;
    assert_eq!(out.duplicates, ids - 2);
    assert_eq!(out.accepted + out.duplicates, 1200);
    // The model: replay in order.
    let mut set = std::collections::HashMap::new();
    let mut sum = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (i, ev) in events.iter().enumerate() {
        if let Some(id) = &ev.event_id {
            if !seen.insert((ev.board.clone(), id.clone())) {
                continue;
            }
        }
        if i % 2 == 0 {
            set.insert(ev.member.to_string(), ev.value.get());
        } else {
            *sum.entry(ev.member.to_string()).or_insert(0.0) += ev.value.get();
        }
    }
    for (board, model) in [(&a, &set), (&b, &sum)] {
        for (member, v) in model {
            let s = t
                .engine
                .standing(board, &View::all_time(), &m(member))
                .await
                .unwrap();
            assert_eq!(s.score, *v, "{board} {member}");
        }
    }
}

async fn a_chunk_wider_than_one_multi_member_call_applies_every_event(t: &Ctx) {
    // One script call of 2,500 events, with more distinct members and event ids than one ZMSCORE or
    // variadic ZADD of submit.lua takes (1,000), on a dense board: its distinct-value counts must
    // follow each member from its first score to its last, whichever call of many writes it.
    let wide = Ctx::with_prefix(
        t.redis,
        &t.prefix,
        rankd::engine::EngineConfig {
            batch_chunk: 2_500,
            ..rankd::engine::EngineConfig::default()
        },
    )
    .await;
    wide.clock.set(t.clock.now_ms());
    let b = wide
        .board(
            "wide",
            BoardDef {
                rank_mode: RankMode::Dense,
                ..BoardDef::default()
            },
        )
        .await;
    // Members u0..u1499 start with a score each, so the batch moves some off their first value.
    let seed: Vec<Submit> = (0..1500u32)
        .map(|i| Submit::new(b.clone(), m(&format!("u{i}")), score(f64::from(i % 5))))
        .collect();
    wide.engine.submit_batch(&seed).await.unwrap();
    let mut events = Vec::new();
    for i in 0..2500u32 {
        // An id repeated (i and i + 2200) is the same event again.
        let j = if i % 2 == 0 { i % 2200 } else { i };
        let mut ev = Submit::new(
            b.clone(),
            m(&format!("u{}", j % 1800)),
            score(f64::from(j % 7)),
        );
        if i % 2 == 0 {
            ev.event_id = Some(EventId::parse(&format!("w{j}")).unwrap());
        }
        events.push(ev);
    }
    let out = wide.engine.submit_batch(&events).await.unwrap();
    let mut sum: std::collections::HashMap<String, f64> = (0..1500u32)
        .map(|i| (format!("u{i}"), f64::from(i % 5)))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut dups = 0;
    for ev in &events {
        if let Some(id) = &ev.event_id {
            if !seen.insert(id.clone()) {
                dups += 1;
                continue;
            }
        }
        *sum.entry(ev.member.to_string()).or_insert(0.0) += ev.value.get();
    }
    assert_eq!((out.accepted, out.duplicates), (2500 - dups, dups));
    // Dense ranks: 1 + the distinct values above a member's.
    let mut values: Vec<f64> = sum.values().copied().collect();
    values.sort_by(|a, b| b.total_cmp(a));
    values.dedup();
    let view = View::all_time();
    let members: Vec<_> = sum.keys().map(|k| m(k)).collect();
    let standings =
        futures::future::join_all(members.iter().map(|k| wide.engine.standing(&b, &view, k))).await;
    for (s, member) in standings.into_iter().zip(&members) {
        let v = &sum[member.as_str()];
        let s = s.unwrap();
        assert_eq!(s.score, *v, "{member}");
        let dense = values.iter().position(|x| x == v).unwrap() as u64 + 1;
        assert_eq!(s.rank, dense, "{member} at {v}");
    }
    // Sent again: every event with an id is a duplicate now, the others count again.
    let again = wide.engine.submit_batch(&events).await.unwrap();
    assert_eq!(again.duplicates, 1250);
    assert_eq!(again.accepted, 1250);
}

async fn invalid_batches_write_nothing_and_name_every_bad_event(t: &Ctx) {
    let b = t.board("strict", BoardDef::default()).await;
    let mut events = vec![Submit::new(b.clone(), m("ok"), score(1.0))];
    events.push(Submit::new(
        rankd::board::BoardId::parse("nope").unwrap(),
        m("x"),
        score(1.0),
    ));
    let mut future = Submit::new(b.clone(), m("late"), score(1.0));
    future.at_ms = Some(t.clock.now_ms() + 3_600_000);
    events.push(future);
    match t.engine.submit_batch(&events).await {
        Err(Error::InvalidBatch(list)) => {
            let idx: Vec<usize> = list.iter().map(|(i, _)| *i).collect();
            assert_eq!(idx, vec![1, 2]);
            assert_eq!(list[0].1.field, "board");
            assert_eq!(list[1].1.field, "at");
        }
        other => panic!("expected an invalid batch, got {other:?}"),
    }
    assert_eq!(t.engine.count(&b, &View::all_time()).await.unwrap(), 0);
    let too_many = vec![Submit::new(b.clone(), m("x"), score(1.0)); 10_001];
    assert!(
        matches!(t.engine.submit_batch(&too_many).await, Err(Error::Invalid(ref i)) if i.field == "events")
    );
}

async fn max_members_trims_the_worst_inside_the_script(t: &Ctx) {
    let b = t
        .board(
            "top3",
            BoardDef {
                max_members: Some(3),
                rank_mode: RankMode::Dense,
                ..BoardDef::default()
            },
        )
        .await;
    for (who, v) in [("a", 5.0), ("b", 4.0), ("c", 3.0)] {
        t.submit(&b, who, v).await;
    }
    let r = t.submit(&b, "d", 1.0).await;
    assert_eq!(r.results[0].rank, None, "d is trimmed at once");
    t.submit(&b, "e", 4.5).await;
    let top = t
        .engine
        .top(&b, &View::all_time(), Limit::new(10).unwrap())
        .await
        .unwrap();
    assert_eq!(
        ranks(&top),
        vec![
            (1, "a".into(), 5.0),
            (2, "e".into(), 4.5),
            (3, "b".into(), 4.0)
        ]
    );
    assert_eq!(top.total, 3);
}

async fn remove_member_clears_every_key_and_display_data(t: &Ctx) {
    let b = t
        .board(
            "gone",
            BoardDef {
                windows: vec![Window::All, Window::Daily, Window::Monthly],
                rank_mode: RankMode::Dense,
                ..BoardDef::default()
            },
        )
        .await;
    let mut ev = Submit::new(b.clone(), m("u1"), score(3.0));
    ev.scopes = vec![scope("class:1"), scope("region:eu")];
    t.engine.submit(&ev).await.unwrap();
    t.submit(&b, "u2", 3.0).await;
    t.engine
        .put_display(
            &b,
            &m("u1"),
            Display {
                display_name: Some("Ann".into()),
                data: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(t.engine.remove_member(&b, &m("u1")).await.unwrap(), 9);
    for view in [
        View::all_time(),
        View::current(Window::Daily).scoped(scope("class:1")),
    ] {
        assert!(matches!(
            t.engine.standing(&b, &view, &m("u1")).await,
            Err(Error::MemberNotFound { .. })
        ));
    }
    let s = t
        .engine
        .standing(&b, &View::all_time(), &m("u2"))
        .await
        .unwrap();
    assert_eq!((s.rank, s.total), (1, 1));
    // Re-adding starts from scratch, with no display name left behind.
    t.submit(&b, "u1", 1.0).await;
    let top = t
        .engine
        .top(&b, &View::all_time(), Limit::new(5).unwrap())
        .await
        .unwrap();
    assert_eq!(top.entries[1].display_name, None);
    assert_eq!(
        top.entries[1].rank, 2,
        "dense index forgot the removed value"
    );
}

async fn delete_board_removes_every_key_and_the_definition(t: &Ctx) {
    let b = t
        .board(
            "temp",
            BoardDef {
                windows: vec![Window::All, Window::Weekly],
                ..BoardDef::default()
            },
        )
        .await;
    let mut ev = Submit::new(b.clone(), m("u1"), score(3.0));
    ev.scopes = vec![scope("c:1")];
    ev.event_id = Some(EventId::parse("only-once").unwrap());
    t.engine.submit(&ev).await.unwrap();
    t.engine.delete_board(&b).await.unwrap();
    assert!(matches!(
        t.engine.board(&b).await,
        Err(Error::BoardNotFound(_))
    ));
    assert!(matches!(
        t.engine.submit(&ev).await,
        Err(Error::BoardNotFound(_))
    ));
    assert!(t.engine.boards().await.unwrap().is_empty());
    // Defined again, it starts empty: the old event id and scores are gone.
    t.board("temp", BoardDef::default()).await;
    let r = t.engine.submit(&ev).await.unwrap();
    assert!(!r.duplicate);
    assert_eq!(r.results[0].score, Some(3.0));
    assert!(matches!(
        t.engine
            .delete_board(&rankd::board::BoardId::parse("never").unwrap())
            .await,
        Err(Error::BoardNotFound(_))
    ));
}

async fn updates_refuse_unsafe_changes_and_reach_other_instances(t: &Ctx) {
    let b = t.board("evolving", BoardDef::default()).await;
    let other = t.twin().await;
    // The other instance caches the definition.
    t.submit(&b, "u1", 1.0).await;
    other.submit(&b, "u1", 1.0).await;
    let refused = t
        .engine
        .put_board(
            &b,
            BoardDef {
                order: Order::Asc,
                ..BoardDef::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Invalid(ref i) if i.field == "order"),
        "{refused}"
    );
    let created = t
        .engine
        .put_board(
            &b,
            BoardDef {
                windows: vec![Window::All, Window::Daily],
                ..BoardDef::default()
            },
        )
        .await
        .unwrap();
    assert!(!created);
    // The other instance's stale cache is caught by the script and refreshed: the new window is written.
    let r = other.submit(&b, "u1", 1.0).await;
    assert_eq!(r.results.len(), 2, "{r:?}");
    assert_eq!(
        other
            .engine
            .count(&b, &View::current(Window::Daily))
            .await
            .unwrap(),
        1
    );
    // A delete on one instance is seen by the other's next call.
    t.engine.delete_board(&b).await.unwrap();
    assert!(matches!(
        other
            .engine
            .top(&b, &View::all_time(), Limit::new(1).unwrap())
            .await,
        Err(Error::BoardNotFound(_))
    ));
    let listed = t.engine.boards().await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

async fn a_refusal_by_another_instances_older_definition_is_judged_again(t: &Ctx) {
    let kept = |periods| BoardDef {
        windows: vec![Window::Daily],
        retention_periods: periods,
        ..BoardDef::default()
    };
    let b = t.board("retained", kept(1)).await;
    let other = t.twin().await;
    let today = Period::containing(Window::Daily, t.clock.now_ms()).unwrap();
    let back = |days: i64| View {
        window: Window::Daily,
        period: Some(today.offset(-days)),
        scope: None,
    };
    let at = |days: i64| {
        let mut ev = Submit::new(b.clone(), m("u1"), score(1.0));
        ev.at_ms = Some(today.offset(-days).start_ms());
        ev
    };
    let refused = |r: rankd::Result<u64>, field: &str| {
        assert!(
            matches!(r, Err(Error::Invalid(ref e)) if e.field == field),
            "{r:?}"
        );
    };
    // The other instance caches the definition, and refuses by it what this one then allows:
    // each path (a write, a read, a batch) answers by the current definition, with no call between
    // that could have told the other instance of the change.
    refused(other.engine.count(&b, &back(2)).await, "period");
    assert!(!t.engine.put_board(&b, kept(3)).await.unwrap());
    other.engine.submit(&at(2)).await.unwrap();
    assert!(!t.engine.put_board(&b, kept(5)).await.unwrap());
    assert_eq!(other.engine.count(&b, &back(4)).await.unwrap(), 0);
    assert_eq!(other.engine.count(&b, &back(2)).await.unwrap(), 1);
    assert!(!t.engine.put_board(&b, kept(7)).await.unwrap());
    let out = other.engine.submit_batch(&[at(6), at(1)]).await.unwrap();
    assert_eq!(out.accepted, 2);
    // What the current definition refuses is still refused.
    refused(other.engine.count(&b, &back(8)).await, "period");
    match other.engine.submit_batch(&[at(1), at(9)]).await {
        Err(Error::InvalidBatch(bad)) => {
            assert_eq!(bad.len(), 1, "{bad:?}");
            assert_eq!((bad[0].0, bad[0].1.field.as_str()), (1, "at"));
        }
        r => panic!("expected the event 9 days back refused, got {r:?}"),
    }
    // The HTTP layer's check of a whole batch, before it is submitted, answers the same.
    assert!(!t.engine.put_board(&b, kept(9)).await.unwrap());
    let bad = other
        .engine
        .check_batch(&[(0, at(8)), (1, at(10))])
        .await
        .unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!((bad[0].0, bad[0].1.field.as_str()), (1, "at"));
    // A board deleted meanwhile is not defined, though the cached definition held it.
    t.engine.delete_board(&b).await.unwrap();
    match other.engine.submit_batch(&[at(12)]).await {
        Err(Error::InvalidBatch(bad)) => assert_eq!(bad[0].1.field, "board", "{bad:?}"),
        r => panic!("expected the board refused, got {r:?}"),
    }
}

/// Redis expires keys by its own clock, and rankd means a key to live until its period's end plus
/// the retention by rankd's: the scripts set the expiry relative to the call's time, so a rankd
/// whose clock runs behind Redis's by more than the retention keeps what it writes (an absolute
/// expiry in Redis's past would delete the key as it is written: the write answering rank 1, the
/// next read a board of no one).
async fn keys_outlive_their_write_when_rankd_runs_behind_redis(t: &Ctx) {
    let b = t
        .board(
            "skewed",
            BoardDef {
                windows: vec![Window::Weekly],
                retention_periods: 1,
                ..BoardDef::default()
            },
        )
        .await;
    // 40 days behind: the week rankd sees as current ended more than its retention ago for Redis.
    t.clock
        .set(chrono::Utc::now().timestamp_millis() - 40 * 86_400_000);
    let out = t
        .engine
        .submit(&Submit::new(b.clone(), m("u1"), score(3.0)))
        .await
        .unwrap();
    assert_eq!(out.results[0].rank, Some(1));
    let week = View {
        window: Window::Weekly,
        period: None,
        scope: None,
    };
    assert_eq!(t.engine.count(&b, &week).await.unwrap(), 1);
    // A second write to the key neither deletes it nor moves its expiry.
    t.engine
        .submit(&Submit::new(b.clone(), m("u2"), score(5.0)))
        .await
        .unwrap();
    assert_eq!(t.engine.count(&b, &week).await.unwrap(), 2);
}

async fn periods_expire_and_old_events_are_rejected(t: &Ctx) {
    let b = t
        .board(
            "daily",
            BoardDef {
                windows: vec![Window::Daily],
                retention_periods: 1,
                ..BoardDef::default()
            },
        )
        .await;
    let now = t.clock.now_ms();
    let today = Period::containing(Window::Daily, now).unwrap();
    let yesterday = today.offset(-1);
    let mut ev = Submit::new(b.clone(), m("u1"), score(1.0));
    ev.at_ms = Some(yesterday.start_ms() + 1);
    t.engine.submit(&ev).await.unwrap();
    let y = View {
        window: Window::Daily,
        period: Some(yesterday),
        scope: None,
    };
    assert_eq!(t.engine.count(&b, &y).await.unwrap(), 1);
    // Two days back is past retention: refused for writes and reads, naming the period.
    ev.at_ms = Some(today.offset(-2).start_ms());
    match t.engine.submit(&ev).await {
        Err(Error::Invalid(e)) => {
            assert_eq!(e.field, "at");
            assert!(e.message.contains(&today.offset(-2).id()), "{e}");
        }
        other => panic!("expected an expired period, got {other:?}"),
    }
    let old = View {
        window: Window::Daily,
        period: Some(today.offset(-2)),
        scope: None,
    };
    assert!(
        matches!(t.engine.count(&b, &old).await, Err(Error::Invalid(ref e)) if e.field == "period")
    );
    let future = View {
        window: Window::Daily,
        period: Some(today.offset(1)),
        scope: None,
    };
    assert!(
        matches!(t.engine.count(&b, &future).await, Err(Error::Invalid(ref e)) if e.field == "period")
    );
    assert!(matches!(
        t.engine.count(&b, &View::all_time()).await,
        Err(Error::Invalid(ref e)) if e.field == "window"
    ));
}

async fn bad_input_names_the_field_and_the_limit(t: &Ctx) {
    let b = t.board("inputs", BoardDef::default()).await;
    let cases: Vec<(Result<Submit, rankd::Invalid>, &str)> = vec![
        (
            Submit::parse("bad board!", "u", 1.0, &[], None, None),
            "board",
        ),
        (Submit::parse("inputs", "", 1.0, &[], None, None), "member"),
        (
            Submit::parse("inputs", "u", f64::NAN, &[], None, None),
            "value",
        ),
        (
            Submit::parse("inputs", "u", 1.0, &["a b".into()], None, None),
            "scopes[0]",
        ),
        (
            Submit::parse(
                "inputs",
                "u",
                1.0,
                &(0..9).map(|i| format!("s{i}")).collect::<Vec<_>>(),
                None,
                None,
            ),
            "scopes",
        ),
        (
            Submit::parse("inputs", "u", 1.0, &[], Some(&"e".repeat(129)), None),
            "event_id",
        ),
    ];
    for (r, field) in cases {
        assert_eq!(r.unwrap_err().field, field);
    }
    assert!(matches!(
        t.engine
            .submit(&Submit::new(
                rankd::board::BoardId::parse("undefined").unwrap(),
                m("u"),
                score(1.0)
            ))
            .await,
        Err(Error::BoardNotFound(_))
    ));
    let overflow = Submit::new(b.clone(), m("u"), score(f64::MAX));
    t.engine.submit(&overflow).await.unwrap();
    match t.engine.submit(&overflow).await {
        Err(Error::Invalid(e)) => assert!(e.message.contains("finite"), "{e}"),
        other => panic!("expected an overflow error, got {other:?}"),
    }
    assert_eq!(
        t.engine
            .standing(&b, &View::all_time(), &m("u"))
            .await
            .unwrap()
            .score,
        f64::MAX
    );
    let bad_def = t
        .engine
        .put_board(
            &b,
            BoardDef {
                max_members: Some(0),
                ..BoardDef::default()
            },
        )
        .await;
    assert!(matches!(bad_def, Err(Error::Invalid(ref i)) if i.field == "max_members"));
    let e = t
        .engine
        .put_display(
            &b,
            &m("u"),
            Display {
                display_name: Some("x".repeat(129)),
                data: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Invalid(ref i) if i.field == "display_name" && i.message.contains("128")),
        "{e}"
    );
}

async fn standing_reports_percentile_and_display_data(t: &Ctx) {
    let b = t.board("pct", BoardDef::default()).await;
    for (who, v) in [("a", 10.0), ("b", 20.0), ("c", 20.0), ("d", 30.0)] {
        t.submit(&b, who, v).await;
    }
    let mut data = serde_json::Map::new();
    data.insert("avatar".into(), "cat.png".into());
    t.engine
        .put_display(
            &b,
            &m("b"),
            Display {
                display_name: Some("Bea".into()),
                data: Some(data.clone()),
            },
        )
        .await
        .unwrap();
    let s = t
        .engine
        .standing(&b, &View::all_time(), &m("b"))
        .await
        .unwrap();
    assert_eq!(s.percentile, 25.0, "one of four is strictly worse");
    assert_eq!(s.total, 4);
    assert_eq!(s.display_name.as_deref(), Some("Bea"));
    assert_eq!(s.data, Some(serde_json::Value::Object(data)));
    let top = t
        .engine
        .top(&b, &View::all_time(), Limit::new(4).unwrap())
        .await
        .unwrap();
    assert_eq!(
        top.entries
            .iter()
            .find(|e| e.member == "b")
            .unwrap()
            .display_name
            .as_deref(),
        Some("Bea")
    );
    let lowest = t
        .engine
        .standing(&b, &View::all_time(), &m("a"))
        .await
        .unwrap();
    assert_eq!(lowest.percentile, 0.0);
}

async fn concurrent_standings_share_script_calls_and_each_gets_its_own(t: &Ctx) {
    let b = t.board("crowd", BoardDef::default()).await;
    let n: u32 = 300;
    // Ties on purpose: ranks among equal scores follow the member order, percentiles count only
    // the strictly worse.
    let events: Vec<Submit> = (0..n)
        .map(|i| Submit::new(b.clone(), m(&format!("u{i}")), score(f64::from(i % 40))))
        .collect();
    t.engine.submit_batch(&events).await.unwrap();
    let members: Vec<_> = (0..n).map(|i| m(&format!("u{i}"))).collect();
    // The same ranks, read as one lookup (one call, no coalescing involved).
    let all = t
        .engine
        .lookup(&b, &View::all_time(), &members)
        .await
        .unwrap();
    let calls = || async { t.engine.backend_stats().await.unwrap().script_calls };
    let before = calls().await;
    let view = View::all_time();
    let reads =
        futures::future::join_all(members.iter().map(|mem| t.engine.standing(&b, &view, mem)))
            .await;
    let made = calls().await - before;
    for (i, (mem, got)) in members.iter().zip(reads).enumerate() {
        let got = got.unwrap();
        let want = all
            .entries
            .iter()
            .find(|e| e.member == mem.as_str())
            .unwrap();
        assert_eq!(got.member, *mem);
        assert_eq!((got.rank, got.score), (want.rank, want.score), "{mem}");
        let value = f64::from(i as u32 % 40);
        let worse = (0..n).filter(|j| f64::from(j % 40) < value).count();
        assert_eq!(got.percentile, worse as f64 * 100.0 / f64::from(n), "{mem}");
        assert_eq!(got.total, u64::from(n));
    }
    // One call went out alone; the reads that arrived meanwhile went out together. join_all polls
    // its futures 32 at a time: about n / 32 calls on an idle machine, where one call per read would
    // be n. A busy machine interleaves the calls' round trips with the polling and makes more
    // (36 for 320 identical page reads was seen), so the bound only asks for most reads to share.
    assert!(
        made <= u64::from(n / 4),
        "{made} script calls for {n} concurrent reads"
    );
    // A member that is not there still gets its own answer inside a shared call.
    let (a, missing) = futures::future::join(
        t.engine.standing(&b, &View::all_time(), &m("u1")),
        t.engine.standing(&b, &View::all_time(), &m("nobody")),
    )
    .await;
    assert_eq!(a.unwrap().member, m("u1"));
    assert!(
        matches!(missing, Err(Error::MemberNotFound { .. })),
        "{missing:?}"
    );
}

async fn concurrent_identical_page_reads_share_script_calls(t: &Ctx) {
    let b = t.board("dashboard", BoardDef::default()).await;
    let events: Vec<Submit> = (0..60u32)
        .map(|i| Submit::new(b.clone(), m(&format!("u{i}")), score(f64::from(i % 25))))
        .collect();
    t.engine.submit_batch(&events).await.unwrap();
    let view = View::all_time();
    let top = || t.engine.top(&b, &view, Limit::new(20).unwrap());
    let alone = top().await.unwrap();
    let calls = || async { t.engine.backend_stats().await.unwrap().script_calls };
    let before = calls().await;
    let n = 320u64;
    let reads = futures::future::join_all((0..n).map(|_| top())).await;
    let made = calls().await - before;
    for got in reads {
        assert_eq!(got.unwrap(), alone);
    }
    // One call went out alone; the reads that arrived meanwhile shared the next: about n / 32 calls
    // (join_all polls 32 at a time) on an idle machine, more on a busy one (see above), where one
    // call per read would be n.
    assert!(made <= n / 4, "{made} script calls for {n} identical reads");

    // Reads that differ in anything are not merged: each gets its own page.
    let (five, next_five, around) = futures::future::join3(
        t.engine.top(&b, &view, Limit::new(5).unwrap()),
        t.engine
            .page(&b, &view, Offset::new(5).unwrap(), Limit::new(5).unwrap()),
        t.engine
            .around(&b, &view, &m("u0"), Radius::new(1).unwrap()),
    )
    .await;
    assert_eq!(ranks(&five.unwrap()), ranks(&alone)[..5]);
    assert_eq!(ranks(&next_five.unwrap()), ranks(&alone)[5..10]);
    assert!(around.unwrap().entries.iter().any(|e| e.member == "u0"));

    // A write that completed before a read began is in its answer.
    t.submit(&b, "late", 1000.0).await;
    let after = futures::future::join_all((0..8).map(|_| top())).await;
    for got in after {
        let got = got.unwrap();
        assert_eq!(got.entries[0].member, "late");
        assert_eq!(got.total, 61);
    }
}

#[tokio::test]
async fn a_batch_retried_after_some_calls_wrote_names_what_to_resend_not_nothing_written() {
    let other = Ctx::new(Redis::Standalone).await;
    let a = other
        .board(
            "cutA",
            BoardDef {
                policy: Policy::Best,
                ..BoardDef::default()
            },
        )
        .await;
    let wide = BoardDef {
        policy: Policy::Best,
        windows: vec![Window::All, Window::Daily],
        retention_periods: 10,
        ..BoardDef::default()
    };
    let b = other.board("cutB", wide.clone()).await;
    // Another instance keeps fewer days of B while the batch is on its way: B's call finds its
    // definition changed, and on the retry its event lies in a period B no longer keeps.
    let changer = other.twin().await;
    let (b2, narrow) = (
        b.clone(),
        BoardDef {
            retention_periods: 1,
            ..wide
        },
    );
    let change: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
        changer.engine.put_board(&b2, narrow).await.unwrap();
    });
    let redis = RedisExecutor::connect(&RedisConfig::new(Redis::Standalone.url()))
        .await
        .unwrap();
    // Run just before the first pipeline, as if it arrived between the engine reading B's
    // definition and its calls reaching Redis.
    let change = std::sync::Mutex::new(Some(change));
    let exec = Hooked {
        inner: std::sync::Arc::new(redis),
        hook: Box::new(move |sending| match sending {
            Sending::Many(_) => change.lock().unwrap().take(),
            Sending::One(_) => None,
        }),
    };
    let engine = rankd::Engine::new(
        std::sync::Arc::new(exec),
        rankd::keys::Keys::new(&other.prefix).unwrap(),
        other.clock.clone(),
        rankd::engine::EngineConfig::default(),
    )
    .await
    .unwrap();
    let mut late = Submit::new(b.clone(), m("u2"), score(5.0));
    late.at_ms = Some(other.clock.now_ms() - 5 * 86_400_000);
    let batch = [Submit::new(a.clone(), m("u1"), score(5.0)), late];
    let r = engine.submit_batch(&batch).await;
    let Err(Error::Conflict(msg)) = &r else {
        panic!("A's call wrote, so the answer cannot be that nothing was: {r:?}")
    };
    assert!(msg.starts_with("1 of 2 events were not applied"), "{msg}");
    assert!(msg.contains("events[1].at"), "{msg}");
    assert!(msg.ends_with("resend events 1"), "{msg}");
    let s = other
        .engine
        .standing(&a, &View::all_time(), &m("u1"))
        .await
        .unwrap();
    assert_eq!(s.score, 5.0, "A's event stays written, as the answer says");
    other.cleanup().await;
}

/// Single events sharing one call (what concurrent writes to a board do) are each answered exactly
/// as the same events sent one by one: scores, ranks, ranks before, duplicates, and refusals that
/// refuse their own event only (a value past the board's range, a sum past it found by the script,
/// an id reused for another event), on boards of every rank mode and both tie-breaks.
async fn a_shared_call_answers_each_event_as_a_serial_replay(t: &Ctx) {
    let defs = [
        BoardDef {
            windows: vec![Window::All, Window::Weekly],
            tie_break: TieBreak::First,
            ..BoardDef::default()
        },
        BoardDef {
            windows: vec![Window::All],
            rank_mode: RankMode::Dense,
            policy: Policy::Best,
            ..BoardDef::default()
        },
        BoardDef {
            rank_mode: RankMode::Competition,
            order: Order::Asc,
            ..BoardDef::default()
        },
    ];
    for (n, def) in defs.into_iter().enumerate() {
        let bound = def.score_bound();
        let shared = t.board(&format!("shared{n}"), def.clone()).await;
        let serial = t.board(&format!("serial{n}"), def).await;
        let events = |b: &rankd::board::BoardId| {
            let ev = |member: &str, value: f64, id: Option<&str>, scopes: &[&str]| {
                let mut e = Submit::new(b.clone(), m(member), score(value));
                e.event_id = id.map(|i| EventId::parse(i).unwrap());
                e.scopes = scopes.iter().map(|s| scope(s)).collect();
                e
            };
            let mut v = vec![
                ev("u1", 5.0, None, &["c1"]),
                ev("u2", 7.0, None, &[]),
                ev("u1", 3.0, Some("e1"), &["c1"]),
                ev("u1", 3.0, Some("e1"), &["c1"]),
                ev("u3", 5.0, None, &["c1", "c2"]),
                ev("u2", 1.0, Some("e1"), &[]),
                ev("u4", 7.0, None, &["c2"]),
                ev("u1", 2.0, None, &["c1"]),
                ev("u3", 5.0, Some("e2"), &["c2", "c1"]),
            ];
            if let Some(bound) = bound {
                // Past the range by itself (refused before the call), then a sum past it (refused
                // by the script, within the shared call).
                v.insert(2, ev("u5", bound + 1.0, None, &[]));
                v.insert(3, ev("u6", bound, None, &[]));
                v.insert(5, ev("u6", 1.0, None, &[]));
            }
            v
        };
        let together = t.engine.submit_each(events(&shared)).await;
        let mut alone = Vec::new();
        for ev in events(&serial) {
            alone.push(t.engine.submit(&ev).await);
        }
        assert_eq!(together.len(), alone.len());
        let mut refusals = 0;
        for (i, (a, b)) in together.iter().zip(&alone).enumerate() {
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "board {n}, event {i}"),
                (Err(a), Err(b)) => {
                    refusals += 1;
                    assert_eq!(a.to_string(), b.to_string(), "board {n}, event {i}");
                    assert_eq!(
                        std::mem::discriminant(a),
                        std::mem::discriminant(b),
                        "board {n}, event {i}: {a:?} / {b:?}"
                    );
                }
                _ => panic!("board {n}, event {i}: shared {a:?}, alone {b:?}"),
            }
        }
        assert!(refusals >= 1, "board {n}: the reused id is refused");
        assert!(
            together.iter().flatten().any(|s| s.duplicate),
            "board {n}: the repeated id is a duplicate"
        );
        for view in [
            View::all_time(),
            View {
                scope: Some(scope("c1")),
                ..View::all_time()
            },
        ] {
            let top = |b| t.engine.top(b, &view, Limit::new(50).unwrap());
            let (a, b) = (top(&shared).await.unwrap(), top(&serial).await.unwrap());
            assert_eq!(ranks(&a), ranks(&b), "board {n}");
        }
    }
}
