//! The HTTP API end to end (real server, real Redis, real client), one file per theme; here, the
//! checks every answer gets: a request id on each, the RFC 9457 problem shape on each error.

mod auth;
mod batches;
mod boards;
mod errors;
mod observability;
mod reads;
mod writes;

use reqwest::Method;
use serde_json::Value;

use crate::server::{TestApp, ADMIN};

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

/// The (index, field) of each event a batch problem lists.
fn batch_errors(v: &Value) -> Vec<(u64, &str)> {
    v["errors"]
        .as_array()
        .expect("an errors array")
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect()
}

/// `method path` with the admin key and a JSON body, expecting a problem.
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
