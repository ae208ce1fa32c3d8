//! The HTTP API end to end: real server, real Redis, real client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rankd::config::Role;
use rankd::http::routes::{Endpoint, Route, ROUTES};
use reqwest::Method;
use serde_json::{json, Value};

use crate::server::{raw, responses, TestApp, ADMIN, READER, WRITER};

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
}

// ---------------------------------------------------------------------------------------------
// Helpers: every answer is checked for a request id; every error for the problem+json shape.
// ---------------------------------------------------------------------------------------------

/// Sends a request, with a JSON body when one is given.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let r = app.req(method, path, key);
    let r = match body {
        Some(b) => r.json(b),
        None => r,
    };
    r.send().await.unwrap()
}

/// Asserts a success answer of `status` with a request id, and returns its JSON body (Null when
/// it has none).
async fn ok(r: reqwest::Response, status: u16) -> Value {
    let got = r.status().as_u16();
    assert!(
        r.headers().contains_key("x-request-id"),
        "every response has x-request-id"
    );
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// Asserts an RFC 9457 problem of `status`: problem+json, type, title, status, a detail naming
/// `field`, and `field` itself when given. Returns the body.
async fn problem(r: reqwest::Response, status: u16, field: Option<&str>) -> Value {
    let got = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .expect("every response has x-request-id")
        .to_str()
        .unwrap()
        .to_owned();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    assert_eq!(ct.as_deref(), Some("application/problem+json"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["type"].as_str().is_some_and(|t| !t.is_empty()), "{text}");
    assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()), "{text}");
    assert_eq!(v["status"], status, "{text}");
    let detail = v["detail"].as_str().expect("a detail");
    if let Some(f) = field {
        assert_eq!(v["field"], f, "{text}");
        assert!(detail.contains(f), "the detail names {f}: {text}");
    }
    if status >= 500 {
        assert_eq!(
            v["request_id"],
            id.as_str(),
            "5xx bodies carry the request id"
        );
    }
    v
}

/// `GET path` with the admin key, expecting a problem.
async fn get_problem(app: &TestApp, path: &str, status: u16, field: Option<&str>) -> Value {
    problem(app.get(path).await, status, field).await
}

/// `method path` with the admin key and a JSON body, expecting a problem.
/// The (index, field) of each event a batch problem lists.
fn batch_errors(v: &Value) -> Vec<(u64, &str)> {
    v["errors"]
        .as_array()
        .expect("an errors array")
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect()
}

async fn send_problem(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Value,
    status: u16,
    field: Option<&str>,
) -> Value {
    problem(app.send_json(method, path, body).await, status, field).await
}

/// `method path` with the admin key and a raw body (sent as application/json), expecting a problem.
async fn raw_problem(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &'static str,
    status: u16,
    field: Option<&str>,
) -> Value {
    let r = app
        .req(method, path, Some(ADMIN))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    problem(r, status, field).await
}

// ---------------------------------------------------------------------------------------------
// Every route, every role
// ---------------------------------------------------------------------------------------------

/// A request that succeeds on `route` given the fixtures of [`role_fixtures`], and its status.
fn request_for(route: &Route) -> (String, Option<Value>, u16) {
    let (path, body, status) = match route.endpoint {
        Endpoint::Healthz => ("/healthz", None, 200),
        Endpoint::Readyz => ("/readyz", None, 200),
        Endpoint::Metrics => ("/metrics", None, 200),
        Endpoint::OpenApi => ("/openapi.json", None, 200),
        Endpoint::CacheStats => ("/v1/stats/cache", None, 200),
        Endpoint::ListBoards => ("/v1/boards", None, 200),
        Endpoint::PutBoard => ("/v1/boards/roles", Some(json!({})), 200),
        Endpoint::GetBoard => ("/v1/boards/roles", None, 200),
        Endpoint::DeleteBoard => ("/v1/boards/doomed", None, 204),
        Endpoint::Submit => (
            "/v1/boards/roles/scores",
            Some(json!({"member": "a", "value": 1})),
            200,
        ),
        Endpoint::Batch => (
            "/v1/scores/batch",
            Some(json!({"events": [{"board": "roles", "member": "b", "value": 1}]})),
            200,
        ),
        Endpoint::Top => ("/v1/boards/roles/top", None, 200),
        Endpoint::Entries => ("/v1/boards/roles/entries", None, 200),
        Endpoint::ScoreRange => ("/v1/boards/roles/scores?min=0", None, 200),
        Endpoint::Lookup => (
            "/v1/boards/roles/members/lookup",
            Some(json!({"members": ["a", "nobody"]})),
            200,
        ),
        Endpoint::Member => ("/v1/boards/roles/members/a", None, 200),
        Endpoint::PutDisplay => (
            "/v1/boards/roles/members/a",
            Some(json!({"display_name": "Ann"})),
            200,
        ),
        Endpoint::RemoveMember => ("/v1/boards/roles/members/gone", None, 204),
        Endpoint::Around => ("/v1/boards/roles/members/a/around?radius=1", None, 200),
    };
    (path.to_owned(), body, status)
}

