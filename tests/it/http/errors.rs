//! Requests refused before anything is written: bad query parameters, bodies, media types, methods
//! and sizes, each answered with a problem that names the field.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{batch_errors, call, get_problem, ok, problem, raw_problem, send_problem};
use crate::server::{raw, responses, TestApp, ADMIN};

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
