//! Keys and roles: which key may call which route, and how a missing, unknown or underprivileged
//! key is answered.

use rankd::config::Role;
use rankd::http::routes::{Endpoint, Route, ROUTES};
use reqwest::Method;
use serde_json::{json, Value};

use super::{call, ok, problem};
use crate::server::{TestApp, ADMIN, READER, WRITER};

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
        Endpoint::ClearCaches => ("/v1/caches/clear", Some(json!({"board": "roles"})), 200),
        Endpoint::WarmCaches => ("/v1/caches/warm", Some(json!({"board": "roles"})), 200),
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
