//! The README, checked against the code so that it cannot rot: its walkthrough runs against a real
//! server, and its tables name every route and every setting.
//!
//! A walkthrough block is a ```sh fence right after a `<!-- readme-test -->` line. Blocks run in
//! order, each as `bash -euo pipefail -c BLOCK` with `RANKD_URL` set to the spawned server and
//! `RANKD_KEY` to its admin key (a literal `http://127.0.0.1:8080` is replaced by the server's
//! address too). Their curl calls use `--fail-with-body`, so any HTTP error fails the block.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::server::{TestApp, ADMIN};

const README: &str = include_str!("../../README.md");
const MARKER: &str = "<!-- readme-test -->";
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The shell blocks marked for testing, in order.
fn marked_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim() != MARKER {
            continue;
        }
        let fence = lines.next().map(|(_, l)| l.trim());
        assert_eq!(
            fence,
            Some("```sh"),
            "README.md line {}: {MARKER} must be followed by a ```sh fence",
            n + 1
        );
        let mut block = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                closed = true;
                break;
            }
            block.push_str(l);
            block.push('\n');
        }
        assert!(
            closed,
            "README.md line {}: the block is never closed",
            n + 1
        );
        blocks.push(block);
    }
    blocks
}

/// Each `curl` command of a block (continuation lines joined).
fn curl_commands(block: &str) -> Vec<String> {
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .filter(|l| l.trim_start().starts_with("curl "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_walkthrough_is_marked_for_testing_and_fails_on_http_errors() {
    let blocks = marked_blocks(README);
    assert!(
        blocks.len() >= 6,
        "expected the walkthrough's blocks to be marked, found {}",
        blocks.len()
    );
    let all = blocks.concat();
    for needle in [
        "PUT \"$RANKD_URL/v1/boards/xp\"",
        "/v1/boards/xp/scores",
        "/v1/scores/batch",
        "\"scopes\"",
        "\"event_id\"",
        "/top",
        "/around",
        "/members/u42\"",
        "/metrics",
        "DELETE \"$RANKD_URL/v1/boards/xp\"",
    ] {
        assert!(all.contains(needle), "no marked block contains {needle}");
    }
    for block in &blocks {
        let curls = curl_commands(block);
        assert!(!curls.is_empty(), "a marked block runs no curl:\n{block}");
        for c in curls {
            assert!(
                c.contains("--fail-with-body"),
                "every curl of the walkthrough needs --fail-with-body, so an HTTP error fails the test: {c}"
            );
        }
    }
}

/// Runs one walkthrough block against the server at `base`; the failure, described.
async fn run_block(n: usize, block: &str, base: &str) -> Result<(), String> {
    let script = block.replace(DEFAULT_URL, base);
    let child = tokio::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&script)
        .env("RANKD_URL", base)
        .env("RANKD_KEY", ADMIN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("bash does not run: {e}"))?;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| format!("README block {n} took over 60 s:\n{script}"))?
        .map_err(|e| format!("README block {n}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "README block {n} failed ({}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_walkthrough_block_succeeds_against_a_real_server() {
    walkthrough(TestApp::spawn().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_walkthrough_block_succeeds_against_the_embedded_engine_too() {
    // The same API, answers and errors with no Redis at all (in memory: no data directory).
    walkthrough(
        TestApp::spawn_with(|c| {
            c.redis_url = None;
            c.data_dir = None;
        })
        .await,
    )
    .await;
}

async fn walkthrough(app: TestApp) {
    let base = app.url("");
    let mut failure = None;
    for (i, block) in marked_blocks(README).iter().enumerate() {
        if let Err(e) = run_block(i + 1, block, &base).await {
            failure = Some(e);
            break;
        }
    }
    // Whatever happened, leave nothing behind in the shared Redis.
    let boards: Value = app.get("/v1/boards").await.json().await.unwrap();
    let left: Vec<String> = boards["boards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["board"].as_str().map(str::to_owned))
        .collect();
    for b in &left {
        let r = app
            .req(
                reqwest::Method::DELETE,
                &format!("/v1/boards/{b}"),
                Some(ADMIN),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "DELETE /v1/boards/{b}");
    }
    app.stop().await;
    if let Some(e) = failure {
        panic!("{e}");
    }
    assert!(
        left.is_empty(),
        "the walkthrough should delete what it creates, but left {left:?}"
    );
}

#[test]
fn the_readme_api_table_names_every_route() {
    for route in rankd::http::routes::ROUTES {
        assert!(
            README.contains(&format!("`{}`", route.path)),
            "README.md does not mention {} {}",
            route.method,
            route.path
        );
    }
}

#[test]
fn the_readme_configuration_table_names_every_setting() {
    let source = include_str!("../../src/config.rs");
    let start = source
        .find("const NAMES")
        .expect("src/config.rs lists its settings in NAMES");
    let end = start + source[start..].find("];").expect("NAMES ends");
    let names: Vec<&str> = source[start..end].split('"').skip(1).step_by(2).collect();
    assert!(names.len() >= 10, "found only {names:?} in NAMES");
    for name in names {
        let var = format!("`RANKD_{}`", name.to_ascii_uppercase());
        assert!(README.contains(&var), "README.md does not document {var}");
    }
}
