//! rankd killed or stopped under load, on Redis and on the embedded default: nothing acknowledged
//! is lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Binary;
use crate::cleanup::{Keyspace, ScratchDir};
use crate::helpers::{spawn_rankd, Redis};
use crate::private::TestDb;

/// Writers posting score events to one URL, each until an answer fails (the process died), 20 s
/// pass, or it has sent its 5,000 events.
struct Writers {
    acked: Arc<std::sync::Mutex<Vec<(String, u32)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// `n` writers; `event(w, i)` is writer w's i-th event: its member, value and JSON body.
    fn start(
        http: &reqwest::Client,
        url: String,
        n: u32,
        event: fn(u32, u32) -> (String, u32, serde_json::Value),
    ) -> Self {
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Instant::now() + Duration::from_secs(20);
        let tasks = (0..n)
            .map(|w| {
                let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
                tokio::spawn(async move {
                    for i in 0..5000u32 {
                        if Instant::now() > stop {
                            break;
                        }
                        let (member, value, body) = event(w, i);
                        let sent = http
                            .post(&url)
                            .json(&body)
                            .timeout(Duration::from_secs(2))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 200 => {
                                acked.lock().unwrap().push((member, value))
                            }
                            _ => break,
                        }
                    }
                })
            })
            .collect();
        Self { acked, tasks }
    }

    /// Waits for every writer to stop; the (member, value) of each acknowledged event. Fails unless
    /// the load ran: more than 20 acknowledged.
    async fn acknowledged(self) -> Vec<(String, u32)> {
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        assert!(
            acked.len() > 20,
            "the load ran before the kill ({} acknowledged)",
            acked.len()
        );
        acked
    }
}

