//! Behaviour under trouble: clients that stall or crowd in, signals, and Redis going away. Tests
//! that stop Redis run their own redis-server; the shared one is never touched.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cleanup::Keyspace;
use crate::helpers::{prefix, series_value, spawn_rankd, RankdProcess, Redis};
use crate::private::PrivateRedis;
use crate::server::{free_port, raw, responses, TestApp, ADMIN, READER};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Writes a GET on an open connection and reads until one whole response came back.
async fn get_on(s: &mut TcpStream, path: &str, within: Duration) -> Vec<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    read_responses(s, within).await
}

/// Reads until a whole response came back, the connection closes, or `within` passes.
async fn read_responses(s: &mut TcpStream, within: Duration) -> Vec<u16> {
    let end = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while responses(&out).is_empty() {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    responses(&out)
}

// ---------------------------------------------------------------------------------------------
// Slow and greedy clients
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_stalling_in_its_headers_is_disconnected_after_the_read_timeout() {
    let app = TestApp::spawn_with(|c| c.read_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Half: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // Whatever the server says (if anything), it must then close the connection.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("a stalled client was not disconnected within 5 s"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "disconnected after {took:?}"
    );
    assert!(
        responses(&got).iter().all(|s| *s >= 400 && *s < 500),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let r = app.req(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// An answer given before the request's body was read (a refused board id, an unknown route, a
/// body a route does not take) says `Connection: close`, since the connection ends with it: a
/// keep-alive client would otherwise send its next request into a closed socket. Answers that
/// read their body whole keep the connection.
#[tokio::test]
async fn an_answer_that_leaves_the_body_unread_closes_the_connection_and_says_so() {
    let app = TestApp::spawn().await;
    app.put_board("kept", json!({})).await;
    let body = format!("{{\"member\": \"{}\", \"value\": 1}}", "x".repeat(300_000));
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let healthz = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    for first in [
        post("/v1/boards/bad%20id/scores", &body),
        post("/v1/no/such/route", &body),
        format!(
            "GET /v1/boards/kept HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    ] {
        let out = raw(
            app.addr,
            format!("{first}{healthz}").as_bytes(),
            Duration::from_secs(5),
            Duration::from_millis(300),
        )
        .await;
        let got = responses(&out);
        let head = String::from_utf8_lossy(&out[..out.len().min(4096)]).to_ascii_lowercase();
        let head = head.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        assert!(!got.is_empty(), "no answer to {}", &first[..40]);
        assert!(
            got.len() == 2 || head.contains("\r\nconnection: close"),
            "{}: the connection ended after {got:?} without saying so:\n{head}",
            &first[..40]
        );
    }
    // A body read whole: the connection stays, and the next request on it is answered.
    let ok = post("/v1/boards/kept/scores", r#"{"member": "a", "value": 1}"#);
    let out = raw(
        app.addr,
        format!("{ok}{healthz}").as_bytes(),
        Duration::from_secs(5),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(responses(&out), vec![200, 200]);
}

#[tokio::test]
async fn a_client_stalling_in_its_body_gets_408_after_the_read_timeout() {
    let app = TestApp::spawn_with(|c| c.read_timeout = Duration::from_secs(1)).await;
    app.put_board("slow", json!({})).await;
    let head = format!(
        "POST /v1/boards/slow/scores HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"member\": "
    );
    let started = Instant::now();
    let out = raw(
        app.addr,
        head.as_bytes(),
        Duration::from_secs(5),
        Duration::from_millis(50),
    )
    .await;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(responses(&out), [408], "{text}");
    assert!(
        text.contains("application/problem+json") && text.contains("\"field\":\"body\""),
        "{text}"
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    let v: Value = app.get("/v1/boards/slow/top").await.json().await.unwrap();
    assert_eq!(v["total"], 0);
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_disconnected_and_frees_its_slot() {
    let app = TestApp::spawn_with(|c| {
        c.read_timeout = Duration::from_secs(1);
        c.max_connections = 1;
    })
    .await;
    // A small receive buffer, and requests for a large document, which it never reads: the
    // server's writes fill both buffers and then wait.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut greedy = sock.connect(app.addr).await.unwrap();
    let requests = "GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n".repeat(400);
    greedy.write_all(requests.as_bytes()).await.unwrap();
    // The only slot is taken until the server gives up on it; then the next client is served.
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        app.req(Method::GET, "/healthz", None).send(),
    )
    .await
    .expect("a client that reads nothing held the only connection slot for 10 s")
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "served after {:?}: was the slot ever taken?",
        started.elapsed()
    );
    // The greedy connection is closed: reading what it was sent ends.
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), greedy.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => assert!(Instant::now() < deadline, "the connection stayed open"),
            Err(_) => panic!("the connection stayed open, silent"),
        }
    }
}

#[tokio::test]
async fn connections_past_the_cap_wait_and_are_served_once_earlier_ones_close() {
    let app = TestApp::spawn_with(|c| c.max_connections = 2).await;
    let second = Duration::from_secs(1);
    let mut a = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(get_on(&mut a, "/healthz", second).await, [200]);
    let mut b = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(get_on(&mut b, "/healthz", second).await, [200]);
    // The third waits in the backlog: connected, but not served.
    let mut c = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(
        get_on(&mut c, "/healthz", Duration::from_millis(500)).await,
        [] as [u16; 0],
        "a connection past the cap was served"
    );
    // Those already in keep being served.
    assert_eq!(get_on(&mut b, "/readyz", second).await, [200]);
    // One leaves: the waiting one is served.
    drop(a);
    assert_eq!(read_responses(&mut c, Duration::from_secs(3)).await, [200]);
    assert_eq!(get_on(&mut c, "/healthz", second).await, [200]);
    drop((b, c));
    let r = app.req(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Signals, with the real binary
// ---------------------------------------------------------------------------------------------

const BIN_ADMIN: &str = "bin-admin-9f3c1e7a2b";
const BIN_READER: &str = "bin-reader-5d8e0c4f6a";
const BIN_WRONG: &str = "bin-wrong-key-71b2a9d0";

/// `rankd serve` as a child process on a free port, logging at debug level to a file.
struct Binary {
    child: RankdProcess,
    addr: SocketAddr,
    log: PathBuf,
    /// Its key prefix on the shared Redis, whose keys go when the binary does.
    keys: Keyspace,
    http: reqwest::Client,
}

impl Binary {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts the binary, `configure` adding to (or overriding) its usual settings.
    async fn start_with(configure: impl FnOnce(&mut Command)) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let keys = Keyspace::new(Redis::Standalone);
        let log = std::env::temp_dir().join(format!(
            "rankd-it-{}-{port}.log",
            keys.prefix().trim_end_matches(':')
        ));
        let file = std::fs::File::create(&log).unwrap();
        // Ready, not only live: /healthz answers from the first moment, before the engine is up.
        let child = spawn_rankd(port, "/readyz", Duration::from_secs(15), |c| {
            c.args(["--redis-url", &Redis::Standalone.url()])
                .args(["--key-prefix", keys.prefix()])
                .env(
                    "RANKD_API_KEYS",
                    format!("{BIN_ADMIN}:admin,{BIN_READER}:read"),
                )
                .env("RANKD_LOG", "debug")
                .env("RANKD_SHUTDOWN_GRACE_SECS", "5")
                .stdout(file.try_clone().unwrap())
                .stderr(file);
            configure(c);
        })
        .await;
        Self {
            child,
            addr,
            log,
            keys,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit, and returns its exit code.
    async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("rankd did not exit within {within:?}: {}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Some traffic with good, wrong and underprivileged keys, so that the log has requests in it.
    async fn traffic(&self) {
        let put = |key: &str| {
            self.http
                .put(self.url("/v1/boards/sig"))
                .bearer_auth(key)
                .json(&json!({}))
        };
        assert!(put(BIN_ADMIN).send().await.unwrap().status().is_success());
        assert_eq!(put(BIN_READER).send().await.unwrap().status(), 403);
        assert_eq!(put(BIN_WRONG).send().await.unwrap().status(), 401);
        let r = self
            .http
            .get(self.url("/v1/boards/sig/top"))
            .bearer_auth(BIN_READER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// Asserts the log has lines in it and no API key anywhere.
    fn assert_no_key_in_logs(&self) {
        let logs = self.logs();
        assert!(
            logs.contains("rankd listening"),
            "the log was captured: {logs}"
        );
        for key in [BIN_ADMIN, BIN_READER, BIN_WRONG] {
            assert!(!logs.contains(key), "an API key reached the log:\n{logs}");
        }
    }
}

/// A score posted to board `sig` with the admin key, in flight: its headers and the first half of
/// `body` sent. Returns the connection and the part of the body still owed.
async fn half_sent_score(addr: SocketAddr, body: &'static [u8]) -> (TcpStream, &'static [u8]) {
    let (first, rest) = body.split_at(body.len() / 2);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/boards/sig/scores HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {BIN_ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    (s, rest)
}

impl Drop for Binary {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_of_every_request() {
    let mut bin = Binary::start_with(|c| {
        c.env("RANKD_LOG_FORMAT", "json")
            .env("RANKD_LOG", "rankd=debug");
    })
    .await;
    let mut ids = Vec::new();
    for (path, status) in [("/v1/boards/nothing/top", 404), ("/healthz", 200)] {
        let r = bin
            .http
            .get(bin.url(path))
            .bearer_auth(BIN_READER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        ids.push((
            r.headers()["x-request-id"].to_str().unwrap().to_owned(),
            path,
            status,
        ));
    }
    bin.signal("-TERM");
    assert_eq!(bin.exit_code(Duration::from_secs(10)).await, Some(0));
    let logs = bin.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "rankd listening"),
        "{logs}"
    );
    for (id, path, status) in ids {
        let served: Vec<&Value> = lines
            .iter()
            .filter(|l| {
                l["span"]["request_id"] == id.as_str() && l["fields"]["message"] == "request served"
            })
            .collect();
        assert_eq!(served.len(), 1, "one line for {path} ({id}): {logs}");
        let l = served[0];
        assert_eq!(l["span"]["name"], "request", "{l}");
        assert_eq!(l["span"]["method"], "GET", "{l}");
        assert_eq!(l["fields"]["message"], "request served", "{l}");
        assert_eq!(l["fields"]["status"], status, "{l}");
    }
    bin.assert_no_key_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outliving_the_grace_period_is_cut_and_rankd_still_exits_0() {
    let mut bin = Binary::start_with(|c| {
        c.env("RANKD_SHUTDOWN_GRACE_SECS", "1");
    })
    .await;
    // The rest of the body never sent: in flight until the body read timeout (10 s).
    let (mut s, _) = half_sent_score(bin.addr, br#"{"member": "stuck", "value": 1}"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    bin.signal("-TERM");
    assert_eq!(bin.exit_code(Duration::from_secs(8)).await, Some(0));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "the request in flight got its grace period: exited after {took:?}"
    );
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("200 OK"),
        "the cut request was not answered as served"
    );
    let logs = bin.logs();
    assert!(logs.contains("grace period over"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_finishes_the_request_in_flight_and_exits_0() {
    let mut bin = Binary::start().await;
    bin.traffic().await;
    // A request in flight: the rest of its body still to come.
    let (mut s, rest) = half_sent_score(bin.addr, br#"{"member": "inflight", "value": 42}"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An idle keep-alive connection, to be closed by the shutdown.
    let mut idle = TcpStream::connect(bin.addr).await.unwrap();
    assert_eq!(
        get_on(&mut idle, "/healthz", Duration::from_secs(2)).await,
        [200]
    );

    bin.signal("-TERM");
    // New connections are refused while the request in flight is still being served.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(bin.addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "still accepting connections after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        bin.child.try_wait().unwrap().is_none(),
        "rankd exited with a request in flight"
    );
    // The idle connection is closed.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed on shutdown")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    // The request in flight completes.
    s.write_all(rest).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert_eq!(responses(&out), [200], "{}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).contains("\"member\":\"inflight\""));

    assert_eq!(bin.exit_code(Duration::from_secs(10)).await, Some(0));
    let logs = bin.logs();
    assert!(logs.contains("SIGTERM received"), "{logs}");
    bin.assert_no_key_in_logs();
    // What the request wrote is there.
    let prefix = bin.keys.prefix().to_owned();
    let app = TestApp::spawn_with(|c| c.key_prefix = prefix).await;
    let v: Value = app
        .get("/v1/boards/sig/members/inflight")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["score"], 42.0, "{v}");
}

/// What the rankd binary logs until `ready_path` answers 200, started as `configure` says.
async fn start_up_logs(
    name: &str,
    ready_path: &str,
    configure: impl FnOnce(&mut Command),
) -> String {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("rankd-it-{name}-{port}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = spawn_rankd(port, ready_path, Duration::from_secs(15), |c| {
        configure(c);
        c.stdout(file.try_clone().unwrap()).stderr(file);
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    logs
}

#[tokio::test]
async fn without_api_keys_the_server_warns_that_every_route_is_open() {
    let logs = start_up_logs("nokeys", "/healthz", |c| {
        c.args(["--redis-url", &Redis::Standalone.url()])
            .args(["--key-prefix", &prefix()])
            .env("RANKD_API_KEYS", "");
    })
    .await;
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("NO AUTHENTICATION")
            && l.contains("RANKD_API_KEYS")),
        "{logs}"
    );
}

#[tokio::test]
async fn async_durability_warns_at_start_up_what_it_can_lose() {
    let dir = std::env::temp_dir().join(format!("rankd-it-async-{}", free_port()));
    let logs = start_up_logs("async", "/readyz", |c| {
        c.env("RANKD_DATA_DIR", &dir)
            .env_remove("RANKD_REDIS_URL")
            .env("RANKD_DURABILITY", "async");
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("ASYNC DURABILITY")
            && l.contains("lost")
            && l.contains("RANKD_DURABILITY=sync")),
        "{logs}"
    );
}

#[tokio::test]
async fn sigint_stops_the_server_and_exits_0() {
    let mut bin = Binary::start().await;
    bin.traffic().await;
    // The binary's own recorder holds what was set while the engine was built, before the app.
    let metrics = bin.http.get(bin.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "rankd_store_durable 0"),
        "no store, yet /metrics lacks rankd_store_durable 0:\n{metrics}"
    );
    bin.signal("-INT");
    assert_eq!(bin.exit_code(Duration::from_secs(10)).await, Some(0));
    assert!(bin.logs().contains("SIGINT received"), "{}", bin.logs());
    bin.assert_no_key_in_logs();
    let r = TcpStream::connect(bin.addr).await;
    assert!(r.is_err(), "nothing listens after exit");
}

// ---------------------------------------------------------------------------------------------
// Redis going away
// ---------------------------------------------------------------------------------------------

/// Asserts a fast 503 with Retry-After, the request id in the body, and nothing internal.
async fn unavailable(
    app: &TestApp,
    redis: &PrivateRedis,
    method: Method,
    path: &str,
    body: Option<Value>,
) {
    let started = Instant::now();
    let r = app.req(method.clone(), path, Some(ADMIN));
    let r = match body {
        Some(b) => r.json(&b),
        None => r,
    };
    let r = r.send().await.unwrap();
    let took = started.elapsed();
    let what = format!("{method} {path}");
    assert!(took < Duration::from_millis(500), "{what} took {took:?}");
    assert_eq!(r.status(), 503, "{what}");
    assert!(r.headers().contains_key("retry-after"), "{what}");
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], 503, "{text}");
    assert_eq!(v["request_id"], id.as_str(), "{what}: {text}");
    let lower = text.to_lowercase();
    for internal in [
        &redis.port.to_string(),
        "127.0.0.1",
        "refused",
        "io error",
        "connect",
        "redis://",
    ] {
        assert!(
            !lower.contains(internal),
            "{what} leaks {internal:?}: {text}"
        );
    }
}

/// The requests [`unavailable`] checks while Redis is down: one per kind of backend work.
async fn every_kind_of_request_is_unavailable(app: &TestApp, redis: &PrivateRedis) {
    unavailable(app, redis, Method::GET, "/readyz", None).await;
    unavailable(app, redis, Method::GET, "/v1/boards/down/top", None).await;
    unavailable(
        app,
        redis,
        Method::POST,
        "/v1/boards/down/scores",
        Some(json!({"member": "b", "value": 2})),
    )
    .await;
    unavailable(
        app,
        redis,
        Method::POST,
        "/v1/scores/batch",
        Some(json!({"events": [{"board": "down", "member": "c", "value": 3}]})),
    )
    .await;
    unavailable(app, redis, Method::GET, "/v1/boards/down/members/a", None).await;
    unavailable(app, redis, Method::PUT, "/v1/boards/other", Some(json!({}))).await;
    unavailable(app, redis, Method::GET, "/v1/boards", None).await;
    unavailable(app, redis, Method::GET, "/v1/stats/cache", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_dies_requests_fail_fast_with_503_retry_after_and_the_request_id() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(|c| c.redis_url = Some(url)).await;
    app.put_board("down", json!({})).await;
    app.submit("down", "a", 1.0).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    redis.kill();
    // Straight away, and again while the server keeps trying to reconnect.
    for _ in 0..3 {
        every_kind_of_request_is_unavailable(&app, &redis).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Probes that need no backend still answer.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn readyz_loads_the_scripts_redis_lost_before_it_answers_200() {
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(|c| c.redis_url = Some(url)).await;
    let sha = rankd::engine::scripts::SUBMIT.sha1();
    let exists = || {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "SCRIPT", "EXISTS", sha])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(exists(), "1", "loaded at start");
    let flushed = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "SCRIPT", "FLUSH"])
        .output()
        .unwrap();
    assert!(flushed.status.success());
    assert_eq!(exists(), "0");
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(exists(), "1", "ready means the scripts are loaded again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_returns_empty_the_server_recovers_by_itself_and_reloads_its_scripts() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(|c| c.redis_url = Some(url)).await;
    app.put_board("down", json!({})).await;
    app.submit("down", "a", 1.0).await;
    let script_hits = |v: Value| v["caches"]["scripts"]["hits"].as_u64().unwrap();
    let before = script_hits(app.get("/v1/stats/cache").await.json().await.unwrap());
    redis.kill();
    // Calls refused while Redis is away never looked for their script: no hit, no miss.
    for _ in 0..30 {
        assert_eq!(app.get("/v1/boards/down/top").await.status(), 503);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.get("/readyz").await;
        if r.status() == 503 {
            assert!(r.headers().contains_key("retry-after"));
            let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
            let v: Value = r.json().await.unwrap();
            assert_eq!(
                v["request_id"],
                id.as_str(),
                "5xx bodies carry the request id: {v}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never noticed Redis died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Redis comes back empty: no data, no scripts. rankd, not restarted, reconnects and reloads
    // its scripts on NOSCRIPT by itself.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .send_json(Method::PUT, "/v1/boards/down", json!({}))
            .await;
        if r.status().is_success() {
            break;
        }
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
        assert!(
            Instant::now() < deadline,
            "rankd did not recover within 10 s of Redis coming back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = app.submit("down", "b", 2.0).await;
    assert_eq!(v["results"][0]["rank"], 1);
    let r = app
        .send_json(
            Method::POST,
            "/v1/scores/batch",
            json!({"events": [{"board": "down", "member": "c", "value": 3}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = app.get("/v1/boards/down/top").await.json().await.unwrap();
    assert_eq!(v["total"], 2, "{v}");
    assert_eq!(app.get("/readyz").await.status(), 200);
    let v: Value = app
        .req(Method::GET, "/v1/stats/cache", Some(READER))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["caches"]["scripts"]["misses"].as_u64().unwrap() >= 1,
        "the scripts were reloaded: {v}"
    );
    // The few calls since Redis came back, not the 30 refused during the outage.
    let hits = script_hits(v.clone()) - before;
    assert!(
        hits < 30,
        "{hits} script hits counted, outage included: {v}"
    );
    redis.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_several_boards_redis_leaves_unanswered_is_unconfirmed_never_unavailable() {
    use rankd::backend::Executor;
    use rankd::board::{BoardDef, BoardId, EventId, Member, Score};
    use rankd::engine::{Submit, View};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crate::helpers::{Hooked, Sending};

    let redis = Arc::new(PrivateRedis::start().await);
    let mut rc = rankd::backend::redis::RedisConfig::new(redis.url());
    rc.command_timeout = Duration::from_millis(300);
    let inner = rankd::backend::redis::RedisExecutor::connect(&rc)
        .await
        .unwrap();
    // Armed, Redis stops just as the batch's calls go out, after every check that reads first.
    let armed = Arc::new(AtomicBool::new(false));
    let (fire, paused) = (armed.clone(), redis.clone());
    let exec = Hooked {
        inner: Arc::new(inner),
        hook: Box::new(move |sending| {
            if let Sending::Many(calls) = sending {
                if calls.len() > 1
                    && calls
                        .iter()
                        .all(|c| c.script.name() == rankd::engine::scripts::SUBMIT.name())
                    && fire.swap(false, Ordering::SeqCst)
                {
                    paused.pause();
                }
            }
            None
        }),
    };
    let exec: Arc<dyn Executor> = Arc::new(exec);
    let e = crate::helpers::engine_on(exec).await;
    let boards: Vec<BoardId> = (1..=3)
        .map(|n| BoardId::parse(&format!("pb{n}")).unwrap())
        .collect();
    for b in &boards {
        e.put_board(b, BoardDef::default()).await.unwrap();
    }
    let events: Vec<Submit> = (0..6)
        .map(|i| {
            let mut ev = Submit::new(
                boards[i % 3].clone(),
                Member::parse(&format!("m{i}")).unwrap(),
                Score::new("value", 50.0).unwrap(),
            );
            ev.event_id = Some(EventId::parse(&format!("pb-{i}")).unwrap());
            ev
        })
        .collect();
    armed.store(true, Ordering::SeqCst);
    let got = e.submit_batch(&events).await;
    assert!(
        !armed.load(Ordering::SeqCst),
        "the batch went out as one pipeline"
    );
    match got {
        Err(rankd::error::Error::Unconfirmed { detail, .. }) => {
            assert!(detail.contains("0-5"), "{detail}")
        }
        other => panic!("a batch Redis was sent must not be called unapplied: {other:?}"),
    }
    // It ran once Redis went on: each event once.
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    let scores = || async {
        let mut out = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let s = e
                .standing(&ev.board, &View::all_time(), &ev.member)
                .await
                .map(|s| s.score);
            out.push(s.map_err(|err| format!("m{i}: {err}")));
        }
        out
    };
    loop {
        let got = scores().await;
        if got.iter().all(Result::is_ok) {
            assert!(
                got.iter().all(|s| s.as_ref().ok() == Some(&50.0)),
                "{got:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis did not come back: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Resent with its event ids, as the answer says: nothing applies twice.
    let again = e.submit_batch(&events).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 6));
    let got = scores().await;
    assert!(
        got.iter().all(|s| s.as_ref().ok() == Some(&50.0)),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_redis_leaves_unanswered_is_unconfirmed_and_its_event_id_applies_it_once() {
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(|c| {
        c.redis_url = Some(url);
        c.redis_timeout = Duration::from_millis(300);
    })
    .await;
    app.put_board("slow", json!({})).await;
    app.submit("slow", "a", 1.0).await;
    let write = || {
        app.send_json(
            Method::POST,
            "/v1/boards/slow/scores",
            json!({"member": "a", "value": 5, "event_id": "slow-1"}),
        )
    };
    // Redis takes the call and does not answer: rankd cannot say whether it will be applied.
    redis.pause();
    let started = Instant::now();
    let r = write().await;
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(
        took < Duration::from_secs(3),
        "waited {took:?}, not the 300 ms timeout"
    );
    assert!(r.headers().contains_key("retry-after"));
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:rankd:problem:unconfirmed", "{v}");
    assert_eq!(v["request_id"], id.as_str(), "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("event_id"), "{v}");
    assert!(!detail.contains("timed out"), "no internal detail: {v}");
    // Requests after it are not sent to a Redis known not to answer: nothing of theirs applies.
    let r = app
        .send_json(
            Method::POST,
            "/v1/boards/slow/scores",
            json!({"member": "b", "value": 7}),
        )
        .await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:rankd:problem:unavailable", "{v}");

    // Redis runs what it had been sent: the unconfirmed write was applied after all.
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/readyz").await.status() != 200 {
        assert!(Instant::now() < deadline, "rankd did not see Redis back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v: Value = app
        .get("/v1/boards/slow/members/a")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["score"], 6.0, "{v}");
    assert_eq!(
        app.get("/v1/boards/slow/members/b").await.status(),
        404,
        "the write refused fast was never sent"
    );
    // Resent with its event id, as the answer said: applied once.
    let r = write().await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["duplicate"], true, "{v}");
    let v: Value = app
        .get("/v1/boards/slow/members/a")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["score"], 6.0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_before_redis_the_server_is_live_not_ready_and_serves_once_redis_comes() {
    let redis_port = free_port();
    let port = free_port();
    let prefix = prefix();
    // Nothing listens on redis_port yet: spawn_rankd waits for /healthz, which must answer.
    let mut child = spawn_rankd(port, "/healthz", Duration::from_secs(15), |c| {
        c.args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
            .args(["--key-prefix", &prefix])
            .env("RANKD_API_KEYS", format!("{BIN_ADMIN}:admin"));
    })
    .await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for path in ["/readyz", "/v1/boards/early/top"] {
        let r = http
            .get(url(path))
            .bearer_auth(BIN_ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert!(r.headers().contains_key("retry-after"), "{path}");
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["request_id"], id.as_str(), "{path}: {v}");
        assert_eq!(v["type"], "urn:rankd:problem:unavailable", "{path}: {v}");
    }
    let metrics = http.get(url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines().any(|l| l == "rankd_backend_up 0"),
        "the unreachable-backend alert sees it: {text}"
    );

    let mut redis = PrivateRedis::start_on(redis_port).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while http.get(url("/readyz")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "not ready 15 s after Redis came");
        assert!(child.try_wait().unwrap().is_none(), "rankd exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .put(url("/v1/boards/early"))
        .bearer_auth(BIN_ADMIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let top = || {
        http.get(url("/v1/boards/early/top"))
            .bearer_auth(BIN_ADMIN)
            .send()
    };
    assert_eq!(top().await.unwrap().status(), 200);

    // Redis dies while rankd serves: /metrics says so, and counts the errors it met.
    let scrape = || async {
        let text = http
            .get(url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (
            series_value(&text, "rankd_backend_up"),
            series_value(&text, "rankd_backend_errors_total"),
        )
    };
    let (up, errors_before) = scrape().await;
    assert_eq!(up, 1.0, "the readiness checks saw Redis up");
    redis.kill();
    assert_eq!(top().await.unwrap().status(), 503);
    assert_eq!(http.get(url("/readyz")).send().await.unwrap().status(), 503);
    let (up, errors) = scrape().await;
    assert_eq!(up, 0.0, "the unreachable-backend alert sees Redis gone");
    assert!(
        errors > errors_before,
        "Redis errors counted: {errors_before} → {errors}"
    );
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = crate::helpers::exit_status(&mut child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "a clean exit with Redis gone too");
}

#[tokio::test]
async fn while_starting_each_answer_is_logged_with_its_request_id() {
    let redis_port = free_port();
    let port = free_port();
    let log = std::env::temp_dir().join(format!("rankd-it-starting-{port}.log"));
    let file = std::fs::File::create(&log).unwrap();
    // Nothing listens on redis_port: rankd stays in its start-up responder.
    let mut child = spawn_rankd(port, "/healthz", Duration::from_secs(15), |c| {
        c.args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
            .env("RANKD_API_KEYS", format!("{BIN_ADMIN}:admin"))
            .env("RANKD_LOG_FORMAT", "json")
            .env("RANKD_LOG", "rankd=debug")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
    })
    .await;
    let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    let line: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["span"]["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no log line carries {id}: {logs}"));
    assert_eq!(line["fields"]["status"], 503, "{line}");
    assert_eq!(line["span"]["method"], "GET", "{line}");
}

#[tokio::test]
async fn while_starting_connections_past_the_cap_wait_too() {
    let redis_port = free_port();
    let port = free_port();
    // Nothing listens on redis_port: rankd stays in its start-up responder.
    let _child = spawn_rankd(port, "/healthz", Duration::from_secs(15), |c| {
        c.args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
            .env("RANKD_MAX_CONNECTIONS", "2")
            .env("RANKD_API_KEYS", format!("{BIN_ADMIN}:admin"));
    })
    .await;
    let addr = format!("127.0.0.1:{port}");
    // Two connections that send nothing hold both places until the header read timeout.
    let a = TcpStream::connect(&addr).await.unwrap();
    let _b = TcpStream::connect(&addr).await.unwrap();
    let mut c = TcpStream::connect(&addr).await.unwrap();
    // Longer than the longest pause between two start attempts (5 s): the cap holds across them.
    assert_eq!(
        get_on(&mut c, "/healthz", Duration::from_millis(5_500)).await,
        [] as [u16; 0],
        "a connection past the cap was served"
    );
    drop(a);
    assert_eq!(read_responses(&mut c, Duration::from_secs(3)).await, [200]);
}

#[tokio::test]
async fn a_refused_redis_password_ends_the_start_with_a_message_naming_redis_url() {
    let redis_port = free_port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--requirepass", "right"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "private redis-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rankd"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--redis-url",
            &format!("redis://:wrong@127.0.0.1:{redis_port}"),
        ])
        .env_remove("RANKD_API_KEYS")
        .env_remove("RANKD_CONFIG")
        .env("RANKD_DATA_DIR", "")
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(15), out)
        .await
        .expect("a refused password does not make rankd wait for Redis")
        .unwrap();
    let _ = redis.kill();
    let _ = redis.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("redis_url"), "{stderr}");
    assert!(stderr.contains("WRONGPASS"), "{stderr}");
    assert!(
        !stderr.contains(":wrong@"),
        "the password stays out of the log: {stderr}"
    );
}

#[tokio::test]
async fn a_database_that_does_not_exist_ends_the_start_with_a_message_naming_database_url() {
    let base = std::env::var("RANKD_TEST_DATABASE_URL").expect("RANKD_TEST_DATABASE_URL is set");
    let url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/rankd_no_such_database"),
        None => panic!("{base} names no database"),
    };
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rankd"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--redis-url", &Redis::Standalone.url()])
        .args(["--database-url", &url])
        .env_remove("RANKD_API_KEYS")
        .env_remove("RANKD_CONFIG")
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(15), out)
        .await
        .expect("a database that does not exist does not make rankd wait for it")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("database_url"), "{stderr}");
    assert!(stderr.contains("rankd_no_such_database"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_attempts_that_fail_on_the_store_leave_no_redis_connections_behind() {
    let redis = PrivateRedis::start().await;
    let port = free_port();
    // Redis answers, the store does not (nothing listens on a fresh free port): every attempt
    // connects to Redis, then gives up on the store.
    let store = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let _child = spawn_rankd(port, "/healthz", Duration::from_secs(15), |c| {
        c.args(["--redis-url", &redis.url()])
            .args(["--database-url", &store]);
    })
    .await;
    let clients = || {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "CLIENT", "LIST"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    // Attempts at 0.25, 0.5, 1 and 2 s apart: four or more within 5 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = clients();
    assert!(
        n <= 4,
        "{n} connections: the abandoned attempts' pools stayed connected"
    );
}

/// Without API keys, a web page the user visits must not be able to write: it cannot send JSON
/// without a preflight (a body without `Content-Type: application/json` is refused, 415), and a
/// page that reaches 127.0.0.1 under a name of its own (DNS rebinding) carries that name as Host
/// (refused, 403 naming `host`).
#[tokio::test]
async fn without_api_keys_only_json_to_a_loopback_host_is_taken() {
    let app = TestApp::spawn_with(|c| c.api_keys.clear()).await;
    let board = |host: &str, ct: Option<&str>| {
        let ct = ct.map_or(String::new(), |ct| format!("Content-Type: {ct}\r\n"));
        format!(
            "PUT /v1/boards/open HTTP/1.1\r\nHost: {host}\r\n{ct}Content-Length: 2\r\n\
             Connection: close\r\n\r\n{{}}"
        )
    };
    let status = |req: String| async move {
        responses(
            &raw(
                app.addr,
                req.as_bytes(),
                Duration::from_secs(5),
                Duration::from_millis(200),
            )
            .await,
        )
    };
    assert_eq!(
        status(board("evil.example", Some("application/json"))).await,
        vec![403]
    );
    assert_eq!(
        status(board("127.0.0.1.evil.example:80", Some("application/json"))).await,
        vec![403]
    );
    assert_eq!(status(board("127.0.0.1", None)).await, vec![415]);
    assert_eq!(
        status(board("127.0.0.1", Some("text/plain"))).await,
        vec![415]
    );
    assert_eq!(
        status(board("localhost:8080", Some("application/json"))).await,
        vec![201]
    );
    let got = app
        .http
        .get(app.url("/v1/boards/open"))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 403);
    let v: Value = got.json().await.unwrap();
    assert_eq!(v["field"], "host", "{v}");
}

/// `/metrics` can require a key of its own, and can leave out the per-board series that name every
/// board to whoever scrapes it.
#[tokio::test]
async fn metrics_take_a_key_of_their_own_and_can_name_no_board() {
    let app = TestApp::spawn_with(|c| {
        c.metrics_key = Some("scrape-key".into());
        c.metrics_boards = false;
        c.metrics_sample = Duration::from_secs(1);
    })
    .await;
    app.put_board("secretive", json!({})).await;
    app.submit("secretive", "a", 1.0).await;
    let metrics = |key: Option<&'static str>| {
        let mut r = app.http.get(app.url("/metrics"));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    assert_eq!(metrics(None).await.unwrap().status(), 401);
    assert_eq!(metrics(Some(ADMIN)).await.unwrap().status(), 401);
    // Past a board-size sample: still no series names the board.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = metrics(Some("scrape-key")).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("rankd_http_requests_total"), "{text}");
    assert!(!text.contains("secretive"), "{text}");
    app.stop().await;

    // The default: open, one series per board.
    let app = TestApp::spawn_with(|c| c.metrics_sample = Duration::from_secs(1)).await;
    app.put_board("visible", json!({})).await;
    app.submit("visible", "a", 1.0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("rankd_board_members{board=\"visible\"}") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no series for the board:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A lookup of a thousand members goes to Redis in calls of at most 64 members, each holding Redis
/// about a millisecond at most on a big key, and answers as one call would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_of_many_members_holds_redis_a_bounded_time_per_call() {
    use rankd::board::{BoardDef, BoardId, Member, Score};
    use rankd::engine::{Submit, View};
    use std::sync::{Arc, Mutex};

    use crate::helpers::{Hooked, Sending};

    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = sizes.clone();
    let exec = Hooked::on(
        &Redis::Standalone.url(),
        Box::new(move |sending| {
            if let Sending::One(call) = sending {
                if call.script.name() == rankd::engine::scripts::READ_MEMBERS.name() {
                    // Five arguments before the members.
                    seen.lock().unwrap().push(call.args.len() - 5);
                }
            }
            None
        }),
    )
    .await;
    let e = crate::helpers::engine_on(Arc::new(exec)).await;
    let b = BoardId::parse("many").unwrap();
    e.put_board(&b, BoardDef::default()).await.unwrap();
    let events: Vec<Submit> = (0..1000)
        .map(|i| {
            Submit::new(
                b.clone(),
                Member::parse(&format!("u{i}")).unwrap(),
                Score::new("value", f64::from(i)).unwrap(),
            )
        })
        .collect();
    e.submit_batch(&events).await.unwrap();
    let asked: Vec<Member> = (0..500)
        .map(|i| Member::parse(&format!("u{}", i * 2)).unwrap())
        .chain((0..500).map(|i| Member::parse(&format!("ghost{i}")).unwrap()))
        .collect();
    sizes.lock().unwrap().clear();
    let got = e.lookup(&b, &View::all_time(), &asked).await.unwrap();
    assert_eq!(got.total, 1000);
    assert_eq!(got.missing.len(), 500);
    let ranks: Vec<(u64, String)> = got
        .entries
        .iter()
        .map(|x| (x.rank, x.member.clone()))
        .collect();
    let want: Vec<(u64, String)> = (0..500)
        .rev()
        .map(|i| (1000 - 2 * i as u64, format!("u{}", i * 2)))
        .collect();
    assert_eq!(ranks, want);
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 1000, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 64), "{sizes:?}");
    e.delete_board(&b).await.unwrap();
}

/// A board found undefined is answered "not found" from memory for a second, without a Redis call
/// (or, with a store, a store query) each time; defining it on the same instance ends that at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_board_that_does_not_exist_are_answered_from_memory_briefly() {
    use rankd::board::{BoardDef, BoardId, Member};
    use rankd::engine::View;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::helpers::{Hooked, Sending};

    let fetches = Arc::new(AtomicUsize::new(0));
    let seen = fetches.clone();
    let exec = Hooked::on(
        &Redis::Standalone.url(),
        Box::new(move |sending| {
            if let Sending::One(call) = sending {
                if call.script.name() == rankd::engine::scripts::BOARD_GET.name() {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
            None
        }),
    )
    .await;
    let e = crate::helpers::engine_on(Arc::new(exec)).await;
    let b = BoardId::parse("nosuch").unwrap();
    let who = Member::parse("a").unwrap();
    let all = View::all_time();
    let read = || e.standing(&b, &all, &who);
    for _ in 0..20 {
        assert!(matches!(read().await, Err(rankd::Error::BoardNotFound(_))));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "one look, then memory");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(read().await, Err(rankd::Error::BoardNotFound(_))));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "looked again after a second"
    );
    e.put_board(&b, BoardDef::default()).await.unwrap();
    assert!(
        matches!(read().await, Err(rankd::Error::MemberNotFound { .. })),
        "defined here: seen at once"
    );
    e.delete_board(&b).await.unwrap();
}

/// With `RANKD_RATE_LIMIT`, a key that sends more requests a second than that gets 429 with
/// Retry-After; other keys are not affected, and the key is served again a second later.
#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_others_go_on() {
    let app = TestApp::spawn_with(|c| c.rate_limit = 3).await;
    app.put_board("limited", json!({})).await;
    let read = |key: &'static str| {
        app.req(Method::GET, "/v1/boards/limited/top", Some(key))
            .send()
    };
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let r = read(READER).await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 && limited.is_none() {
            limited = Some(r);
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = limited.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:rankd:problem:rate-limited", "{v}");
    assert_eq!(
        read(ADMIN).await.unwrap().status(),
        200,
        "another key has its own rate"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(read(READER).await.unwrap().status(), 200);
}
