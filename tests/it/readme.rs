//! The README, checked against the code so that it cannot rot: its walkthrough runs against a real
//! server, its API table names every route, and its configuration table is the settings of
//! src/config/settings.rs rendered.
//!
//! A walkthrough block is a ```sh fence right after a `<!-- readme-test -->` line. Blocks run in
//! order, each as `bash -euo pipefail -c BLOCK` with `RANKD_URL` set to the spawned server and
//! `RANKD_KEY` to its admin key (a literal `http://127.0.0.1:8080` is replaced by the server's
//! address too). Their curl calls use `--fail-with-body`, so any HTTP error fails the block.

use std::process::Stdio;
use std::time::Duration;

use rankd::window::{Period, Window};
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

/// Runs one walkthrough block against the server at `base`: its output, or the failure, described.
async fn run_block(n: usize, block: &str, base: &str) -> Result<String, String> {
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
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

/// The walkthrough's part of the README: from its first marked block to the note on this test.
fn walkthrough_text(readme: &str) -> &str {
    let start = readme.find(MARKER).expect("the README has marked blocks");
    let end = start
        + readme[start..]
            .find("`tests/it/readme.rs` runs every block")
            .expect("the walkthrough ends with the note on its test");
    &readme[start..end]
}

/// Every answer the walkthrough documents: each ```json fence, and each inline code span that is a
/// whole JSON object.
fn documented_answers(text: &str) -> Vec<Value> {
    let mut answers = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("```json\n") {
        let body = &rest[at + 8..];
        let end = body.find("```").expect("a json fence is closed");
        answers.push(serde_json::from_str(&body[..end]).expect("a json fence parses"));
        rest = &body[end + 3..];
    }
    for span in text.split('`').skip(1).step_by(2) {
        if span.starts_with('{') {
            if let Ok(v) = serde_json::from_str::<Value>(span) {
                answers.push(v);
            }
        }
    }
    answers
}

/// The JSON documents a block printed, one after another (none for text output).
fn printed_documents(out: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(out)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

/// A week's id (`2026-W48`) depends on the day the test runs: every one reads `<week>`.
fn undated(v: Value) -> Value {
    match v {
        Value::String(s) if Period::parse(Window::Weekly, &s).is_ok() => {
            Value::String("<week>".into())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(undated).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, undated(v))).collect()),
        v => v,
    }
}

#[test]
fn the_walkthrough_documents_the_answers_it_shows() {
    let answers = documented_answers(walkthrough_text(README));
    assert!(
        answers.len() >= 5,
        "the definition, the score, the batch, the top and the standing: {answers:?}"
    );
}

async fn walkthrough(app: TestApp) {
    let base = app.url("");
    let mut failure = None;
    let mut printed = Vec::new();
    for (i, block) in marked_blocks(README).iter().enumerate() {
        match run_block(i + 1, block, &base).await {
            Ok(out) => printed.extend(printed_documents(&out).into_iter().map(undated)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // Every answer the README shows is one the server gave, byte for byte but the week.
    if failure.is_none() {
        for answer in documented_answers(walkthrough_text(README)) {
            let answer = undated(answer);
            if !printed.contains(&answer) {
                failure = Some(format!(
                    "the README documents an answer the walkthrough did not print:\n{answer}\nprinted:\n{}",
                    printed
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
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
fn the_readme_example_rankd_toml_loads_as_it_reads() {
    let start = README
        .find("```toml\n")
        .expect("the README shows a rankd.toml")
        + 8;
    let toml = &README[start..start + README[start..].find("```").expect("closed")];
    let path = std::env::temp_dir().join(format!("rankd-readme-{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    let loaded = rankd::config::Config::load(Some(&path), Vec::new(), Vec::new());
    std::fs::remove_file(&path).unwrap();
    let c = loaded.unwrap_or_else(|e| panic!("the README's rankd.toml does not load: {e}"));
    assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.redis_url.as_deref(), Some("redis://10.0.0.5:6379"));
    assert_eq!(c.api_keys.len(), 2);
    assert!(c.api_keys[0].grants(rankd::config::Role::Admin));
    assert_eq!(c.log_format, rankd::config::LogFormat::Json);
}

/// A Markdown table row of `cells`.
fn table_row(cells: &[String]) -> String {
    let mut row = String::from("|");
    for cell in cells {
        row.push(' ');
        if !cell.is_empty() {
            row.push_str(&cell.replace('|', "\\|"));
            row.push(' ');
        }
        row.push('|');
    }
    row
}

/// The configuration table the README must show: every setting of src/config/settings.rs, in the
/// order declared, rendered from its declaration.
fn configuration_table() -> Vec<String> {
    let mut table = vec![
        "| Variable | Flag | Default | Values | Meaning |".to_owned(),
        "| --- | --- | --- | --- | --- |".to_owned(),
    ];
    for s in rankd::config::SETTINGS {
        let flag = match s.flags {
            [] => String::new(),
            [rankd::config::FlagIn::Serve] => format!("`--{}`", s.flag()),
            commands => format!(
                "`--{}` ({})",
                s.flag(),
                commands
                    .iter()
                    .map(|c| c.command())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let default = match s.default {
            "" => "none".to_owned(),
            d => format!("`{d}`"),
        };
        table.push(table_row(&[
            format!("`{}`", s.env_var()),
            flag,
            default,
            s.values(),
            s.help(),
        ]));
    }
    table
}

#[test]
fn the_readme_configuration_table_is_the_declared_settings() {
    let expected = configuration_table();
    assert!(expected.len() >= 12, "found only {expected:?}");
    let shown: Vec<&str> = README
        .lines()
        .skip_while(|l| *l != expected[0])
        .take_while(|l| l.starts_with('|'))
        .collect();
    let differs = (0..expected.len().max(shown.len()))
        .find(|&i| shown.get(i).copied() != expected.get(i).map(String::as_str));
    if let Some(i) = differs {
        panic!(
            "README.md's configuration table is not the settings src/config/settings.rs declares: \
             row {i} reads\n{}\nbut should read\n{}\nThe whole table, to paste into README.md:\n\n{}\n",
            shown.get(i).copied().unwrap_or("(no row)"),
            expected.get(i).map_or("(no row)", String::as_str),
            expected.join("\n")
        );
    }
}

/// The README's "Layout" section, up to the next `## ` heading.
fn layout_section() -> &'static str {
    let start = README
        .find("\n## Layout\n")
        .expect("README.md has a `## Layout` section");
    let rest = &README[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    &rest[..end]
}

#[test]
fn the_readme_layout_names_every_file_and_only_files_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .args(["src", "lua", "tests", "bench", "scripts", "migrations"])
        .current_dir(root)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git ls-files failed");
    let layout = layout_section();
    let listed = String::from_utf8(out.stdout).unwrap();
    let mut missing = Vec::new();
    for f in listed.lines() {
        // One row may name a folder of migrations as a whole.
        let folder = f.rsplit_once('/').map_or(f, |(d, _)| d);
        if !layout.contains(&format!("`{f}`")) && !layout.contains(&format!("`{folder}/`")) {
            missing.push(f.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's Layout section does not name: {missing:?}"
    );
    // Every path it names exists.
    for named in layout.split('`').skip(1).step_by(2) {
        let looks_like_path = [
            "src/",
            "lua/",
            "tests/",
            "bench/",
            "scripts/",
            "migrations/",
        ]
        .iter()
        .any(|p| named.starts_with(p));
        if looks_like_path {
            assert!(
                std::path::Path::new(root).join(named).exists(),
                "README.md's Layout section names {named}, which does not exist"
            );
        }
    }
}