/// Member -> score of a top page.
async fn top_scores(http: &reqwest::Client, url: &str) -> HashMap<String, f64> {
    let top: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
    top["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{url}: {top}"))
        .iter()
        .map(|e| {
            (
                e["member"].as_str().unwrap().to_owned(),
                e["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Every member's score is at least the sum of its acknowledged values (events applied but not
/// acknowledged when the process died may add to it).
fn assert_holds(got: &HashMap<String, f64>, acked: &[(String, u32)], what: &str) {
    let mut want: HashMap<String, f64> = HashMap::new();
    for (mem, v) in acked {
        *want.entry(mem.clone()).or_default() += f64::from(*v);
    }
    for (mem, v) in &want {
        assert!(
            got.get(mem).copied().unwrap_or(0.0) >= *v,
            "{what} {mem}: {got:?} < {want:?}"
        );
    }
}

async fn killed_rankd_loses_nothing_acknowledged(durability: &str) {
    let keys = Keyspace::new(Redis::Standalone);
    let db = TestDb::create().await;
    let prefix = keys.prefix();
    let port = crate::server::free_port();
    let mut bin = Binary::start(prefix, &db, durability, port).await;
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/v1/boards/k9", bin.base))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let writers = Writers::start(
        &http,
        format!("{}/v1/boards/k9/scores", bin.base),
        6,
        |w, i| {
            let member = format!("m{}", i % 11);
            let value = 1 + i % 3;
            let body = serde_json::json!({"member": member, "value": value, "event_id": format!("w{w}-{i}")});
            (member, value, body)
        },
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    bin.kill9();
    let acked = writers.acknowledged().await;
    let bin = Binary::start(prefix, &db, durability, port).await;
    let metrics = http
        .get(format!("{}/metrics", bin.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "rankd_store_durable 1"),
        "a store, yet /metrics lacks rankd_store_durable 1:\n{metrics}"
    );
    // Every acknowledged event is in Redis: each member's score is at least what was acknowledged
    // (events applied but not acknowledged when the process died may add to it).
    let got = top_scores(&http, &format!("{}/v1/boards/k9/top?limit=100", bin.base)).await;
    assert_holds(&got, &acked, "top");
    // ... and the store holds exactly what Redis holds once the sweep has run: every applied event,
    // acknowledged ones included, once.
    let pool = db.pool().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<(String, f64)> = sqlx::query_as(
            "SELECT member, sum(value) FROM rankd_ops WHERE board = 'k9' AND op = 'e' GROUP BY member",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let stored: HashMap<String, f64> = rows.into_iter().collect();
        if stored == got {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store never caught up: {stored:?} vs {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n_acked = acked.len() as i64;
    let (n_events,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rankd_ops WHERE board = 'k9' AND op = 'e'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(n_events >= n_acked);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankd_killed_under_sync_load_loses_nothing_acknowledged() {
    killed_rankd_loses_nothing_acknowledged("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankd_killed_under_async_load_loses_nothing_acknowledged() {
    killed_rankd_loses_nothing_acknowledged("async").await;
}

/// The rankd binary on the embedded engine, its store an SQLite file in `dir`.
async fn embedded_binary(dir: &std::path::Path, port: u16) -> crate::helpers::RankdProcess {
    spawn_rankd(port, "/readyz", Duration::from_secs(20), |c| {
        c.env("RANKD_DATA_DIR", dir)
            .env_remove("RANKD_REDIS_URL")
            .env_remove("RANKD_DATABASE_URL");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_rankd_killed_and_restarted_keeps_every_acknowledged_event() {
    let dir = ScratchDir::new("data");
    let port = crate::server::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = embedded_binary(dir.path(), port).await;
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/v1/boards/emb"))
        .json(&serde_json::json!({"windows": ["all", "daily"], "tie_break": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let writers = Writers::start(&http, format!("{base}/v1/boards/emb/scores"), 4, |w, i| {
        let member = format!("m{}", i % 7);
        let value = 1 + i % 4;
        let body = serde_json::json!({"member": member, "value": value, "scopes": ["c:1"], "event_id": format!("w{w}-{i}")});
        (member, value, body)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = child.kill();
    let _ = child.wait();
    let acked = writers.acknowledged().await;
    let _child = embedded_binary(dir.path(), port).await;
    // Sync durability: everything acknowledged was committed before its answer; anything more was
    // applied and committed but its answer was lost with the process.
    for path in [
        "top?limit=100",
        "top?limit=100&scope=c:1",
        "top?limit=100&window=daily",
    ] {
        let got = top_scores(&http, &format!("{base}/v1/boards/emb/{path}")).await;
        assert_holds(&got, &acked, path);
    }
    // An acknowledged event id is still a duplicate after the restart.
    let (mem, _) = &acked[0];
    let body =
        serde_json::json!({"member": mem, "value": 1, "scopes": ["c:1"], "event_id": "w0-0"});
    let r: serde_json::Value = http
        .post(format!("{base}/v1/boards/emb/scores"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["duplicate"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_async_rankd_stopped_by_sigterm_stores_every_answered_write() {
    use futures::StreamExt;
    let dir = ScratchDir::new("async");
    let port = crate::server::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_rankd(port, "/readyz", Duration::from_secs(20), |c| {
        c.env("RANKD_DATA_DIR", dir.path())
            .env("RANKD_DURABILITY", "async")
            .env_remove("RANKD_REDIS_URL")
            .env_remove("RANKD_DATABASE_URL");
    })
    .await;
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/v1/boards/quit"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Answered once the in-memory log took them, before the store did. SIGTERM comes while
    // writes are still arriving, so that the store's queue is busy when the server stops.
    let url = format!("{base}/v1/boards/quit/scores");
    let pid = child.id().to_string();
    let mut answered = 0;
    let mut results = futures::stream::iter(0..600)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.post(url)
                    .json(&serde_json::json!({"member": format!("m{i}"), "value": 1}))
                    .send()
                    .await
                    .map(|r| r.status())
            }
        })
        .buffer_unordered(16);
    while let Some(r) = results.next().await {
        if r.is_ok_and(|s| s == 200) {
            answered += 1;
            if answered == 300 {
                let ok = std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap();
                assert!(ok.success());
            }
        }
    }
    assert!(answered >= 300, "{answered}");
    crate::helpers::exit_status(&mut child, Duration::from_secs(20)).await;
    let _child = embedded_binary(dir.path(), port).await;
    let v: serde_json::Value = http
        .get(format!("{base}/v1/boards/quit/top?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = v["total"].as_u64().unwrap();
    assert!(
        total >= answered,
        "{answered} writes were answered, {total} survived the stop: {v}"
    );
}
