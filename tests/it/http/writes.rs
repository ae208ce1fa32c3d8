//! Single writes and their event ids: a retry is a duplicate, another event under the same id a 409.

use reqwest::Method;
use serde_json::{json, Value};

use super::{ok, problem, send_problem};
use crate::server::TestApp;

#[tokio::test]
async fn event_ids_make_submissions_idempotent() {
    let app = TestApp::spawn().await;
    app.put_board("idem", json!({})).await;
    let ev = json!({"member": "a", "value": 5, "event_id": "once", "at": "2026-01-02T03:04:05Z"});
    let v = ok(
        app.send_json(Method::POST, "/v1/boards/idem/scores", ev.clone())
            .await,
        200,
    )
    .await;
    assert_eq!(v["duplicate"], false);
    let v = ok(
        app.send_json(Method::POST, "/v1/boards/idem/scores", ev)
            .await,
        200,
    )
    .await;
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["results"][0]["score"], 5.0);
}

#[tokio::test]
async fn an_event_id_reused_for_another_event_is_a_409_naming_it() {
    let app = TestApp::spawn().await;
    app.put_board("reuse", json!({})).await;
    let post = |body: Value| app.send_json(Method::POST, "/v1/boards/reuse/scores", body);
    let first =
        json!({"member": "alice", "value": 10, "event_id": "ev-1", "scopes": ["c:1", "c:2"]});
    ok(post(first).await, 200).await;
    // Its retry, scopes in another order: a duplicate.
    let again =
        json!({"member": "alice", "value": 10, "event_id": "ev-1", "scopes": ["c:2", "c:1"]});
    let v = ok(post(again).await, 200).await;
    assert_eq!(v["duplicate"], true, "{v}");
    // Another event under it.
    let bob = json!({"member": "bob", "value": 10, "event_id": "ev-1"});
    let v = problem(post(bob).await, 409, Some("event_id")).await;
    assert_eq!(v["type"], "urn:rankd:problem:event-id-reused", "{v}");
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({"events": [
            {"board": "reuse", "member": "carol", "value": 1},
            {"board": "reuse", "member": "alice", "value": 11, "event_id": "ev-1", "scopes": ["c:1", "c:2"]}
        ]}),
        409,
        Some("events[1].event_id"),
    )
    .await;
    assert_eq!(v["type"], "urn:rankd:problem:event-id-reused", "{v}");
    assert_eq!(app.get("/v1/boards/reuse/members/bob").await.status(), 404);
    assert_eq!(
        app.get("/v1/boards/reuse/members/carol").await.status(),
        404
    );
}

/// Concurrent single writes to one board share script calls, and each keeps its own answer: each
/// client posts 1 to a member of its own, again and again, and its i-th answer says score i on
/// every key, with the rank before the write no better than the rank after (only its own score
/// moved in between). The server's `rankd_write_call_events` counts fewer calls than events. On
/// Redis and on the embedded engine, each a `rankd serve` of its own (its own /metrics).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_to_one_board_share_calls_and_each_keeps_its_answer() {
    const CLIENTS: usize = 32;
    const EACH: usize = 15;
    for on_redis in [true, false] {
        let keys = crate::cleanup::Keyspace::new(crate::helpers::Redis::Standalone);
        let dir = crate::cleanup::ScratchDir::new("write-share");
        let port = crate::server::free_port();
        let _server =
            crate::helpers::spawn_rankd(port, "/readyz", std::time::Duration::from_secs(60), |c| {
                c.env_remove("RANKD_DATABASE_URL");
                if on_redis {
                    c.env("RANKD_REDIS_URL", crate::helpers::Redis::Standalone.url())
                        .env("RANKD_KEY_PREFIX", keys.prefix());
                } else {
                    c.env_remove("RANKD_REDIS_URL")
                        .env("RANKD_DATA_DIR", dir.path());
                }
            })
            .await;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let r = http
            .put(format!("{base}/v1/boards/hot"))
            .json(&json!({"windows": ["all", "weekly"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (http, base) = (http.clone(), base.clone());
                tokio::spawn(async move {
                    for i in 1..=EACH {
                        let v: Value = http
                            .post(format!("{base}/v1/boards/hot/scores"))
                            .json(&json!({"member": format!("m{c}"), "value": 1, "scopes": [format!("s{}", c % 4)]}))
                            .send()
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                        let results = v["results"].as_array().unwrap_or_else(|| panic!("{v}"));
                        assert_eq!(results.len(), 4, "{v}");
                        for k in results {
                            assert_eq!(k["score"], i as f64, "client {c}, write {i}: {v}");
                            let rank = k["rank"].as_u64().unwrap();
                            match k["previous_rank"].as_u64() {
                                None => assert_eq!(i, 1, "{v}"),
                                Some(before) => assert!(before >= rank, "{v}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let read = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} on /metrics:\n{text}"))
        };
        let (events, calls) = (
            read("rankd_write_call_events_sum"),
            read("rankd_write_call_events_count"),
        );
        assert_eq!(events, (CLIENTS * EACH) as f64, "on Redis: {on_redis}");
        assert!(
            calls < events,
            "on Redis: {on_redis}: {calls} calls for {events} events"
        );
    }
}

/// A scope new to a board past its max_scopes is a 400 naming `scopes` and the limit, alone or in
/// a batch (listed as event i's `scopes`, `events[i].scopes` in the detail, nothing of the batch
/// written); the definition shows the limit.
#[tokio::test]
async fn a_scope_past_max_scopes_is_a_400_naming_scopes_and_the_limit() {
    let app = TestApp::spawn().await;
    app.put_board("few", json!({"max_scopes": 2})).await;
    let def = ok(app.get("/v1/boards/few").await, 200).await;
    assert_eq!(def["max_scopes"], 2, "{def}");
    let post = |body: Value| app.send_json(Method::POST, "/v1/boards/few/scores", body);
    ok(
        post(json!({"member": "a", "value": 1, "scopes": ["c:1", "c:2"]})).await,
        200,
    )
    .await;
    let v = problem(
        post(json!({"member": "b", "value": 1, "scopes": ["c:1", "c:3"]})).await,
        400,
        Some("scopes"),
    )
    .await;
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("at most 2 scopes") && detail.contains("c:3"),
        "{v}"
    );
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({"events": [
            {"board": "few", "member": "c", "value": 1, "scopes": ["c:2"]},
            {"board": "few", "member": "d", "value": 1, "scopes": ["c:9"]}
        ]}),
        400,
        None,
    )
    .await;
    assert_eq!(super::batch_errors(&v), [(1, "scopes")], "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("events[1].scopes"),
        "{v}"
    );
    assert_eq!(app.get("/v1/boards/few/members/c").await.status(), 404);
    // A definition over the range names max_scopes.
    let v = send_problem(
        &app,
        Method::PUT,
        "/v1/boards/many",
        json!({"max_scopes": 0}),
        400,
        Some("max_scopes"),
    )
    .await;
    assert!(
        v["detail"].as_str().unwrap().contains("1 to 1000000"),
        "{v}"
    );
}
