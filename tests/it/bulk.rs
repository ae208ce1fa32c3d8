//! The embedded default (no settings: the in-process engine, SQLite, sync durability) under a bulk
//! import beside live single writers: every request answers 200, and what was acknowledged survives
//! a SIGKILL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cleanup::ScratchDir;
use crate::helpers::spawn_rankd;
use crate::server::free_port;

/// Batches of this many events, as many as a batch may hold.
const BATCH: usize = 10_000;
/// Batches imported: 100,000 events.
const BATCHES: usize = 10;
/// Single writers posting beside the import.
const SINGLES: usize = 4;

/// The rankd binary with nothing configured but its data directory.
async fn embedded(port: u16, dir: &std::path::Path) -> crate::helpers::RankdProcess {
    spawn_rankd(port, "/readyz", Duration::from_secs(60), |c| {
        c.env("RANKD_DATA_DIR", dir)
            .env_remove("RANKD_REDIS_URL")
            .env_remove("RANKD_DATABASE_URL")
            .env_remove("RANKD_DURABILITY");
    })
    .await
}

/// Every member's score on the all-time board, read page by page.
async fn all_scores(http: &reqwest::Client, base: &str) -> HashMap<String, f64> {
    let mut scores = HashMap::new();
    let mut offset = 0;
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "{base}/v1/boards/xp/entries?offset={offset}&limit=1000"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entries = page["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"));
        for e in entries {
            scores.insert(
                e["member"].as_str().unwrap().to_owned(),
                e["score"].as_f64().unwrap(),
            );
        }
        if entries.len() < 1000 {
            return scores;
        }
        offset += 1000;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_import_into_the_embedded_default_answers_every_request_and_survives_a_kill() {
    let dir = ScratchDir::new("bulk");
    let port = free_port();
    let mut child = embedded(port, dir.path()).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/v1/boards/xp"))
        .json(&serde_json::json!({"windows": ["all", "weekly"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Single writers, each on members of its own, until the import is done (or 10 minutes pass).
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let writers: Vec<_> = (0..SINGLES)
        .map(|w| {
            let (http, base) = (http.clone(), base.clone());
            let (done, acked, failures) = (done.clone(), acked.clone(), failures.clone());
            tokio::spawn(async move {
                let stop = Instant::now() + Duration::from_secs(600);
                let mut i = 0u32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < stop {
                    let member = format!("s{w}-{}", i % 50);
                    let value = f64::from(1 + i % 3);
                    let r = http
                        .post(format!("{base}/v1/boards/xp/scores"))
                        .json(&serde_json::json!({
                            "member": member, "value": value, "scopes": [format!("class:{w}")]
                        }))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status();
                    if status == 200 {
                        *acked.lock().unwrap().entry(member).or_default() += value;
                    } else {
                        let body = r.text().await.unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("single {status}: {body}"));
                    }
                    i += 1;
                }
                i
            })
        })
        .collect();

    let started = Instant::now();
    for b in 0..BATCHES {
        let events: Vec<_> = (0..BATCH)
            .map(|i| {
                let n = b * BATCH + i;
                serde_json::json!({
                    "board": "xp", "member": format!("u{n}"), "value": 1 + n % 7,
                    "scopes": [format!("class:{}", n % 30)]
                })
            })
            .collect();
        let r = http
            .post(format!("{base}/v1/scores/batch"))
            .json(&serde_json::json!({ "events": events }))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(
            status,
            200,
            "batch {b} after {:?}: {body}",
            started.elapsed()
        );
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut singles = 0;
    for w in writers {
        singles += w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {singles} single writes failed beside the import, the first: {}",
        failures.len(),
        failures[0]
    );
    assert!(
        singles >= SINGLES as u32,
        "the single writers ran beside the import ({singles} writes)"
    );

    // Killed without a chance to flush: only what was committed before each 200 is on disk.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = embedded(port, dir.path()).await;
    let scores = all_scores(&http, &base).await;
    for n in 0..BATCHES * BATCH {
        let want = (1 + n % 7) as f64;
        assert_eq!(
            scores.get(&format!("u{n}")),
            Some(&want),
            "u{n} after the restart"
        );
    }
    let acked = acked.lock().unwrap().clone();
    for (member, value) in &acked {
        assert_eq!(
            scores.get(member),
            Some(value),
            "{member} after the restart"
        );
    }
    assert_eq!(scores.len(), BATCHES * BATCH + acked.len());
    child.kill().unwrap();
    child.wait().unwrap();
}
