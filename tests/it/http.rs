//! The HTTP API end to end: real server, real Redis, real client.

use reqwest::Method;
use serde_json::{json, Value};

use crate::server::{TestApp, ADMIN, READER, WRITER};

async fn body(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let v = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

#[tokio::test]
async fn a_board_can_be_created_scored_and_read_over_http() {
    let app = TestApp::spawn().await;
    let (s, v) = body(
        app.send_json(
            Method::PUT,
            "/v1/boards/xp",
            json!({"windows": ["all", "weekly"]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["board"], "xp");
    assert_eq!(v["windows"], json!(["all", "weekly"]));
    let (s, _) = body(
        app.send_json(
            Method::PUT,
            "/v1/boards/xp",
            json!({"windows": ["all", "weekly"]}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = body(
        app.send_json(
            Method::POST,
            "/v1/boards/xp/scores",
            json!({"member": "u42", "value": 10, "scopes": ["class:7"], "event_id": "e1"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["results"].as_array().unwrap().len(), 4);
    assert_eq!(
        v["results"][0],
        json!({"window": "all", "period": null, "scope": null, "score": 10.0, "rank": 1, "previous_rank": null})
    );
    let (s, v) = body(
        app.send_json(
            Method::POST,
            "/v1/scores/batch",
            json!({"events": [
                {"board": "xp", "member": "u1", "value": 30},
                {"board": "xp", "member": "u2", "value": 20, "scopes": ["class:7"]},
                {"board": "xp", "member": "u42", "value": 10, "event_id": "e1"}
            ]}),
        )
        .await,
    )
    .await;
    assert_eq!((s, v), (200, json!({"accepted": 2, "duplicates": 1})));
    let (s, v) = body(app.get("/v1/boards/xp/top?limit=2").await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 3);
    assert_eq!(
        v["entries"],
        json!([{"rank": 1, "member": "u1", "score": 30.0}, {"rank": 2, "member": "u2", "score": 20.0}])
    );
    let (s, v) = body(
        app.get("/v1/boards/xp/top?scope=class:7&window=weekly")
            .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 2);
    assert!(v["period"].as_str().unwrap().contains("-W"));
    let (s, v) = body(app.get("/v1/boards/xp/members/u42").await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["rank"].clone(), v["total"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(v["percentile"], 0.0);
    let (s, v) = body(app.get("/v1/boards/xp/members/u42/around?radius=1").await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    let (s, v) = body(app.get("/v1/boards/xp").await).await;
    assert_eq!((s, v["members"].clone()), (200, json!(3)));
    app.send_json(Method::DELETE, "/v1/boards/xp", Value::Null)
        .await;
    app.stop().await;
}

#[tokio::test]
async fn keys_and_roles_are_enforced() {
    let app = TestApp::spawn().await;
    app.send_json(Method::PUT, "/v1/boards/auth", json!({}))
        .await;
    let top = "/v1/boards/auth/top";
    assert_eq!(
        app.req(Method::GET, top, None)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        app.req(Method::GET, top, Some("wrong"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        app.req(Method::GET, top, Some(READER))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let post = |key| {
        app.req(Method::POST, "/v1/boards/auth/scores", Some(key))
            .json(&json!({"member": "a", "value": 1}))
    };
    assert_eq!(post(READER).send().await.unwrap().status(), 403);
    assert_eq!(post(WRITER).send().await.unwrap().status(), 200);
    assert_eq!(
        app.req(Method::DELETE, "/v1/boards/auth", Some(WRITER))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        app.req(Method::DELETE, "/v1/boards/auth", Some(ADMIN))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    app.stop().await;
}
