//! What operators read: the probes, /metrics, /v1/stats/cache and openapi.json.

use std::time::Duration;

use rankd::http::routes::ROUTES;
use reqwest::Method;
use serde_json::{json, Value};

use super::{call, ok};
use crate::server::{TestApp, ADMIN, READER};

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

/// A value out of a `tie_break: first` board's range is refused by the submit script itself: each
/// such refusal adds exactly one to `kind="refused"`, and none to `kind="reply"` (an error Redis
/// answered). On a process of its own, so that no other test's refusals are counted.
#[tokio::test]
async fn each_script_refusal_counts_once_as_refused_not_as_a_redis_error() {
    let port = crate::server::free_port();
    let keys = crate::cleanup::Keyspace::new(crate::helpers::Redis::Standalone);
    let _rankd = crate::helpers::spawn_rankd(port, "/readyz", Duration::from_secs(20), |c| {
        c.args(["--redis-url", &crate::helpers::Redis::Standalone.url()])
            .args(["--key-prefix", keys.prefix()]);
    })
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let scrape = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let submit = |value: i64| {
        http.post(format!("{base}/v1/boards/ranged/scores"))
            .json(&json!({"member": "x", "value": value}))
            .send()
    };
    let refused = "rankd_script_errors_total{script=\"submit\",kind=\"refused\"}";
    let r = http
        .put(format!("{base}/v1/boards/ranged"))
        .json(&json!({"tie_break": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(submit(2_097_151).await.unwrap().status(), 200);
    let text = scrape().await;
    assert!(
        !text.contains("rankd_script_errors_total{"),
        "no script failed yet:\n{text}"
    );
    for n in 1..=3 {
        // The sum leaves the range: the script refuses it.
        assert_eq!(submit(1).await.unwrap().status(), 400);
        // A value that keeps the sum in range is no refusal.
        assert_eq!(submit(0).await.unwrap().status(), 200);
        let text = scrape().await;
        assert_eq!(
            crate::helpers::series_value(&text, refused),
            f64::from(n),
            "after {n} refusals"
        );
        assert!(
            !text.contains("kind=\"reply\""),
            "a refusal is no Redis error:\n{text}"
        );
    }
    let r = http
        .delete(format!("{base}/v1/boards/ranged"))
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

/// Expired keys leave a board's key index as the server goes (at each metrics sample), not only
/// when an operator runs `clear-caches`; live keys stay.
#[tokio::test]
async fn the_key_index_forgets_expired_keys_as_the_server_goes() {
    use fred::prelude::{Builder, ClientLike, Config, SortedSetsInterface};

    let app = TestApp::spawn_with(|c| c.metrics_sample = Duration::from_millis(100)).await;
    app.put_board("xp", json!({"windows": ["all", "daily"]}))
        .await;
    app.submit("xp", "u1", 5.0).await;
    let keys = rankd::keys::Keys::new(&app.config.key_prefix).unwrap();
    let index = keys.index(&rankd::board::BoardId::parse("xp").unwrap());
    let client =
        Builder::from_config(Config::from_url(app.config.redis_url.as_deref().unwrap()).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
    let live: u64 = client.zcard(&index).await.unwrap();
    assert!(live >= 2, "the board's keys are indexed");
    // A key whose period expired long ago, as a board written last month leaves.
    let _: () = client
        .zadd(&index, None, None, false, false, (1_000.0, "expired-key"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let gone: Option<f64> = client.zscore(&index, "expired-key").await.unwrap();
        if gone.is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expired key is still indexed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after: u64 = client.zcard(&index).await.unwrap();
    assert_eq!(after, live, "live keys stay indexed");
    let _ = client.quit().await;
}
