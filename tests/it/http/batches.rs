//! Batches: validated whole, listing every event refused, and written all or nothing.

use reqwest::Method;
use serde_json::{json, Value};

use super::{batch_errors, ok, problem, raw_problem, send_problem};
use crate::server::TestApp;

/// Sums that would leave a `tie_break: first` board's range are refused only by the current
/// scores. A batch of several calls (boards, or chunks of one board) is still all or nothing: every
/// such event is listed, each judged as if the events before it were applied, and nothing is written.
#[tokio::test]
async fn a_batch_whose_sums_leave_a_range_writes_nothing_and_lists_every_such_event() {
    let app = TestApp::spawn().await;
    app.put_board("plain", json!({})).await;
    for b in ["firstc", "firstd"] {
        app.put_board(b, json!({"tie_break": "first"})).await;
        let r = app
            .send_json(
                Method::POST,
                &format!("/v1/boards/{b}/scores"),
                json!({"member": "x", "value": 2_097_151}),
            )
            .await;
        ok(r, 200).await;
    }
    // Two boards, one call each: the second call's refusal must not leave the first call written.
    let events = json!([
        {"board": "plain", "member": "u1", "value": 5},
        {"board": "firstc", "member": "y", "value": 3},
        {"board": "firstc", "member": "x", "value": 1}
    ]);
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({ "events": events }),
        400,
        Some("events"),
    )
    .await;
    assert_eq!(batch_errors(&v), [(2, "value")], "{v}");
    assert!(v["detail"].as_str().unwrap().contains("1 of 3"), "{v}");
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("2097152"),
        "{v}"
    );
    // 700 events over two chunks of one board and one more board: a refusal in each chunk, one
    // that only the first chunk's sum causes, and one on the other board.
    let mut events: Vec<Value> = (0..700)
        .map(|i| json!({"board": "firstc", "member": format!("n{i}"), "value": 1}))
        .collect();
    events[10] = json!({"board": "firstc", "member": "z", "value": 1_000_000});
    events[20] = json!({"board": "firstc", "member": "x", "value": 1});
    events[550] = json!({"board": "firstc", "member": "z", "value": 1_200_000});
    events[560] = json!({"board": "firstc", "member": "z", "value": 1_000_000});
    events[600] = json!({"board": "firstc", "member": "x", "value": -1});
    events.push(json!({"board": "firstd", "member": "x", "value": 5}));
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({ "events": events }),
        400,
        Some("events"),
    )
    .await;
    let got = batch_errors(&v);
    // 550 takes z to 2,200,000; 560 is fine once 550 is not applied (2,000,000); 600 lowers x.
    assert_eq!(got, [(20, "value"), (550, "value"), (700, "value")], "{v}");
    assert!(v["detail"].as_str().unwrap().contains("3 of 701"), "{v}");
    for (b, members) in [("plain", 0), ("firstc", 1), ("firstd", 1)] {
        let v = ok(app.get(&format!("/v1/boards/{b}")).await, 200).await;
        assert_eq!(v["members"], members, "nothing was written to {b}: {v}");
    }
    let v = ok(app.get("/v1/boards/firstc/members/x").await, 200).await;
    assert_eq!(v["score"], 2_097_151.0, "{v}");
    // Without the refused events the same batch is taken whole, with the sums it checked.
    let events: Vec<Value> = events
        .into_iter()
        .enumerate()
        .filter(|(i, _)| ![20, 550, 700].contains(i))
        .map(|(_, e)| e)
        .collect();
    let r = app
        .send_json(
            Method::POST,
            "/v1/scores/batch",
            json!({ "events": events }),
        )
        .await;
    let v = ok(r, 200).await;
    assert_eq!(v["accepted"], 698, "{v}");
    let v = ok(app.get("/v1/boards/firstc/members/z").await, 200).await;
    assert_eq!(v["score"], 2_000_000.0, "{v}");
    let v = ok(app.get("/v1/boards/firstc/members/x").await, 200).await;
    assert_eq!(v["score"], 2_097_150.0, "{v}");
    // A single event's sum is refused by its script (and counted as a refusal on /metrics:
    // http::observability::each_script_refusal_counts_once_as_refused_not_as_a_redis_error).
    let r = app
        .send_json(
            Method::POST,
            "/v1/boards/firstc/scores",
            json!({"member": "x", "value": 2}),
        )
        .await;
    problem(r, 400, Some("value")).await;
}

