//! `rankd admin` on a running server's answer caches: `clear-caches --server`, `warm-caches` and
//! `analyze --server`, the real binary against a real server, run with no Redis and no store of
//! its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::admin::{bare_admin, in_words, run, Run};
use crate::helpers::prefix;
use crate::server::{TestApp, ADMIN, READER};

/// An empty directory of the test's own, removed when dropped: there `rankd admin` finds no
/// store (and, with no RANKD_* variable, no Redis).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "rankd-admin-server-{}",
            prefix().trim_end_matches(':')
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rankd admin ARGS` with no settings at all, in `dir`, off the runtime's threads (the server
/// under test runs on them).
async fn admin(dir: &Path, args: &[&str]) -> Run {
    let c: Command = bare_admin(dir, args, |_| {});
    tokio::task::spawn_blocking(move || run(c)).await.unwrap()
}

/// The leaderboard cache's figures, as `GET /v1/stats/cache` gives them.
async fn leaderboard(http: &reqwest::Client, base: &str, key: Option<&str>) -> serde_json::Value {
    let mut r = http.get(format!("{base}/v1/stats/cache"));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let v: serde_json::Value = r.send().await.unwrap().json().await.unwrap();
    v["caches"]["leaderboard"].clone()
}

/// The entries a `clear-caches --server` line says the leaderboard cache dropped.
fn cleared_leaderboard(r: &Run) -> u64 {
    let (_, rest) = r
        .stdout
        .split_once("entries cleared there: leaderboard ")
        .unwrap_or_else(|| panic!("no leaderboard count: {r}"));
    rest.split([',', ';']).next().unwrap().parse().unwrap()
}

/// Where a page of top entries came from: `X-Rankd-Cache`.
async fn served(http: &reqwest::Client, url: &str, key: Option<&str>) -> String {
    let mut r = http.get(url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.headers()["x-rankd-cache"].to_str().unwrap().to_owned()
}

/// warm-caches reads a board's top pages into a running server's leaderboard cache and
/// clear-caches --server drops them (the server's own figures show both), each printing one line;
/// the server's refusals exit 2 in its words; a dry run sends nothing; analyze --server reports
/// each answer cache and advises on one that keeps missing. The admin process has no Redis and no
/// store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_caches_and_clear_caches_drive_a_running_servers_leaderboard_cache() {
    let app = TestApp::spawn().await;
    app.put_board("arena", serde_json::json!({"windows": ["all", "weekly"]}))
        .await;
    for i in 0..30 {
        app.submit("arena", &format!("p{i}"), f64::from(i)).await;
    }
    let dir = Scratch::new();
    let server = format!("http://{}", app.addr);
    let http = reqwest::Client::new();

    let r = admin(
        dir.path(),
        &["warm-caches", "--server", &server, "--board", "arena"],
    )
    .await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("answered 401 Unauthorized"), "{r}");
    in_words(&r);

    let warm = [
        "warm-caches",
        "--server",
        &server,
        "--board",
        "arena",
        "--window",
        "weekly",
        "--limit",
        "5",
        "--api-key",
        ADMIN,
    ];
    let r = admin(dir.path(), &[&warm[..], &["--dry-run"]].concat()).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            &*format!(
                "would warm board arena's top 5 pages (weekly window, the global board) on {server}\n"
            )
        ),
        "{r}"
    );
    assert_eq!(
        leaderboard(&http, &server, Some(ADMIN)).await["warms"],
        0,
        "a dry run warms nothing"
    );
    let r = admin(dir.path(), &warm).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            &*format!(
                "warmed board arena's top pages on {server}: 1 page(s) (weekly window, the global board), 2 cache entries kept (its top and entries forms)\n"
            )
        ),
        "{r}"
    );
    let after = leaderboard(&http, &server, Some(ADMIN)).await;
    assert!(after["warms"].as_u64().unwrap() >= 2, "{after}");

    let r = admin(
        dir.path(),
        &[
            "warm-caches",
            "--server",
            &server,
            "--board",
            "arena",
            "--limit",
            "0",
            "--api-key",
            ADMIN,
        ],
    )
    .await;
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr
            .contains("answered 400 Bad Request: limit: must be 1 to 1000, got 0"),
        "{r}"
    );

    let clear = ["clear-caches", "--server", &server, "--api-key", ADMIN];
    let r = admin(
        dir.path(),
        &[&clear[..], &["--board", "arena", "--dry-run"]].concat(),
    )
    .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            &*format!("would clear every answer cache of board arena on {server}\n")
        ),
        "{r}"
    );
    assert_eq!(
        leaderboard(&http, &server, Some(ADMIN)).await["invalidations"]["clear"],
        0,
        "a dry run clears nothing"
    );
    let r = admin(
        dir.path(),
        &[
            &clear[..],
            &["--caches", "leaderboard,scope_stats", "--board", "arena"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.starts_with(&format!(
            "cleared the leaderboard, scope_stats cache(s) of board arena on {server}: entries cleared there: leaderboard "
        )) && r.stdout.ends_with(", scope_stats 0; every other instance clears within a second\n")
            && r.stdout.lines().count() == 1,
        "{r}"
    );
    let n = cleared_leaderboard(&r);
    let after = leaderboard(&http, &server, Some(ADMIN)).await;
    assert!(n >= 1, "{r}");
    assert_eq!(after["invalidations"]["clear"], n, "{after}");
    assert_eq!(after["entries"], 0, "{after}");

    for (args, said) in [
        (
            &["--caches", "leaderboard,pages"][..],
            "answered 400 Bad Request: caches[1]: must be one of leaderboard, analytics, scope_stats, achievements, got \"pages\"",
        ),
        (&["--board", "nope"], "answered 404 Not Found: board nope is not defined"),
    ] {
        let r = admin(dir.path(), &[&clear[..], args].concat()).await;
        assert_eq!(r.code, 2, "{args:?}: {r}");
        assert!(r.stderr.contains(said), "{args:?}: {r}");
        assert!(r.stdout.is_empty(), "{args:?}: {r}");
        in_words(&r);
    }
    let r = admin(
        dir.path(),
        &["clear-caches", "--server", &server, "--boards"],
    )
    .await;
    assert_eq!(r.code, 2, "--boards is Redis' own: {r}");
    assert!(
        r.stderr.contains("--boards") && r.stderr.contains("--server"),
        "{r}"
    );

    // 1000 pages read once each, every one a miss: advice.
    for limit in 1..=1000 {
        let url = app.url(&format!("/v1/boards/arena/entries?limit={limit}&offset=0"));
        assert_eq!(served(&http, &url, Some(READER)).await, "miss", "{url}");
    }
    let r = admin(
        dir.path(),
        &["analyze", "--server", &server, "--api-key", READER],
    )
    .await;
    assert_eq!(r.code, 0, "{r}");
    for line in [
        &*format!("cache hit rate, leaderboard answers (server {server}): 0.0% (0 hits, 1000 misses), TTL 300 s; "),
        &*format!("invalidations: capacity 0, clear {n}, "),
        "cache hit rate, analytics answers (server ",
        "recommend: the server's leaderboard cache hits 0.0% of 1000 lookups (under 85%): ",
        "raise its TTL (RANKD_CACHE_TTL_LEADERBOARD_SECS, now 300 s)",
        &*format!("warm the popular pages (`rankd admin warm-caches --server {server} --board B`"),
        "check write patterns: ",
    ] {
        assert!(r.stdout.contains(line), "{line:?} missing: {r}");
    }
    assert!(!r.stdout.contains("analytics cache hits"), "{r}");
}

/// `rankd serve` with no settings (the embedded engine, no keys) and `rankd admin` with none
/// either: warm-caches, clear-caches --server and analyze --server work on it, and clear-caches
/// without --server still works on Redis, and says there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_commands_work_on_the_embedded_default() {
    use std::time::Duration;
    let dir = Scratch::new();
    let port = crate::server::free_port();
    let data = dir.path().to_owned();
    let _server = crate::helpers::spawn_rankd(port, "/readyz", Duration::from_secs(30), |c| {
        for (k, _) in std::env::vars() {
            if k.starts_with("RANKD_") {
                c.env_remove(k);
            }
        }
        c.current_dir(data);
    })
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let put = http
        .put(format!("{base}/v1/boards/xp"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    for i in 0..10 {
        let r = http
            .post(format!("{base}/v1/boards/xp/scores"))
            .json(&serde_json::json!({"member": format!("u{i}"), "value": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let r = admin(
        dir.path(),
        &["warm-caches", "--server", &base, "--board", "xp"],
    )
    .await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.contains(&format!(
            "warmed board xp's top pages on {base}: 1 page(s) (all window, the global board), 2 cache entries kept"
        )),
        "{r}"
    );
    assert!(
        leaderboard(&http, &base, None).await["warms"]
            .as_u64()
            .unwrap()
            >= 2
    );

    let r = admin(dir.path(), &["clear-caches", "--server", &base]).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout.starts_with(&format!(
            "cleared every answer cache of every board on {base}: entries cleared there: leaderboard "
        )) && r.stdout.contains(", analytics 0, scope_stats 0, achievements 0; "),
        "{r}"
    );
    let n = cleared_leaderboard(&r);
    let after = leaderboard(&http, &base, None).await;
    assert!(n >= 1, "{r}");
    assert_eq!(
        (&after["invalidations"]["clear"], &after["entries"]),
        (&serde_json::json!(n), &serde_json::json!(0)),
        "{after}"
    );

    let r = admin(dir.path(), &["analyze", "--server", &base]).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        r.stdout
            .contains("cache hit rate, leaderboard answers (server "),
        "{r}"
    );
    assert!(r.stdout.contains("recommend: nothing"), "{r}");

    let r = admin(dir.path(), &["clear-caches"]).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr
            .contains("clear-caches works on Redis: set RANKD_REDIS_URL"),
        "{r}"
    );
}