/// What the routes of [`request_for`] need: board `roles` with members `a` and `gone`, and board
/// `doomed`. Made again before every request, since some requests delete them.
async fn role_fixtures(app: &TestApp) {
    app.put_board("roles", json!({})).await;
    app.put_board("doomed", json!({})).await;
    app.submit("roles", "a", 5.0).await;
    app.submit("roles", "gone", 1.0).await;
}

#[tokio::test]
async fn every_route_answers_each_role_as_its_table_says() {
    let app = TestApp::spawn().await;
    let keys: [(&str, Option<&str>, Option<Role>); 5] = [
        ("no key", None, None),
        ("an unknown key", Some("not-a-key"), None),
        ("the reader", Some(READER), Some(Role::Read)),
        ("the writer (read+write)", Some(WRITER), Some(Role::Write)),
        ("the admin", Some(ADMIN), Some(Role::Admin)),
    ];
    for route in ROUTES {
        let (path, body, success) = request_for(route);
        for (who, key, granted) in keys {
            role_fixtures(&app).await;
            let r = call(&app, route.method.clone(), &path, key, body.as_ref()).await;
            let what = format!("{} {} by {who}", route.method, route.path);
            let allowed = match (route.role, granted) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(need), Some(have)) => {
                    have == Role::Admin || need == have || (need == Role::Read)
                }
            };
            if allowed {
                assert!(r.headers().contains_key("x-request-id"), "{what}");
                let status = r.status().as_u16();
                let text = r.text().await.unwrap();
                assert_eq!(status, success, "{what}: {text}");
            } else if key.is_none() || granted.is_none() {
                assert_eq!(
                    r.headers()
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap()),
                    Some("Bearer realm=\"rankd\""),
                    "{what}"
                );
                problem(r, 401, Some("authorization")).await;
            } else {
                let v = problem(r, 403, Some("authorization")).await;
                assert!(
                    v["detail"].as_str().unwrap().contains("role"),
                    "{what}: {v}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_path_that_does_not_decode_is_judged_after_the_key() {
    let app = TestApp::spawn().await;
    // Not UTF-8 once decoded: the route is known, its member is not valid.
    let path = "/v1/boards/any/members/u%ff";
    let r = call(&app, Method::GET, path, None, None).await;
    problem(r, 401, Some("authorization")).await;
    let r = call(&app, Method::GET, path, Some("not-a-key"), None).await;
    problem(r, 401, Some("authorization")).await;
    let r = call(&app, Method::DELETE, path, Some(READER), None).await;
    problem(r, 403, Some("authorization")).await;
    let r = call(&app, Method::GET, path, Some(READER), None).await;
    let v = problem(r, 400, Some("member")).await;
    assert!(
        v["detail"].as_str().unwrap().contains("UTF-8"),
        "the limit is named: {v}"
    );
}

#[tokio::test]
async fn public_reads_need_no_key_but_writes_and_admin_routes_still_do() {
    let app = TestApp::spawn_with(|c| {
        c.public_reads = true;
        c.api_keys
            .extend(rankd::config::ApiKey::parse_list("test-write-only-key:write").unwrap());
    })
    .await;
    app.put_board("pub", json!({})).await;
    app.submit("pub", "a", 3.0).await;
    let v = ok(
        call(&app, Method::GET, "/v1/boards/pub/top", None, None).await,
        200,
    )
    .await;
    assert_eq!(v["entries"][0]["member"], "a");
    ok(
        call(&app, Method::GET, "/v1/boards/pub/members/a", None, None).await,
        200,
    )
    .await;
    ok(
        call(&app, Method::GET, "/v1/stats/cache", None, None).await,
        200,
    )
    .await;
    // A key that is sent must still be a known one, and any known one may read.
    let r = call(&app, Method::GET, "/v1/boards/pub/top", Some("nope"), None).await;
    problem(r, 401, Some("authorization")).await;
    ok(
        call(
            &app,
            Method::GET,
            "/v1/boards/pub/top",
            Some("test-write-only-key"),
            None,
        )
        .await,
        200,
    )
    .await;
    let ev = json!({"member": "a", "value": 1});
    let r = call(&app, Method::POST, "/v1/boards/pub/scores", None, Some(&ev)).await;
    problem(r, 401, Some("authorization")).await;
    let r = call(
        &app,
        Method::POST,
        "/v1/boards/pub/scores",
        Some(READER),
        Some(&ev),
    )
    .await;
    problem(r, 403, Some("authorization")).await;
    ok(
        call(
            &app,
            Method::POST,
            "/v1/boards/pub/scores",
            Some(WRITER),
            Some(&ev),
        )
        .await,
        200,
    )
    .await;
    let r = call(&app, Method::GET, "/v1/boards", None, None).await;
    problem(r, 401, Some("authorization")).await;
    let r = call(&app, Method::DELETE, "/v1/boards/pub", None, None).await;
    problem(r, 401, Some("authorization")).await;
}

// ---------------------------------------------------------------------------------------------
// Routes end to end
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn probes_answer_without_a_key() {
    let app = TestApp::spawn().await;
    let v = ok(call(&app, Method::GET, "/healthz", None, None).await, 200).await;
    assert_eq!(v, json!({"status": "ok"}));
    let v = ok(call(&app, Method::GET, "/readyz", None, None).await, 200).await;
    assert_eq!(v, json!({"status": "ready"}));
    let r = call(&app, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json::<Value>().await.expect("openapi.json is JSON");
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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn limits_radius_and_offset_are_enforced_naming_the_field_and_the_limit() {
    let app = TestApp::spawn().await;
    app.put_board("lim", json!({})).await;
    app.submit("lim", "a", 1.0).await;
    for (path, field, limit) in [
        ("/v1/boards/lim/top?limit=1001", "limit", "1000"),
        ("/v1/boards/lim/top?limit=0", "limit", "1000"),
        ("/v1/boards/lim/entries?limit=1001", "limit", "1000"),
        ("/v1/boards/lim/scores?limit=5000", "limit", "1000"),
        (
            "/v1/boards/lim/members/a/around?radius=101",
            "radius",
            "100",
        ),
        ("/v1/boards/lim/members/a/around?radius=-1", "radius", "100"),
        ("/v1/boards/lim/entries?offset=-1", "offset", "0"),
        // Past i64, still a number: the answer names the limit, not "a whole number".
        (
            "/v1/boards/lim/top?limit=99999999999999999999",
            "limit",
            "1000",
        ),
        (
            "/v1/boards/lim/entries?offset=-99999999999999999999",
            "offset",
            "0",
        ),
    ] {
        let v = get_problem(&app, path, 400, Some(field)).await;
        assert!(v["detail"].as_str().unwrap().contains(limit), "{path}: {v}");
    }
    ok(app.get("/v1/boards/lim/top?limit=1000").await, 200).await;
    ok(
        app.get("/v1/boards/lim/members/a/around?radius=100").await,
        200,
    )
    .await;
    ok(
        app.get("/v1/boards/lim/members/a/around?radius=0").await,
        200,
    )
    .await;
    ok(app.get("/v1/boards/lim/entries?offset=0").await, 200).await;
    for (path, field) in [
        ("/v1/boards/lim/top?limit=ten", "limit"),
        ("/v1/boards/lim/top?limit=99999999999999999999", "limit"),
        ("/v1/boards/lim/entries?offset=1.5", "offset"),
        ("/v1/boards/lim/top?colour=red", "colour"),
        ("/v1/boards/lim/top?limit=1&limit=2", "limit"),
        ("/v1/boards/lim/entries?after=nonsense", "after"),
        (
            "/v1/boards/lim/entries?after=0000000000000000aa&offset=3",
            "after",
        ),
    ] {
        get_problem(&app, path, 400, Some(field)).await;
    }
    let many: Vec<String> = (0..1001).map(|i| format!("m{i}")).collect();
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/boards/lim/members/lookup",
        json!({"members": many}),
        400,
        Some("members"),
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("1000"), "{v}");
}

#[tokio::test]
async fn bad_windows_periods_scopes_and_score_bounds_are_rejected_naming_the_field() {
    let app = TestApp::spawn().await;
    app.put_board("views", json!({"windows": ["all", "weekly"]}))
        .await;
    app.submit("views", "a", 1.0).await;
    for (path, field) in [
        ("/v1/boards/views/top?window=hourly", "window"),
        (
            "/v1/boards/views/top?window=weekly&period=2026-13",
            "period",
        ),
        (
            "/v1/boards/views/top?window=weekly&period=2026-W99",
            "period",
        ),
        ("/v1/boards/views/top?period=yesterday", "period"),
        ("/v1/boards/views/top?scope=a%20b", "scope"),
        ("/v1/boards/views/members/a?scope=%7Bx%7D", "scope"),
        ("/v1/boards/views/entries?window=", "window"),
        ("/v1/boards/views/scores?min=abc", "min"),
        ("/v1/boards/views/scores?min=NaN", "min"),
        ("/v1/boards/views/scores?max=inf", "max"),
        ("/v1/boards/views/scores?max=-infinity", "max"),
        ("/v1/boards/views/scores?min=1e999", "min"),
    ] {
        get_problem(&app, path, 400, Some(field)).await;
    }
    // A window the board does not keep.
    let v = app.get("/v1/boards/views/top?window=daily").await;
    assert_eq!(v.status(), 400);
}

#[tokio::test]
async fn bad_bodies_are_rejected_naming_the_field() {
    let app = TestApp::spawn().await;
    app.put_board("bodies", json!({})).await;
    let scores = "/v1/boards/bodies/scores";
    raw_problem(
        &app,
        Method::POST,
        scores,
        "{\"member\": \"a\", ",
        400,
        Some("body"),
    )
    .await;
    raw_problem(
        &app,
        Method::POST,
        scores,
        "not json at all",
        400,
        Some("body"),
    )
    .await;
    // serde reads a struct from an array by position; the API takes objects only.
    raw_problem(&app, Method::POST, scores, "[\"a\", 1]", 400, Some("body")).await;
    raw_problem(
        &app,
        Method::POST,
        scores,
        "{\"member\": \"a\"}",
        400,
        Some("value"),
    )
    .await;
    raw_problem(
        &app,
        Method::POST,
        scores,
        "{\"member\": \"a\", \"value\": 1e999}",
        400,
        Some("value"),
    )
    .await;
    raw_problem(
        &app,
        Method::POST,
        scores,
        "{\"member\": \"a\", \"value\": NaN}",
        400,
        Some("value"),
    )
    .await;
    for (body, field) in [
        (
            json!({"member": "a", "value": 1, "colour": "red"}),
            "colour",
        ),
        (json!({"member": "a", "value": "12"}), "value"),
        (json!({"member": "a", "value": null}), "value"),
        (json!({"member": "a", "value": [1]}), "value"),
        (json!({"member": 7, "value": 1}), "member"),
        (json!({"member": "", "value": 1}), "member"),
        (json!({"member": "m".repeat(129), "value": 1}), "member"),
        (json!({"member": "a", "value": 1, "at": "yesterday"}), "at"),
        (
            json!({"member": "a", "value": 1, "at": "2026-11-26 10:00:00"}),
            "at",
        ),
        (
            json!({"member": "a", "value": 1, "scopes": (0..9).map(|i| format!("s{i}")).collect::<Vec<_>>()}),
            "scopes",
        ),
        (
            json!({"member": "a", "value": 1, "scopes": ["ok", "b a d"]}),
            "scopes[1]",
        ),
        (
            json!({"member": "a", "value": 1, "scopes": ["x", "x"]}),
            "scopes[1]",
        ),
        (
            json!({"member": "a", "value": 1, "event_id": ""}),
            "event_id",
        ),
    ] {
        send_problem(&app, Method::POST, scores, body, 400, Some(field)).await;
    }
    // Definitions.
    for (body, field) in [
        (json!({"windows": ["hourly"]}), "windows[0]"),
        (json!({"windows": []}), "windows"),
        (json!({"order": "sideways"}), "order"),
        (json!({"retention_periods": 1001}), "retention_periods"),
        (json!({"max_members": 0}), "max_members"),
        (json!({"colour": "red"}), "colour"),
    ] {
        send_problem(
            &app,
            Method::PUT,
            "/v1/boards/newdef",
            body,
            400,
            Some(field),
        )
        .await;
    }
    // Display data and lookups.
    app.submit("bodies", "a", 1.0).await;
    for (body, field) in [
        (json!({"display_name": "A", "colour": "red"}), "colour"),
        (json!({"display_name": ""}), "display_name"),
        (json!({"data": {"blob": "x".repeat(5000)}}), "data"),
        (json!({"data": [1, 2]}), "data"),
    ] {
        send_problem(
            &app,
            Method::PUT,
            "/v1/boards/bodies/members/a",
            body,
            400,
            Some(field),
        )
        .await;
    }
    for (body, field) in [
        (json!({"members": []}), "members"),
        (json!({"members": ["a", ""]}), "members[1]"),
        (json!({"members": ["a"], "extra": 1}), "extra"),
    ] {
        send_problem(
            &app,
            Method::POST,
            "/v1/boards/bodies/members/lookup",
            body,
            400,
            Some(field),
        )
        .await;
    }
    // Only JSON is accepted.
    let r = app
        .req(Method::POST, scores, Some(ADMIN))
        .header("content-type", "text/plain")
        .body("{\"member\": \"a\", \"value\": 1}")
        .send()
        .await
        .unwrap();
    problem(r, 415, Some("content-type")).await;
    for ct in ["application/jsonl", "application/json; charset=utf-16"] {
        let r = app
            .req(Method::POST, scores, Some(ADMIN))
            .header("content-type", ct)
            .body("{\"member\": \"a\", \"value\": 1}")
            .send()
            .await
            .unwrap();
        problem(r, 415, Some("content-type")).await;
    }
    // Two bodies back to back: not the first taken and the second dropped.
    let v = raw_problem(
        &app,
        Method::POST,
        scores,
        "{\"member\": \"a\", \"value\": 1}{\"member\": \"b\", \"value\": 7}",
        400,
        Some("body"),
    )
    .await;
    assert!(
        v["detail"].as_str().unwrap().contains("nothing after it"),
        "{v}"
    );
    // Ids a client would resolve as a path segment (`..` would address the board itself).
    for member in [".", ".."] {
        send_problem(
            &app,
            Method::POST,
            scores,
            json!({"member": member, "value": 1}),
            400,
            Some("member"),
        )
        .await;
    }
    let v = send_problem(
        &app,
        Method::POST,
        "/v1/scores/batch",
        json!({"events": [{"board": "..", "member": "x", "value": 1}]}),
        400,
        Some("events"),
    )
    .await;
    assert_eq!(batch_errors(&v), [(0, "board")], "{v}");
    // Nothing of the above was written.
    let v = ok(app.get("/v1/boards/bodies/top").await, 200).await;
    assert_eq!(v["total"], 1);
    // Media types are case-insensitive, and parameters are allowed.
    for ct in ["Application/JSON", "application/json; charset=UTF-8"] {
        let r = app
            .req(Method::POST, scores, Some(ADMIN))
            .header("content-type", ct)
            .body("{\"member\": \"c\", \"value\": 1}")
            .send()
            .await
            .unwrap();
        ok(r, 200).await;
    }
    get_problem(&app, "/v1/boards/newdef", 404, Some("board")).await;
}

#[tokio::test]
async fn routes_without_query_parameters_refuse_any_rather_than_ignore_it() {
    let app = TestApp::spawn().await;
    app.put_board("noquery", json!({})).await;
    app.submit("noquery", "u42", 1.0).await;
    // A removal "from one scope" would remove the member everywhere: refused, nothing removed.
    let r = app
        .req(
            Method::DELETE,
            "/v1/boards/noquery/members/u42?scope=class:7",
            Some(ADMIN),
        )
        .send()
        .await
        .unwrap();
    problem(r, 400, Some("scope")).await;
    let r = app
        .req(
            Method::POST,
            "/v1/boards/noquery/scores?window=weekly",
            Some(ADMIN),
        )
        .json(&json!({"member": "u42", "value": 1}))
        .send()
        .await
        .unwrap();
    problem(r, 400, Some("window")).await;
    let r = app
        .req(Method::GET, "/v1/boards/noquery?verbose=1", Some(ADMIN))
        .send()
        .await
        .unwrap();
    problem(r, 400, Some("verbose")).await;
    let v = ok(app.get("/v1/boards/noquery/members/u42").await, 200).await;
    assert_eq!(v["score"], 1.0, "nothing was removed or added: {v}");
    // Probes ignore what probes and scrapers add.
    assert_eq!(app.get("/healthz?probe=1").await.status(), 200);
    assert_eq!(app.get("/metrics?x=1").await.status(), 200);
}

#[tokio::test]
async fn a_method_a_path_does_not_serve_answers_405_with_an_allow_header() {
    let app = TestApp::spawn().await;
    for (method, path, allow) in [
        (Method::PATCH, "/v1/boards/x", "PUT, GET, DELETE"),
        (Method::POST, "/healthz", "GET"),
        (Method::HEAD, "/metrics", "GET"),
        (Method::GET, "/v1/scores/batch", "POST"),
        (Method::DELETE, "/v1/boards/x/top", "GET"),
        (Method::GET, "/v1/boards/x/members/lookup", "GET"),
        (Method::POST, "/v1/boards/x/members/y", "GET, PUT, DELETE"),
    ] {
        let r = call(&app, method.clone(), path, Some(ADMIN), None).await;
        if path.ends_with("/lookup") && method == Method::GET {
            // GET …/members/lookup is the member called "lookup".
            assert_ne!(r.status(), 405);
            continue;
        }
        assert_eq!(r.status(), 405, "{method} {path}");
        let got = r.headers()["allow"].to_str().unwrap().to_owned();
        let mut got: Vec<&str> = got.split(", ").collect();
        let mut want: Vec<&str> = allow.split(", ").collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{method} {path}");
        if method != Method::HEAD {
            problem(r, 405, None).await;
        }
    }
}

#[tokio::test]
async fn bodies_over_the_default_limit_answer_413() {
    let app = TestApp::spawn().await;
    app.put_board("big", json!({})).await;
    let limit = 1 << 20;
    assert_eq!(app.config.max_body_bytes, limit);
    // Exactly the limit is fine.
    let mut body = br#"{"member": "a", "value": 1}"#.to_vec();
    body.resize(limit, b' ');
    let r = app
        .req(Method::POST, "/v1/boards/big/scores", Some(ADMIN))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    ok(r, 200).await;
    // One byte more, declared: answered before the body is read.
    let head = format!(
        "POST /v1/boards/big/scores HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
        limit + 1
    );
    let out = raw(
        app.addr,
        head.as_bytes(),
        Duration::from_secs(5),
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(responses(&out), [413], "{}", String::from_utf8_lossy(&out));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("application/problem+json") && text.contains("1048576"),
        "{text}"
    );
}

#[tokio::test]
async fn bodies_over_a_configured_limit_answer_413_declared_or_chunked() {
    let app = TestApp::spawn_with(|c| c.max_body_bytes = 1024).await;
    app.put_board("small", json!({})).await;
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"board": "small", "member": format!("member-{i}"), "value": i}))
        .collect();
    let r = app
        .send_json(Method::POST, "/v1/scores/batch", json!({"events": events}))
        .await;
    let v = problem(r, 413, Some("body")).await;
    assert!(v["detail"].as_str().unwrap().contains("1024"), "{v}");
    // Chunked, no length declared: cut off at the limit.
    let chunk = "x".repeat(1000);
    let req = format!(
        "POST /v1/scores/batch HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
         3e8\r\n{chunk}\r\n3e8\r\n{chunk}\r\n"
    );
    let out = raw(
        app.addr,
        req.as_bytes(),
        Duration::from_secs(5),
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(responses(&out), [413], "{}", String::from_utf8_lossy(&out));
    // Under the limit is fine.
    let r = app
        .send_json(
            Method::POST,
            "/v1/boards/small/scores",
            json!({"member": "a", "value": 1}),
        )
        .await;
    ok(r, 200).await;
    let v = ok(app.get("/v1/boards/small/top").await, 200).await;
    assert_eq!(v["total"], 1, "nothing of the rejected batches was written");
}

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
    // A single event's sum is refused by its script; /metrics tells that from a Redis error.
    let r = app
        .send_json(
            Method::POST,
            "/v1/boards/firstc/scores",
            json!({"member": "x", "value": 2}),
        )
        .await;
    problem(r, 400, Some("value")).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("rankd_script_errors_total{")
                && l.contains("script=\"submit\"")
                && l.contains("kind=\"refused\"")),
        "{text}"
    );
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

