//! A board's life over HTTP: created, scored, read, listed, updated and deleted, and the 404s that
//! name what does not exist.

use reqwest::Method;
use serde_json::{json, Value};

use super::{call, get_problem, ok, problem, send_problem};
use crate::server::{TestApp, ADMIN};

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
                {"board": "xp", "member": "u42", "value": 10, "scopes": ["class:7"], "event_id": "e1"}
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
}

#[tokio::test]
async fn boards_are_listed_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let v = ok(app.get("/v1/boards").await, 200).await;
    assert_eq!(v, json!({"boards": []}));
    let def =
        json!({"order": "asc", "policy": "best", "windows": ["daily", "all"], "max_members": 10});
    let v = ok(
        app.send_json(Method::PUT, "/v1/boards/life", def.clone())
            .await,
        201,
    )
    .await;
    assert_eq!(v["board"], "life");
    assert_eq!(v["order"], "asc");
    assert_eq!(v["policy"], "best");
    assert_eq!(
        v["windows"],
        json!(["all", "daily"]),
        "windows in canonical order"
    );
    assert_eq!(v["max_members"], 10);
    app.put_board("other", json!({})).await;
    let v = ok(app.get("/v1/boards").await, 200).await;
    let names: Vec<&str> = v["boards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["board"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["life", "other"]);
    app.submit("life", "a", 9.0).await;
    app.submit("life", "b", 7.0).await;
    let v = ok(app.get("/v1/boards/life").await, 200).await;
    assert_eq!(v["members"], 2);
    // Allowed change: more members kept.
    let v = ok(
        app.send_json(
            Method::PUT,
            "/v1/boards/life",
            json!({"order": "asc", "policy": "best", "windows": ["all", "daily"], "max_members": 20}),
        )
            .await,
        200,
    )
    .await;
    assert_eq!(v["max_members"], 20);
    // Refused change, naming the field.
    send_problem(
        &app,
        Method::PUT,
        "/v1/boards/life",
        json!({"order": "desc", "policy": "best", "windows": ["all", "daily"]}),
        400,
        Some("order"),
    )
    .await;
    ok(
        call(&app, Method::DELETE, "/v1/boards/life", Some(ADMIN), None).await,
        204,
    )
    .await;
    let v = get_problem(&app, "/v1/boards/life", 404, Some("board")).await;
    assert!(v["detail"].as_str().unwrap().contains("life"), "{v}");
    get_problem(&app, "/v1/boards/life/top", 404, Some("board")).await;
    let r = call(&app, Method::DELETE, "/v1/boards/life", Some(ADMIN), None).await;
    problem(r, 404, Some("board")).await;
    get_problem(&app, "/v1/boards/bad%20id", 400, Some("board")).await;
}

#[tokio::test]
async fn unknown_boards_and_members_answer_404_naming_them() {
    let app = TestApp::spawn().await;
    app.put_board("known", json!({})).await;
    app.submit("known", "here", 1.0).await;
    for path in [
        "/v1/boards/ghost",
        "/v1/boards/ghost/top",
        "/v1/boards/ghost/entries",
        "/v1/boards/ghost/scores",
        "/v1/boards/ghost/members/here",
        "/v1/boards/ghost/members/here/around",
    ] {
        get_problem(&app, path, 404, Some("board")).await;
    }
    let ev = json!({"member": "x", "value": 1});
    send_problem(
        &app,
        Method::POST,
        "/v1/boards/ghost/scores",
        ev,
        404,
        Some("board"),
    )
    .await;
    send_problem(
        &app,
        Method::POST,
        "/v1/boards/ghost/members/lookup",
        json!({"members": ["here"]}),
        404,
        Some("board"),
    )
    .await;
    send_problem(
        &app,
        Method::PUT,
        "/v1/boards/ghost/members/here",
        json!({"display_name": "H"}),
        404,
        Some("board"),
    )
    .await;
    let r = call(
        &app,
        Method::DELETE,
        "/v1/boards/ghost/members/here",
        Some(ADMIN),
        None,
    )
    .await;
    problem(r, 404, Some("board")).await;
    get_problem(&app, "/v1/boards/known/members/nobody", 404, Some("member")).await;
    get_problem(
        &app,
        "/v1/boards/known/members/nobody/around",
        404,
        Some("member"),
    )
    .await;
    let v = get_problem(&app, "/v2/anything", 404, None).await;
    assert!(
        v["detail"].as_str().unwrap().contains("/v2/anything"),
        "{v}"
    );
}
