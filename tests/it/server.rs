//! Spawning the real server on port 0 against real Redis, and a real HTTP client for it.

use std::net::SocketAddr;
use std::sync::Arc;

use rankd::config::{ApiKey, Config};
use rankd::engine::SystemClock;
use rankd::http::App;
use tokio_util::sync::CancellationToken;

use crate::helpers::{prefix, Redis};

/// Keys every test server accepts.
pub const ADMIN: &str = "test-admin-key";
pub const WRITER: &str = "test-writer-key";
pub const READER: &str = "test-reader-key";

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub config: Config,
}

impl TestApp {
    /// A server on standalone Redis with the three test keys and a fresh key prefix.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            redis_url: Some(Redis::Standalone.url()),
            key_prefix: prefix(),
            api_keys: ApiKey::parse_list(&format!(
                "{ADMIN}:admin,{WRITER}:read+write,{READER}:read"
            ))
            .unwrap(),
            ..Config::default()
        };
        tweak(&mut config);
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
            task,
            config,
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

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}
