//! A refusal from each script reaches HTTP with its own status: never a 503, never a message that
//! says "unavailable" twice.
//!
//! Each refusal here is made by the script itself, not by the checks rankd runs before a call:
//! a sum only Redis can see, an event id only Redis remembers, a board another instance deleted
//! after this one cached its definition, a definition another instance changed meanwhile.

use reqwest::Method;
use serde_json::{json, Value};

use crate::server::TestApp;

/// Sends `body` (or nothing) with the admin key; returns the status and the body as JSON (Null
/// when empty).
async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = match body {
        Some(b) => app.send_json(method, path, b).await,
        None => app
            .req(method, path, Some(crate::server::ADMIN))
            .send()
            .await
            .unwrap(),
    };
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("unavailable: unavailable"),
        "{method_path}: {text}",
        method_path = path
    );
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, v)
}

fn problem_type(v: &Value) -> &str {
    v["type"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_refusal_from_each_script_reaches_http_with_its_own_status() {
    let a = TestApp::spawn().await;
    let prefix = a.config.key_prefix.clone();
    // A second instance on the same keys: it caches definitions that the first then changes.
    let b = TestApp::spawn_with(|c| c.key_prefix = prefix).await;

    // submit.lua, RANGE: a sum that leaves the board's range, which only the script can see.
    a.put_board("firstc", json!({"tie_break": "first"})).await;
    a.submit("firstc", "x", 2_097_151.0).await;
    let (status, v) = call(
        &a,
        Method::POST,
        "/v1/boards/firstc/scores",
        Some(json!({"member": "x", "value": 1})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("2097152"), "{v}");

    // submit.lua in a batch, RANGE: the same, named by its index in the batch.
    let (status, v) = call(
        &a,
        Method::POST,
        "/v1/scores/batch",
        Some(json!({"events": [
            {"board": "firstc", "member": "y", "value": 1},
            {"board": "firstc", "member": "x", "value": 1}
        ]})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errors"][0]["index"], 1, "{v}");
    assert_eq!(v["errors"][0]["field"], "value", "{v}");

    // submit.lua, REUSED: an event id the board remembers, for another event.
    a.put_board("xp", json!({})).await;
    let first = json!({"member": "u1", "value": 5, "event_id": "order-1"});
    let (status, _) = call(&a, Method::POST, "/v1/boards/xp/scores", Some(first)).await;
    assert_eq!(status, 200);
    let other = json!({"member": "u2", "value": 5, "event_id": "order-1"});
    let (status, v) = call(&b, Method::POST, "/v1/boards/xp/scores", Some(other)).await;
    assert_eq!(status, 409, "{v}");
    assert!(problem_type(&v).ends_with("event-id-reused"), "{v}");

    // board_put.lua, STALE: the second instance updates from a definition the first changed;
    // the script refuses, and the update is planned again from the current one.
    let (status, _) = call(&b, Method::GET, "/v1/boards/xp", None).await;
    assert_eq!(status, 200);
    a.put_board("xp", json!({"max_members": 1000})).await;
    let (status, v) = call(
        &b,
        Method::PUT,
        "/v1/boards/xp",
        Some(json!({"max_members": 2000})),
    )
    .await;
    assert_eq!(status, 200, "{v}");

    // NOBOARD from every script that takes a board: the second instance has the definition
    // cached, the first deletes the board under it.
    let writes: [(Method, &str, Option<Value>); 4] = [
        (
            Method::POST,
            "/v1/boards/gone/scores",
            Some(json!({"member": "u1", "value": 1})),
        ),
        (
            Method::PUT,
            "/v1/boards/gone/members/u1",
            Some(json!({"display_name": "Ada"})),
        ),
        (Method::DELETE, "/v1/boards/gone/members/u1", None),
        (Method::GET, "/v1/boards/gone/top", None),
    ];
    for (method, path, body) in writes {
        a.put_board("gone", json!({})).await;
        a.submit("gone", "u1", 1.0).await;
        // Cache the definition in the second instance.
        let (status, v) = call(&b, Method::GET, "/v1/boards/gone/top", None).await;
        assert_eq!(status, 200, "{v}");
        let (status, _) = call(&a, Method::DELETE, "/v1/boards/gone", None).await;
        assert_eq!(status, 204);
        let (status, v) = call(&b, method.clone(), path, body).await;
        assert_eq!(status, 404, "{method} {path}: {v}");
        assert!(
            problem_type(&v).ends_with("not-found"),
            "{method} {path}: {v}"
        );
    }
    // delete_board.lua, NOBOARD: a delete of a board another instance deleted meanwhile.
    a.put_board("gone", json!({})).await;
    let (status, _) = call(&b, Method::GET, "/v1/boards/gone/top", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&a, Method::DELETE, "/v1/boards/gone", None).await;
    assert_eq!(status, 204);
    let (status, v) = call(&b, Method::DELETE, "/v1/boards/gone", None).await;
    assert_eq!(status, 404, "{v}");

    b.stop().await;
    a.stop().await;
}