// ---------------------------------------------------------------------------------------------
// The cursor under concurrent writes
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Observability
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_expose_http_script_and_score_event_series() {
    let app = TestApp::spawn().await;
    app.put_board("obs", json!({})).await;
    app.submit("obs", "a", 1.0).await;
    ok(app.get("/v1/boards/obs/top").await, 200).await;
    let r = call(&app, Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for name in [
        "rankd_http_requests_total",
        "rankd_http_request_duration_seconds",
        "rankd_script_duration_seconds",
        "rankd_score_events_total",
        "# HELP rankd_http_requests_total",
        "# HELP rankd_score_events_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("rankd_http_requests_total{")
                && l.contains("route=\"/v1/boards/{board}/top\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );
    assert!(
        text.contains("rankd_http_request_duration_seconds_bucket"),
        "durations are histograms"
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

#[tokio::test]
async fn metrics_count_score_events_by_outcome_and_definition_cache_hits() {
    // A process of its own, so that its recorder counts this test's requests and nothing else.
    let port = crate::server::free_port();
    let keys = crate::cleanup::Keyspace::new(crate::helpers::Redis::Standalone);
    let _rankd = crate::helpers::spawn_rankd(port, "/readyz", Duration::from_secs(20), |c| {
        c.args(["--redis-url", &crate::helpers::Redis::Standalone.url()])
            .args(["--key-prefix", keys.prefix()]);
    })
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    let scrape = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let series = |o: &str| format!("rankd_score_events_total{{outcome=\"{o}\"}}");
    let hits = "rankd_cache_hits_total{cache=\"definitions\"}";
    let r = http
        .put(format!("{base}/v1/boards/counted"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let text = scrape().await;
    for o in ["accepted", "duplicate", "rejected"] {
        assert_eq!(crate::helpers::series_value(&text, &series(o)), 0.0, "{o}");
    }
    let hits_before = crate::helpers::series_value(&text, hits);
    let ev = json!({"board": "counted", "member": "a", "value": 1, "event_id": "once"});
    for _ in 0..2 {
        let r = post(
            "/v1/boards/counted/scores",
            json!({"member": "a", "value": 1, "event_id": "once"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"board": "counted", "member": format!("m{i}"), "value": 1, "event_id": format!("b{i}")}))
        .chain([ev.clone(), ev])
        .collect();
    let r = post("/v1/scores/batch", json!({ "events": events }))
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"accepted": 5, "duplicates": 2})
    );
    let r = post(
        "/v1/boards/counted/scores",
        json!({"member": "", "value": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let bad = json!({"events": [
        {"board": "counted", "member": "x", "value": 1},
        {"board": "counted", "member": "", "value": 1},
        {"board": "counted", "member": "y", "value": 1},
    ]});
    assert_eq!(post("/v1/scores/batch", bad).await.unwrap().status(), 400);
    // One single and five batched accepted; one single and two batched duplicates; one single and
    // the whole refused batch of three rejected.
    let text = scrape().await;
    let got: Vec<f64> = ["accepted", "duplicate", "rejected"]
        .iter()
        .map(|o| crate::helpers::series_value(&text, &series(o)))
        .collect();
    assert_eq!(got, vec![6.0, 3.0, 4.0]);
    // The board's definition came from the cache for every write after the first.
    assert!(
        crate::helpers::series_value(&text, hits) - hits_before >= 3.0,
        "definition cache hits"
    );
    let r = http
        .delete(format!("{base}/v1/boards/counted"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_sizes_on_metrics_follow_the_boards_and_forget_deleted_ones() {
    let app = TestApp::spawn_with(|c| c.metrics_sample = Duration::from_millis(100)).await;
    // Other tests' apps share the process-wide recorder; board sizes are each app's own.
    let line = |board: &str, n: u64| format!("rankd_board_members{{board=\"{board}\"}} {n}\n");
    app.put_board("sized", json!({})).await;
    app.put_board("gone", json!({"windows": ["daily"]})).await;
    for m in ["a", "b", "c"] {
        app.submit("sized", m, 1.0).await;
    }
    app.submit("gone", "a", 1.0).await;
    let text = app
        .metrics_until("both boards' sizes", |t| {
            t.contains(&line("sized", 3)) && t.contains(&line("gone", 1))
        })
        .await;
    assert!(
        text.contains("# TYPE rankd_board_members gauge\n"),
        "{text}"
    );
    let r = call(&app, Method::DELETE, "/v1/boards/gone", Some(ADMIN), None).await;
    assert_eq!(r.status(), 204);
    let text = app
        .metrics_until("the deleted board gone", |t| {
            !t.contains("rankd_board_members{board=\"gone\"}")
        })
        .await;
    assert!(text.contains(&line("sized", 3)), "{text}");
}

#[tokio::test]
async fn cache_stats_name_the_embedded_backend_and_count_its_keys() {
    let app = TestApp::spawn_with(|c| {
        c.redis_url = None;
        c.data_dir = None;
    })
    .await;
    let stats = || async {
        ok(
            call(&app, Method::GET, "/v1/stats/cache", Some(READER), None).await,
            200,
        )
        .await
    };
    let before = stats().await;
    assert_eq!(before["backend"]["kind"], "embedded", "{before}");
    let keys = |v: &Value| {
        v["backend"]["keys"]
            .as_u64()
            .unwrap_or_else(|| panic!("backend.keys: {v}"))
    };
    app.put_board("stats", json!({})).await;
    app.submit("stats", "a", 1.0).await;
    let after = stats().await;
    // The board's definition and its all-time key, at least.
    assert!(keys(&after) >= keys(&before) + 2, "{before} then {after}");
    assert!(after["backend"]["used_memory_bytes"].is_null(), "{after}");
}

#[tokio::test]
async fn cache_stats_report_definitions_scripts_and_the_backend() {
    let app = TestApp::spawn().await;
    app.put_board("stats", json!({})).await;
    app.submit("stats", "a", 1.0).await;
    app.submit("stats", "b", 2.0).await;
    let v = ok(
        call(&app, Method::GET, "/v1/stats/cache", Some(READER), None).await,
        200,
    )
    .await;
    for cache in ["definitions", "scripts"] {
        let c = &v["caches"][cache];
        let hits = c["hits"]
            .as_u64()
            .unwrap_or_else(|| panic!("{cache}.hits: {v}"));
        let misses = c["misses"]
            .as_u64()
            .unwrap_or_else(|| panic!("{cache}.misses: {v}"));
        let rate = c["hit_rate_percentage"]
            .as_f64()
            .unwrap_or_else(|| panic!("{cache}: {v}"));
        assert!((0.0..=100.0).contains(&rate), "{v}");
        if hits + misses > 0 {
            let want = hits as f64 * 100.0 / (hits + misses) as f64;
            assert!((rate - want).abs() < 1e-9, "{v}");
        }
    }
    assert!(v["caches"]["scripts"]["hits"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["backend"]["used_memory_bytes"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["backend"]["keys"].as_u64().is_some(), "{v}");
}

#[tokio::test]
async fn every_route_of_the_router_appears_in_openapi_json() {
    let app = TestApp::spawn().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let missing: Vec<String> = ROUTES
        .iter()
        .filter(|r| {
            spec["paths"][r.path][r.method.as_str().to_ascii_lowercase()]
                .as_object()
                .is_none()
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        missing.is_empty(),
        "openapi.json does not document: {missing:#?}"
    );
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
