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
