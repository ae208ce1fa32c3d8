//! The leaderboard page cache over HTTP: never a stale page, with two instances on one Redis
//! (standalone and cluster) and on the embedded engine, in every rank mode, tie-break and order;
//! hits where nothing a page shows changed; its TTL; clears across instances; and the headers,
//! `/v1/stats/cache` and `/metrics` agreeing.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{series_value, Redis};
use crate::server::{TestApp, ADMIN};

/// Two servers sharing one Redis and key prefix, as two instances behind a load balancer.
async fn pair(redis: Redis) -> (TestApp, TestApp) {
    let a = TestApp::spawn_with(|c| c.redis_url = Some(redis.url())).await;
    let (prefix, url) = (a.config.key_prefix.clone(), a.config.redis_url.clone());
    let b = TestApp::spawn_with(|c| {
        c.key_prefix = prefix;
        c.redis_url = url;
    })
    .await;
    (a, b)
}

/// A page read: its status header and body.
async fn read(app: &TestApp, path: &str, fresh: bool) -> (String, Value) {
    let mut r = app.req(Method::GET, path, Some(ADMIN));
    if fresh {
        r = r.header("cache-control", "no-cache");
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    let status = r
        .headers()
        .get("x-rankd-cache")
        .unwrap_or_else(|| panic!("GET {path} says no X-Rankd-Cache"))
        .to_str()
        .unwrap()
        .to_owned();
    if status == "hit" {
        let age: u64 = r.headers()["age"].to_str().unwrap().parse().unwrap();
        assert!(age < 600, "{age}");
    } else {
        assert!(r.headers().get("age").is_none(), "{status} with an Age");
    }
    (status, r.json().await.unwrap())
}

async fn ok(r: reqwest::Response, what: &str) {
    let status = r.status();
    assert!(
        status.is_success(),
        "{what}: {status} {}",
        r.text().await.unwrap_or_default()
    );
}

/// A small deterministic generator (xorshift), so that a failure names its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Pages the workload reads: global and scoped tops, and entries by offset.
const PAGES: [&str; 6] = [
    "top?limit=3",
    "top?limit=10",
    "entries?offset=4&limit=4",
    "entries?offset=0&limit=25",
    "top?limit=5&scope=s",
    "entries?offset=2&limit=3&scope=s",
];

/// A seeded workload of writes, removals, display changes and definition changes through every
/// app in turn, each step followed by every page read from every app, cached, then compared with
/// the same page read afresh: the cache must never answer what the board no longer shows. Answers
/// how many reads were hits (a workload that never hit would prove nothing).
async fn never_stale(apps: &[&TestApp], board: &str, def: Value, seed: u64, steps: usize) -> u64 {
    apps[0].put_board(board, def.clone()).await;
    let mut rng = Rng(seed);
    let mut hits = 0;
    for step in 0..steps {
        let app = apps[step % apps.len()];
        let member = format!("m{:02}", rng.below(30));
        let what = match rng.below(20) {
            0..=11 => {
                let value = rng.below(12) as f64 - 2.0;
                let mut body = json!({"member": member, "value": value});
                if rng.below(2) == 0 {
                    body["scopes"] = json!(["s"]);
                }
                let r = app
                    .send_json(Method::POST, &format!("/v1/boards/{board}/scores"), body)
                    .await;
                ok(r, "submit").await;
                format!("{member} scores {value}")
            }
            12..=14 => {
                let r = app
                    .req(
                        Method::DELETE,
                        &format!("/v1/boards/{board}/members/{member}"),
                        Some(ADMIN),
                    )
                    .send()
                    .await
                    .unwrap();
                ok(r, "remove").await;
                format!("{member} removed")
            }
            15..=17 => {
                let name = format!("N{}", rng.below(3));
                let r = app
                    .send_json(
                        Method::PUT,
                        &format!("/v1/boards/{board}/members/{member}"),
                        json!({ "display_name": name }),
                    )
                    .await;
                ok(r, "display").await;
                format!("{member} named {name}")
            }
            _ => {
                let mut d = def.clone();
                d["retention_periods"] = json!(2 + rng.below(3));
                app.put_board(board, d).await;
                "definition changed".into()
            }
        };
        for page in PAGES {
            let path = format!("/v1/boards/{board}/{page}");
            let mut cached = Vec::new();
            for (i, reader) in apps.iter().enumerate() {
                let (status, body) = read(reader, &path, false).await;
                hits += u64::from(status == "hit");
                cached.push((i, status, body));
            }
            let (_, truth) = read(apps[0], &path, true).await;
            for (i, status, body) in cached {
                assert_eq!(
                    body, truth,
                    "seed {seed} step {step} ({what}): app {i} answered {path} ({status}) with a page the board no longer shows"
                );
            }
        }
    }
    hits
}

/// Every rank mode, tie-break and order.
fn definitions() -> Vec<Value> {
    let mut defs = Vec::new();
    for mode in ["ordinal", "competition", "dense"] {
        for tie in ["member", "first"] {
            for order in ["desc", "asc"] {
                defs.push(json!({"rank_mode": mode, "tie_break": tie, "order": order}));
            }
        }
    }
    defs
}

#[tokio::test]
async fn two_instances_on_one_redis_never_serve_a_stale_page() {
    let (a, b) = pair(Redis::Standalone).await;
    let mut hits = 0;
    for (i, def) in definitions().into_iter().enumerate() {
        hits += never_stale(
            &[&a, &b],
            &format!("st{i}"),
            def,
            0x9e37_79b9 + i as u64,
            60,
        )
        .await;
    }
    // 12 boards × 60 steps × 6 pages × 2 instances: most reads follow a write below their depth.
    assert!(hits > 1000, "only {hits} hits");
}

#[tokio::test]
async fn two_instances_on_the_cluster_never_serve_a_stale_page() {
    let (a, b) = pair(Redis::Cluster).await;
    let mut hits = 0;
    for (i, def) in definitions().into_iter().enumerate().step_by(3) {
        hits += never_stale(&[&a, &b], &format!("cl{i}"), def, 0x51ed + i as u64, 40).await;
    }
    assert!(hits > 200, "only {hits} hits");
}

#[tokio::test]
async fn the_embedded_engine_never_serves_a_stale_page() {
    let app = TestApp::spawn_with(|c| {
        c.redis_url = None;
        c.data_dir = None;
    })
    .await;
    let mut hits = 0;
    for (i, def) in definitions().into_iter().enumerate().step_by(2) {
        hits += never_stale(&[&app], &format!("em{i}"), def, 0xabc + i as u64, 40).await;
    }
    assert!(hits > 200, "only {hits} hits");
}

/// The leaderboard figures of `/v1/stats/cache`.
async fn figures(app: &TestApp) -> Value {
    let stats: Value = app.get("/v1/stats/cache").await.json().await.unwrap();
    stats["caches"]["leaderboard"].clone()
}

#[tokio::test]
async fn a_page_stays_a_hit_through_writes_below_its_depth_on_either_instance() {
    let (a, b) = pair(Redis::Standalone).await;
    for (i, mode) in ["ordinal", "competition", "dense"].into_iter().enumerate() {
        let board = format!("below{i}");
        a.put_board(&board, json!({ "rank_mode": mode })).await;
        // 100 members, m000 best; pairs share a score, so that competition and dense ranks are
        // not positions.
        let events: Vec<Value> = (0..100)
            .map(|k| json!({"board": board, "member": format!("m{k:03}"), "value": 1000 - 10 * (k / 2)}))
            .collect();
        let r = a
            .send_json(
                Method::POST,
                "/v1/scores/batch",
                json!({ "events": events }),
            )
            .await;
        ok(r, "batch").await;
        let top = format!("/v1/boards/{board}/top?limit=10");
        let page = format!("/v1/boards/{board}/entries?offset=10&limit=10");
        for app in [&a, &b] {
            assert_eq!(read(app, &top, false).await.0, "miss");
            assert_eq!(read(app, &top, false).await.0, "hit");
            assert_eq!(read(app, &page, false).await.0, "miss");
        }
        // Below both depths (20) before and after, through either instance.
        a.submit(&board, "m050", 3.0).await;
        b.submit(&board, "m099", 1.0).await;
        let r = b
            .send_json(
                Method::PUT,
                &format!("/v1/boards/{board}/members/m080"),
                json!({"display_name": "Far"}),
            )
            .await;
        ok(r, "display").await;
        for app in [&a, &b] {
            assert_eq!(read(app, &top, false).await.0, "hit", "{mode}");
            assert_eq!(read(app, &page, false).await.0, "hit", "{mode}");
        }
        // Within the second page's depth only: the top 10 stays a hit.
        let before = figures(&a).await["invalidations"]["write"]
            .as_u64()
            .unwrap();
        a.submit(&board, "m030", 105.0).await;
        let (status, body) = read(&b, &page, false).await;
        assert!(
            body["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["member"] == "m030"),
            "{mode} {status}: {body}"
        );
        for app in [&a, &b] {
            assert_eq!(read(app, &top, false).await.0, "hit", "{mode}");
        }
        let (_, page_a) = read(&a, &page, false).await;
        assert_eq!(page_a, body);
        // Into the top: both pages change, on both instances.
        b.submit(&board, "m090", 10_000.0).await;
        for app in [&a, &b] {
            let (_, body) = read(app, &top, false).await;
            assert_eq!(body["entries"][0]["member"], "m090", "{mode}");
        }
        // A member added at the bottom changes the count every page shows.
        a.submit(&board, "newcomer", -5.0).await;
        for app in [&a, &b] {
            let (_, body) = read(app, &top, false).await;
            assert_eq!(body["total"], 101, "{mode}");
        }
        let after = figures(&a).await["invalidations"]["write"]
            .as_u64()
            .unwrap();
        assert!(after > before, "{mode}: {before} → {after}");
        // Asked afresh: bypass, and stored for the next reader.
        assert_eq!(read(&a, &top, true).await.0, "bypass");
        assert_eq!(read(&a, &top, false).await.0, "hit");
    }
}

#[tokio::test]
async fn a_page_goes_with_its_ttl_and_a_zero_ttl_caches_nothing() {
    let app = TestApp::spawn_with(|c| c.cache_ttl_leaderboard = Duration::from_secs(1)).await;
    app.put_board("ttl", json!({})).await;
    app.submit("ttl", "a", 1.0).await;
    let top = "/v1/boards/ttl/top";
    assert_eq!(read(&app, top, false).await.0, "miss");
    assert_eq!(read(&app, top, false).await.0, "hit");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(read(&app, top, false).await.0, "miss");
    assert!(
        figures(&app).await["invalidations"]["ttl"]
            .as_u64()
            .unwrap()
            >= 1
    );

    let off = TestApp::spawn_with(|c| c.cache_ttl_leaderboard = Duration::ZERO).await;
    off.put_board("ttl", json!({})).await;
    off.submit("ttl", "a", 1.0).await;
    for _ in 0..3 {
        assert_eq!(read(&off, top, false).await.0, "bypass");
    }
    let f = figures(&off).await;
    assert_eq!(
        (f["hits"].as_u64(), f["entries"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(f["ttl_secs"], 0);
}

#[tokio::test]
async fn a_clear_on_one_instance_clears_the_other_within_a_second() {
    let (a, b) = pair(Redis::Standalone).await;
    for board in ["c1", "c2"] {
        a.put_board(board, json!({})).await;
        a.submit(board, "x", 1.0).await;
        for app in [&a, &b] {
            read(app, &format!("/v1/boards/{board}/top"), false).await;
        }
    }
    assert_eq!(figures(&b).await["entries"], 2);
    let r = a
        .send_json(
            Method::POST,
            "/v1/caches/clear",
            json!({"caches": ["leaderboard"], "board": "c1"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["cleared"]["leaderboard"], 1, "{answer}");
    assert_eq!(figures(&a).await["entries"], 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while figures(&b).await["entries"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "b still holds {}",
            figures(&b).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(&b, "/v1/boards/c2/top", false).await.0, "hit");
    assert!(
        figures(&b).await["invalidations"]["clear"]
            .as_u64()
            .unwrap()
            >= 1
    );

    let bad = a
        .send_json(
            Method::POST,
            "/v1/caches/clear",
            json!({"caches": ["leaderboard", "pages"]}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(problem["field"], "caches[1]", "{problem}");
    let missing = a
        .send_json(Method::POST, "/v1/caches/clear", json!({"board": "nope"}))
        .await;
    assert_eq!(missing.status(), 404);
    // Everything, by default.
    let r = b
        .send_json(Method::POST, "/v1/caches/clear", json!({}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(figures(&b).await["entries"], 0);
}

#[tokio::test]
async fn warming_fills_the_pages_asked_for() {
    let app = TestApp::spawn().await;
    app.put_board("warm", json!({"windows": ["all", "weekly"]}))
        .await;
    let r = app
        .send_json(
            Method::POST,
            "/v1/scores/batch",
            json!({"events": [{"board": "warm", "member": "a", "value": 3, "scopes": ["k"]}]}),
        )
        .await;
    ok(r, "batch").await;
    let r = app
        .send_json(
            Method::POST,
            "/v1/caches/warm",
            json!({"board": "warm", "window": "weekly", "scopes": ["k"], "limit": 10}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["warmed"], 2, "{answer}");
    let (status, body) = read(
        &app,
        "/v1/boards/warm/top?window=weekly&scope=k&limit=10",
        false,
    )
    .await;
    assert_eq!(status, "hit");
    assert_eq!(body["entries"][0]["member"], "a");
    assert_eq!(figures(&app).await["warms"], 2);
    let bad = app
        .send_json(
            Method::POST,
            "/v1/caches/warm",
            json!({"board": "warm", "window": "yearly"}),
        )
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn header_counts_stats_and_metrics_agree_after_a_workload() {
    // A process of its own, so that its recorder counts this test's requests and nothing else.
    let port = crate::server::free_port();
    let keys = crate::cleanup::Keyspace::new(Redis::Standalone);
    let _rankd = crate::helpers::spawn_rankd(port, "/readyz", Duration::from_secs(20), |c| {
        c.args(["--redis-url", &Redis::Standalone.url()])
            .args(["--key-prefix", keys.prefix()]);
    })
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/v1/boards/agree"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut rng = Rng(7);
    for step in 0..300 {
        if step % 5 == 0 {
            let member = format!("u{}", rng.below(50));
            let r = http
                .post(format!("{base}/v1/boards/agree/scores"))
                .json(&json!({"member": member, "value": rng.below(100)}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let path = match rng.below(4) {
            0 => "/v1/boards/agree/top?limit=5".to_owned(),
            1 => "/v1/boards/agree/top".to_owned(),
            2 => format!(
                "/v1/boards/agree/entries?offset={}&limit=5",
                rng.below(3) * 5
            ),
            _ => "/v1/boards/agree/entries?offset=990&limit=20".to_owned(),
        };
        let mut req = http.get(format!("{base}{path}"));
        if rng.below(10) == 0 {
            req = req.header("cache-control", "no-cache");
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let status = r.headers()["x-rankd-cache"].to_str().unwrap().to_owned();
        *seen.entry(status).or_default() += 1;
    }
    let stats: Value = http
        .get(format!("{base}/v1/stats/cache"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let f = &stats["caches"]["leaderboard"];
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (status, field, family) in [
        ("hit", "hits", "rankd_cache_hits_total"),
        ("miss", "misses", "rankd_cache_misses_total"),
        ("bypass", "bypasses", "rankd_cache_bypasses_total"),
    ] {
        let n = seen.get(status).copied().unwrap_or(0);
        assert!(n > 0, "no {status} in {seen:?}");
        assert_eq!(f[field].as_u64(), Some(n), "{field}: {f}");
        assert_eq!(
            series_value(&metrics, &format!("{family}{{cache=\"leaderboard\"}}")),
            n as f64,
            "{family}"
        );
    }
    let rate = f["hit_rate_percentage"].as_f64().unwrap();
    let want = seen["hit"] as f64 * 100.0 / (seen["hit"] + seen["miss"]) as f64;
    assert!((rate - want).abs() < 1e-9, "{rate} vs {want}");
    assert_eq!(
        series_value(&metrics, "rankd_cache_entries{cache=\"leaderboard\"}"),
        f["entries"].as_f64().unwrap()
    );
    // Every type's series are there from the start.
    for t in ["analytics", "scope_stats", "achievements"] {
        assert_eq!(
            series_value(
                &metrics,
                &format!("rankd_cache_hits_total{{cache=\"{t}\"}}")
            ),
            0.0
        );
        assert_eq!(
            series_value(
                &metrics,
                &format!("rankd_cache_invalidations_total{{cache=\"{t}\",reason=\"capacity\"}}")
            ),
            0.0
        );
    }
}
