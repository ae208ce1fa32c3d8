//! Spawning the real server on port 0 against real Redis, and a real HTTP client for it.

use std::net::SocketAddr;
use std::sync::Arc;

use rankd::config::{ApiKey, Config};
use rankd::engine::SystemClock;
use rankd::http::App;
use tokio_util::sync::CancellationToken;

use crate::cleanup::Keyspace;
use crate::helpers::{prefix, Redis};

/// Keys every test server accepts.
pub const ADMIN: &str = "test-admin-key";
pub const WRITER: &str = "test-writer-key";
pub const READER: &str = "test-reader-key";

/// A running server, and the guard of what it made: dropped, it stops the server and deletes the
/// keys of its key prefix.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    pub config: Config,
    /// The keys of the prefix the server was made with, deleted once it is told to stop (fields
    /// drop after [`Drop::drop`]). None when `tweak` pointed it at a prefix or a Redis that is not
    /// its own: whoever made that one cleans it.
    _keys: Option<Keyspace>,
}

impl TestApp {
    /// A server on standalone Redis with the three test keys and a fresh key prefix.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let (shared, own) = (Redis::Standalone.url(), prefix());
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            redis_url: Some(shared.clone()),
            key_prefix: own.clone(),
            api_keys: ApiKey::parse_list(&format!(
                "{ADMIN}:admin,{WRITER}:read+write,{READER}:read"
            ))
            .unwrap(),
            ..Config::default()
        };
        tweak(&mut config);
        let keys = (config.key_prefix == own && config.redis_url.as_deref() == Some(&*shared))
            .then(|| Keyspace::adopt(shared, own));
        let engine = rankd::serve::build_engine(&config, Arc::new(SystemClock))
            .await
            .expect("engine starts");
        let app = App::build(config.clone(), engine).await.expect("binds");
        let addr = app.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        Self {
            addr,
            http: reqwest::Client::new(),
            shutdown,
            task: Some(task),
            config,
            _keys: keys,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request with a key.
    pub fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.req(reqwest::Method::GET, path, Some(ADMIN))
            .send()
            .await
            .unwrap()
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.req(method, path, Some(ADMIN))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Scrapes /metrics until `ok` holds of it (at most 10 s), and returns that scrape.
    pub async fn metrics_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = self.get("/metrics").await.text().await.unwrap();
            if ok(&text) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} within 10 s:\n{text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops the server and waits until it has: for a test that goes on without it. A test that
    /// ends with its server leaves stopping it to [`Drop`].
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Defines `board` (admin key), asserting it was created or updated.
    pub async fn put_board(&self, board: &str, def: serde_json::Value) {
        let r = self
            .send_json(reqwest::Method::PUT, &format!("/v1/boards/{board}"), def)
            .await;
        let status = r.status();
        assert!(
            status == 200 || status == 201,
            "PUT board {board}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Submits one score (admin key), asserting it was accepted.
    pub async fn submit(&self, board: &str, member: &str, value: f64) -> serde_json::Value {
        let r = self
            .send_json(
                reqwest::Method::POST,
                &format!("/v1/boards/{board}/scores"),
                serde_json::json!({"member": member, "value": value}),
            )
            .await;
        assert_eq!(r.status(), 200, "submit to {board}");
        r.json().await.unwrap()
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `bytes` on a fresh connection and reads what comes back until the server closes the
/// connection, `deadline` passes, or the answer goes quiet for `idle` after a first response head.
pub async fn raw(
    addr: SocketAddr,
    bytes: &[u8],
    deadline: std::time::Duration,
    idle: std::time::Duration,
) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return Vec::new();
    };
    let _ = s.write_all(bytes).await;
    let _ = s.flush().await;
    let end = tokio::time::Instant::now() + deadline;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let wait = if responses(&out).is_empty() {
            end.saturating_duration_since(tokio::time::Instant::now())
        } else {
            idle.min(end.saturating_duration_since(tokio::time::Instant::now()))
        };
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => return out,
        }
    }
}

/// The statuses of the complete HTTP/1.x responses at the start of `bytes`, in order (bodies are
/// skipped by their Content-Length, so a body that quotes a status line is not mistaken for one).
pub fn responses(bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]);
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| {
            let mut parts = l.splitn(3, ' ');
            let version = parts.next()?;
            version.starts_with("HTTP/1.").then_some(())?;
            parts.next()?.parse::<u16>().ok()
        });
        let Some(status) = status else { break };
        out.push(status);
        let length = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let next = end + 4 + length;
        if next > rest.len() {
            break;
        }
        rest = &rest[next..];
    }
    out
}