#[tokio::test]
async fn a_trimmed_board_judges_each_event_after_the_trims_before_it_and_a_refusal_writes_nothing()
{
    let app = TestApp::spawn().await;
    app.put_board("plain", json!({})).await;
    // desc, one member kept, scores within ±2,097,151 (tie_break first on the all-time window).
    app.put_board("kept", json!({"tie_break": "first", "max_members": 1}))
        .await;
    let single = |member: &str, value: i64| {
        app.send_json(
            Method::POST,
            "/v1/boards/kept/scores",
            json!({"member": member, "value": value}),
        )
    };
    ok(single("x", 1_000_000).await, 200).await;
    let score_of = |member: &'static str| {
        let app = &app;
        async move {
            let r = app.get(&format!("/v1/boards/kept/members/{member}")).await;
            match r.status().as_u16() {
                404 => None,
                _ => ok(r, 200).await["score"].as_f64(),
            }
        }
    };
    // m is trimmed by its first event and starts again from nothing at its second, which trims x;
    // its third would take it to 2,200,000. One call: the refusal must undo the first two.
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({"events": [
            {"board": "kept", "member": "m", "value": -1_500_000},
            {"board": "kept", "member": "m", "value": 1_600_000},
            {"board": "kept", "member": "m", "value": 600_000}
        ]}),
        400,
        Some("events"),
    )
    .await;
    assert_eq!(batch_errors(&v), [(2, "value")], "{v}");
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("2200000"),
        "{v}"
    );
    assert_eq!(
        score_of("x").await,
        Some(1_000_000.0),
        "nothing was written"
    );
    assert_eq!(score_of("m").await, None, "nothing was written");
    // The same over two calls (another board first): the check before writing judges it the same.
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({"events": [
            {"board": "plain", "member": "u", "value": 1},
            {"board": "kept", "member": "m", "value": -1_500_000},
            {"board": "kept", "member": "m", "value": 1_600_000},
            {"board": "kept", "member": "m", "value": 600_000}
        ]}),
        400,
        Some("events"),
    )
    .await;
    assert_eq!(batch_errors(&v), [(3, "value")], "{v}");
    let v = ok(app.get("/v1/boards/plain").await, 200).await;
    assert_eq!(v["members"], 0, "nothing was written to plain: {v}");
    assert_eq!(score_of("x").await, Some(1_000_000.0));
    // Sums that would leave the range only if nothing were trimmed are taken, as one by one:
    // each -2,000,000 finds w trimmed away by the one before.
    let r = app
        .send_json(
            Method::POST,
            "/v1/scores/batch",
            json!({"events": [
                {"board": "plain", "member": "u", "value": 1},
                {"board": "kept", "member": "w", "value": -2_000_000},
                {"board": "kept", "member": "w", "value": -2_000_000},
                {"board": "kept", "member": "m", "value": -1_500_000},
                {"board": "kept", "member": "m", "value": 1_600_000}
            ]}),
        )
        .await;
    assert_eq!(ok(r, 200).await["accepted"], 5);
    assert_eq!(score_of("m").await, Some(1_600_000.0));
    assert_eq!(score_of("x").await, None, "trimmed by m's return");
    assert_eq!(score_of("w").await, None);
    let r = app
        .send_json(
            Method::POST,
            "/v1/scores/batch",
            json!({"events": [
                {"board": "kept", "member": "w", "value": -2_000_000},
                {"board": "kept", "member": "w", "value": -2_000_000}
            ]}),
        )
        .await;
    assert_eq!(ok(r, 200).await["accepted"], 2);
}

#[tokio::test]
async fn a_batch_is_validated_whole_and_lists_every_invalid_event() {
    let app = TestApp::spawn().await;
    app.put_board("batch", json!({})).await;
    let nine: Vec<String> = (0..9).map(|i| format!("s{i}")).collect();
    let events = json!([
        {"board": "batch", "member": "ok0", "value": 1},
        {"board": "batch", "member": "b", "value": "x"},
        {"board": "batch", "member": "ok2", "value": 2},
        {"board": "nope", "member": "c", "value": 1},
        {"board": "batch", "member": "d", "value": 1, "colour": "red"},
        {"board": "batch", "member": "e", "value": 1, "at": "yesterday"},
        {"board": "batch", "member": "f", "value": 1, "scopes": nine},
        {"board": "batch", "member": "", "value": 1},
        5,
        {"board": "batch", "value": 1},
        {"board": "b a d", "member": "g", "value": 1},
        ["batch", "h", 1]
    ]);
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({"events": events}),
        400,
        Some("events"),
    )
    .await;
    let errors = v["errors"].as_array().expect("an errors array");
    let got = batch_errors(&v);
    assert_eq!(
        got,
        [
            (1, "value"),
            (3, "board"),
            (4, "colour"),
            (5, "at"),
            (6, "scopes"),
            (7, "member"),
            (8, "event"),
            (9, "member"),
            (10, "board"),
            (11, "event"),
        ],
        "{v}"
    );
    for e in errors {
        assert!(
            e["detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty() && !d.contains(" at line ")),
            "each error gives its reason, without a position inside the event: {e}"
        );
    }
    assert!(v["detail"].as_str().unwrap().contains("10 of 12"), "{v}");
    let v = ok(app.get("/v1/boards/batch/top").await, 200).await;
    assert_eq!(v["total"], 0, "nothing was written");
    // Laid out over lines, as a person would write it: the same events are found wrong.
    let v = raw_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        "{\"events\": [\n  {\"board\": \"batch\", \"member\": \"ok\", \"value\": 1},\n  \
         {\"board\": \"batch\",\n   \"member\": \"b\", \"value\": \"x\"},\n  \
         [ \"batch\", \"h\", 1 ]\n]}",
        400,
        Some("events"),
    )
    .await;
    let got = batch_errors(&v);
    assert_eq!(got, [(1, "value"), (2, "event")], "{v}");
    // Size bounds.
    send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({"events": []}),
        400,
        Some("events"),
    )
    .await;
    send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({}),
        400,
        Some("events"),
    )
    .await;
    send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({"events": [], "extra": true}),
        400,
        Some("extra"),
    )
    .await;
    let ev = json!({"board": "batch", "member": "m", "value": 1});
    let too_many = vec![ev; 10_001];
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({"events": too_many}),
        400,
        Some("events"),
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("10000"), "{v}");
    let full: Vec<Value> = (0..10_000)
        .map(|i| json!({"board": "batch", "member": format!("m{}", i % 500), "value": 1}))
        .collect();
    let v = ok(
        app.send_json(Method::POST, "/v1/scores/batch", json!({"events": full}))
            .await,
        200,
    )
    .await;
    assert_eq!(v, json!({"accepted": 10000, "duplicates": 0}));
    let v = ok(app.get("/v1/boards/batch/top?limit=1").await, 200).await;
    assert_eq!(v["total"], 500);
    assert_eq!(v["entries"][0]["score"], 20.0);
}
