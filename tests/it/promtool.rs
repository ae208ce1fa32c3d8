//! deploy/prometheus and /metrics, checked by promtool (Debian's `prometheus` package, which
//! `scripts/services up` installs when it is missing). A missing promtool fails these tests.

use std::path::Path;
use std::process::{Output, Stdio};

use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::server::TestApp;

const RULES: &str = "deploy/prometheus/rankd.rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/rankd.rules.test.yml";

/// Runs `promtool ARGS` from the repository root, writing `stdin` to it.
async fn promtool(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = tokio::process::Command::new("promtool")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool does not run ({e}): install it with scripts/services up \
                 (Debian package prometheus)"
            )
        });
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin).await.expect("promtool reads stdin");
    drop(input);
    child.wait_with_output().await.expect("promtool finishes")
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[tokio::test]
async fn the_alert_rules_pass_promtool_check_rules() {
    let out = promtool(&["check", "rules", RULES], b"").await;
    assert_success(&format!("promtool check rules {RULES}"), &out);
}

#[tokio::test]
async fn the_alert_rules_pass_their_promtool_unit_tests() {
    let out = promtool(&["test", "rules", RULE_TESTS], b"").await;
    assert_success(&format!("promtool test rules {RULE_TESTS}"), &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_of_a_server_that_served_traffic_pass_promtool_check_metrics() {
    // Board sizes are sampled: often here, so that the scrape below has them.
    let app =
        TestApp::spawn_with(|c| c.metrics_sample = std::time::Duration::from_millis(100)).await;
    let r = app
        .send_json(
            Method::PUT,
            "/v1/boards/prom",
            json!({"windows": ["all", "daily"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    for (member, value) in [("u1", 30), ("u2", 20), ("u3", 10)] {
        let r = app
            .send_json(
                Method::POST,
                "/v1/boards/prom/scores",
                json!({"member": member, "value": value, "scopes": ["team:a"]}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.get("/v1/boards/prom/top?limit=3").await.status(), 200);
    assert_eq!(app.get("/v1/boards/nope/top").await.status(), 404);
    assert_eq!(app.get("/readyz").await.status(), 200);

    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    let text = app
        .metrics_until("the board's size", |t| {
            t.contains("rankd_board_members{board=\"prom\"} 3\n")
        })
        .await;
    for family in [
        "rankd_http_requests_total",
        "rankd_http_request_duration_seconds_bucket",
        "rankd_score_events_total",
        "rankd_script_duration_seconds_bucket",
        "rankd_backend_up",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(family)),
            "/metrics has no {family}:\n{text}"
        );
    }
    let out = promtool(&["check", "metrics"], text.as_bytes()).await;
    assert_success(&format!("promtool check metrics on\n{text}\n"), &out);

    let r = app
        .req(
            Method::DELETE,
            "/v1/boards/prom",
            Some(crate::server::ADMIN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}
