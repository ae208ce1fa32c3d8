//! Reads: top, entries (offset and cursor paging, also under concurrent writes), score ranges,
//! members, around and lookups, and the defaults of each.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::{call, get_problem, ok};
use crate::server::{TestApp, READER, WRITER};

#[tokio::test]
async fn reads_answer_top_entries_score_ranges_members_around_and_lookups() {
    let app = TestApp::spawn().await;
    app.put_board("reads", json!({"windows": ["all", "monthly"]}))
        .await;
    let events: Vec<Value> = (1..=10)
        .map(|i| {
            let scopes = if i % 2 == 0 { json!(["even"]) } else { json!([]) };
            json!({"board": "reads", "member": format!("m{i:02}"), "value": i * 10, "scopes": scopes})
        })
        .collect();
    let v = ok(
        app.send_json(Method::POST, "/v1/scores/batch", json!({"events": events}))
            .await,
        200,
    )
    .await;
    assert_eq!(v, json!({"accepted": 10, "duplicates": 0}));
    let v = ok(app.get("/v1/boards/reads/top?limit=3").await, 200).await;
    assert_eq!(v["total"], 10);
    let top: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["member"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["m10", "m09", "m08"]);
    assert!(v.get("next").is_none(), "top has no cursor: {v}");
    // Offset paging.
    let v = ok(
        app.get("/v1/boards/reads/entries?offset=8&limit=5").await,
        200,
    )
    .await;
    assert_eq!(
        v["entries"],
        json!([
            {"rank": 9, "member": "m02", "score": 20.0},
            {"rank": 10, "member": "m01", "score": 10.0}
        ])
    );
    // Cursor paging covers the board exactly.
    let mut seen = Vec::new();
    let mut path = "/v1/boards/reads/entries?limit=4".to_owned();
    loop {
        let v = ok(app.get(&path).await, 200).await;
        for e in v["entries"].as_array().unwrap() {
            seen.push(e["member"].as_str().unwrap().to_owned());
        }
        match v["next"].as_str() {
            Some(c) => path = format!("/v1/boards/reads/entries?limit=4&after={c}"),
            None => {
                // The field is part of the page's shape: present, and null on the last page.
                assert_eq!(v.get("next"), Some(&serde_json::Value::Null), "{v}");
                break;
            }
        }
    }
    let all: Vec<String> = (1..=10).rev().map(|i| format!("m{i:02}")).collect();
    assert_eq!(seen, all);
    // Score range.
    let v = ok(
        app.get("/v1/boards/reads/scores?min=25&max=55&limit=10")
            .await,
        200,
    )
    .await;
    let scores: Vec<f64> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores, [50.0, 40.0, 30.0]);
    // Scope, window and period views.
    let v = ok(app.get("/v1/boards/reads/top?scope=even").await, 200).await;
    assert_eq!(v["total"], 5);
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let v = ok(
        app.get(&format!(
            "/v1/boards/reads/top?window=monthly&period={month}&scope=even&limit=1"
        ))
        .await,
        200,
    )
    .await;
    assert_eq!(v["period"], month.as_str());
    assert_eq!(v["entries"][0]["member"], "m10");
    // A member, display data, around, lookup.
    let v = ok(
        app.send_json(
            Method::PUT,
            "/v1/boards/reads/members/m05",
            json!({"display_name": "Five", "data": {"avatar": 5}}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(v["display_name"], "Five");
    let v = ok(app.get("/v1/boards/reads/members/m05").await, 200).await;
    assert_eq!(v["rank"], 6);
    assert_eq!(v["total"], 10);
    assert_eq!(v["display_name"], "Five");
    assert_eq!(v["data"], json!({"avatar": 5}));
    let v = ok(
        app.get("/v1/boards/reads/members/m05/around?radius=2")
            .await,
        200,
    )
    .await;
    let around: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["member"].as_str().unwrap())
        .collect();
    assert_eq!(around, ["m07", "m06", "m05", "m04", "m03"]);
    let v = ok(
        app.send_json(
            Method::POST,
            "/v1/boards/reads/members/lookup",
            json!({"members": ["m01", "zz", "m10"]}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(v["total"], 10);
    assert_eq!(v["missing"], json!(["zz"]));
    assert_eq!(v["entries"][0]["member"], "m10");
    // Removing a member.
    ok(
        call(
            &app,
            Method::DELETE,
            "/v1/boards/reads/members/m05",
            Some(WRITER),
            None,
        )
        .await,
        204,
    )
    .await;
    get_problem(&app, "/v1/boards/reads/members/m05", 404, Some("member")).await;
    // Members with characters that need percent-encoding.
    app.submit("reads", "ünï cödé/42", 3.0).await;
    let v = ok(
        app.get("/v1/boards/reads/members/%C3%BCn%C3%AF%20c%C3%B6d%C3%A9%2F42")
            .await,
        200,
    )
    .await;
    assert_eq!(v["member"], "ünï cödé/42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_sees_every_unchanging_member_exactly_once_while_others_change() {
    let app = TestApp::spawn().await;
    app.put_board("cursor", json!({"policy": "set"})).await;
    // 200 members that never change, 50 that keep moving, all scores in 0..2000.
    let mut events: Vec<Value> = (0..200)
        .map(|i| json!({"board": "cursor", "member": format!("s{i:03}"), "value": i * 10 + 5}))
        .collect();
    events.extend(
        (0..50).map(|i| json!({"board": "cursor", "member": format!("c{i:02}"), "value": i * 40})),
    );
    ok(
        app.send_json(Method::POST, "/v1/scores/batch", json!({"events": events}))
            .await,
        200,
    )
    .await;

    let writes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (http, url) = (app.http.clone(), app.url("/v1/scores/batch"));
        let (writes, stop) = (writes.clone(), stop.clone());
        tokio::spawn(async move {
            let mut round: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                // Move every churning member somewhere else (up and down across the whole range,
                // scores equal to stable members' included), and add a newcomer.
                let mut events: Vec<Value> = (0..50u64)
                    .map(|i| {
                        let v = ((i * 7919 + round * 104_729) % 2100) as i64 - 50;
                        json!({"board": "cursor", "member": format!("c{i:02}"), "value": v})
                    })
                    .collect();
                let newcomer = format!("n{round:05}");
                events.push(
                    json!({"board": "cursor", "member": newcomer, "value": (round * 37) % 2000}),
                );
                let r = http
                    .post(&url)
                    .bearer_auth(WRITER)
                    .json(&json!({"events": events}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                writes.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let mut seen: Vec<(String, f64)> = Vec::new();
    let mut path = "/v1/boards/cursor/entries?limit=7".to_owned();
    let mut pages = 0;
    loop {
        // Let at least one batch of writes land between any two pages.
        let before = writes.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while writes.load(Ordering::SeqCst) == before {
            assert!(Instant::now() < deadline, "the writer stalled");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let v = ok(
            call(&app, Method::GET, &path, Some(READER), None).await,
            200,
        )
        .await;
        pages += 1;
        for e in v["entries"].as_array().unwrap() {
            seen.push((
                e["member"].as_str().unwrap().to_owned(),
                e["score"].as_f64().unwrap(),
            ));
        }
        match v["next"].as_str() {
            Some(c) => path = format!("/v1/boards/cursor/entries?limit=7&after={c}"),
            None => break,
        }
        assert!(pages < 1000, "paging does not end");
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    assert!(pages >= 30, "{pages} pages");
    // The walk never goes back: scores never rise from one entry to the next.
    for w in seen.windows(2) {
        assert!(
            w[0].1 >= w[1].1,
            "the cursor went back: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let stable: Vec<&str> = seen
        .iter()
        .map(|(m, _)| m.as_str())
        .filter(|m| m.starts_with('s'))
        .collect();
    let want: Vec<String> = (0..200).rev().map(|i| format!("s{i:03}")).collect();
    assert_eq!(
        stable, want,
        "every unchanging member exactly once, in order"
    );
}

#[tokio::test]
async fn reads_without_a_limit_or_radius_use_the_documented_defaults() {
    let app = TestApp::spawn().await;
    app.put_board("sixty", json!({})).await;
    let events: Vec<Value> = (0..60)
        .map(|i| json!({"board": "sixty", "member": format!("m{i:02}"), "value": i}))
        .collect();
    let r = app
        .send_json(
            Method::POST,
            "/v1/scores/batch",
            json!({ "events": events }),
        )
        .await;
    ok(r, 200).await;
    let count = |v: &Value| v["entries"].as_array().unwrap().len();
    let top = ok(app.get("/v1/boards/sixty/top").await, 200).await;
    assert_eq!((count(&top), top["total"].as_u64()), (20, Some(60)));
    let page = ok(app.get("/v1/boards/sixty/entries").await, 200).await;
    assert_eq!(count(&page), 50);
    assert_eq!(page["entries"][0]["rank"], 1);
    // m29 ranks 31st of 60: five on each side.
    let around = ok(app.get("/v1/boards/sixty/members/m29/around").await, 200).await;
    let ranks: Vec<u64> = around["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, (26..=36).collect::<Vec<u64>>());
}
