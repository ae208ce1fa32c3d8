//! The client of a running server's admin routes over HTTP/1.1: its cache figures
//! (`GET /v1/stats/cache`) for `rankd admin analyze --server`, and the clear and warm of its
//! answer caches (`POST /v1/caches/clear`, `POST /v1/caches/warm`) for `clear-caches --server` and
//! `warm-caches`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Admin, Failure};
use crate::error::{Error, Result};

/// How long the server has to accept the connection, and then to answer.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a warm may take: it reads every page it is asked for.
const WARM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A share in percent, or `None` with nothing counted.
pub(super) fn hit_rate(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 * 100.0 / total as f64)
}

/// One answer cache's figures as `GET /v1/stats/cache` gives them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AnswerCache {
    /// Lookups that found a fresh entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries held.
    pub entries: u64,
    /// Bytes they are charged for.
    pub bytes: u64,
    /// Its TTL; 0 when the cache is off.
    pub ttl_secs: u64,
    /// Entries dropped, by reason (`write`, `ttl`, `clear`, `definition`, `rebuild`, `capacity`).
    #[serde(default)]
    pub invalidations: BTreeMap<String, u64>,
}

impl AnswerCache {
    /// Entries dropped for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.invalidations.get(reason).copied().unwrap_or(0)
    }
}

/// The answer cache types, in the order the server reports them.
pub const ANSWER_CACHES: [&str; 4] = ["leaderboard", "analytics", "scope_stats", "achievements"];

/// A running server's own cache figures (`GET /v1/stats/cache`), for `analyze --server`.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// Where they came from.
    pub url: String,
    /// Definition cache lookups: (hits, misses).
    pub definitions: (u64, u64),
    /// Script cache lookups: (hits, misses).
    pub scripts: (u64, u64),
    /// The answer caches the server has, by type ([`ANSWER_CACHES`] order; none from a server of a
    /// version without them).
    pub answers: Vec<(String, AnswerCache)>,
}

/// A server's answer: its status and body.
struct Answer {
    status: hyper::StatusCode,
    body: bytes::Bytes,
}

/// Sends one request to the server at `base` (`http://host:port`) and reads its answer.
async fn send(
    base: &str,
    method: hyper::Method,
    path: &str,
    api_key: Option<&str>,
    body: Option<&serde_json::Value>,
    timeout: std::time::Duration,
) -> Result<Answer> {
    use http_body_util::BodyExt;
    let fail = |m: String| Error::Unavailable(format!("--server {base}: {m}"));
    let uri: hyper::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| fail(format!("{e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(fail("only http:// URLs are supported".into()));
    }
    let host = uri.host().ok_or_else(|| fail("no host".into()))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| fail("connect timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
    tokio::spawn(conn);
    let host_header = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri.path())
        .header(hyper::header::HOST, host_header);
    if let Some(k) = api_key {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let payload = match body {
        Some(b) => {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            bytes::Bytes::from(b.to_string())
        }
        None => bytes::Bytes::new(),
    };
    let req = req
        .body(http_body_util::Full::new(payload))
        .map_err(|e| fail(e.to_string()))?;
    let secs = timeout.as_secs();
    let resp = tokio::time::timeout(timeout, async {
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Answer { status, body })
    })
    .await
    .map_err(|_| fail(format!("no answer within {secs} s")))?
    .map_err(|e| fail(e.to_string()))?;
    Ok(resp)
}

/// What a refusal says: its problem's `detail` (with the `field` it names), else its body.
fn refusal(base: &str, a: &Answer) -> Failure {
    let problem: Option<serde_json::Value> = serde_json::from_slice(&a.body).ok();
    let said = problem
        .as_ref()
        .and_then(|p| p["detail"].as_str())
        .map_or_else(
            || String::from_utf8_lossy(&a.body).into_owned(),
            str::to_owned,
        );
    Failure::Refused(format!("--server {base} answered {}: {said}", a.status))
}

impl ServerStats {
    /// Asks a running server for its cache figures over HTTP/1.1.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server does not answer 200 with the figures.
    pub async fn fetch(base: &str, api_key: Option<&str>) -> Result<Self> {
        let fail = |m: String| Error::Unavailable(format!("--server {base}: {m}"));
        let a = send(
            base,
            hyper::Method::GET,
            "/v1/stats/cache",
            api_key,
            None,
            TIMEOUT,
        )
        .await?;
        if a.status != hyper::StatusCode::OK {
            return Err(fail(format!(
                "answered {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&a.body).map_err(|e| fail(e.to_string()))?;
        let counts = |name: &str| {
            let c = &v["caches"][name];
            c["hits"]
                .as_u64()
                .zip(c["misses"].as_u64())
                .ok_or_else(|| fail(format!("the answer holds no {name} cache figures")))
        };
        let mut answers = Vec::new();
        for name in ANSWER_CACHES {
            let c = &v["caches"][name];
            if c.is_null() {
                continue;
            }
            let figures = AnswerCache::deserialize(c)
                .map_err(|e| fail(format!("the {name} cache figures: {e}")))?;
            answers.push((name.to_owned(), figures));
        }
        Ok(Self {
            url: base.to_owned(),
            definitions: counts("definitions")?,
            scripts: counts("scripts")?,
            answers,
        })
    }

    /// Its figures, a line each.
    pub(super) fn lines(&self) -> Vec<String> {
        let show = |(hits, misses): (u64, u64)| match hit_rate(hits, misses) {
            Some(r) => format!("{r:.1}% ({hits} hits, {misses} misses)"),
            None => "no lookups yet".to_owned(),
        };
        let mut out = vec![
            format!(
                "cache hit rate, definitions (server {}): {}",
                self.url,
                show(self.definitions)
            ),
            format!(
                "cache hit rate, scripts (server {}): {}",
                self.url,
                show(self.scripts)
            ),
        ];
        for (name, c) in &self.answers {
            let state = if c.ttl_secs == 0 {
                "off (TTL 0)".to_owned()
            } else {
                format!("{}, TTL {} s", show((c.hits, c.misses)), c.ttl_secs)
            };
            let invalidations = c
                .invalidations
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(format!(
                "cache hit rate, {name} answers (server {}): {state}; {} entries, {} bytes; invalidations: {invalidations}",
                self.url, c.entries, c.bytes
            ));
        }
        out
    }
}

/// What `clear-caches --server` asks for.
#[derive(Debug, Clone)]
pub struct Clear<'a> {
    /// The server.
    pub server: &'a str,
    /// The types to clear; every one when empty.
    pub caches: &'a [String],
    /// Only this board's entries.
    pub board: Option<&'a str>,
    /// The key sent (admin role).
    pub api_key: Option<&'a str>,
}

/// What `warm-caches` asks for.
#[derive(Debug, Clone)]
pub struct Warm<'a> {
    /// The server.
    pub server: &'a str,
    /// The board whose pages to read.
    pub board: &'a str,
    /// Its window (the server's default: all-time).
    pub window: Option<&'a str>,
    /// The period (the server's default: the current one).
    pub period: Option<&'a str>,
    /// One page per scope (the server's default: the global board).
    pub scopes: &'a [String],
    /// Entries per page (the server's default: 20).
    pub limit: Option<i64>,
    /// The key sent (admin role).
    pub api_key: Option<&'a str>,
}

impl Admin {
    /// Clears a running server's answer caches (`POST /v1/caches/clear`): every instance applies
    /// the clear within a second.
    ///
    /// # Errors
    /// [`Failure::Refused`] when the server refuses (an unknown type or board, a key without the
    /// admin role); [`Error::Unavailable`] when it does not answer.
    pub async fn clear_server_caches(&self, c: &Clear<'_>, dry_run: bool) -> Result<(), Failure> {
        let what = match c.caches {
            [] => "every answer cache".to_owned(),
            names => format!("the {} cache(s)", names.join(", ")),
        };
        let of = c
            .board
            .map_or_else(|| "every board".to_owned(), |b| format!("board {b}"));
        if dry_run {
            self.report
                .line(format!("would clear {what} of {of} on {}", c.server));
            return Ok(());
        }
        let mut body = serde_json::json!({});
        if !c.caches.is_empty() {
            body["caches"] = c.caches.into();
        }
        if let Some(b) = c.board {
            body["board"] = b.into();
        }
        let a = send(
            c.server,
            hyper::Method::POST,
            "/v1/caches/clear",
            c.api_key,
            Some(&body),
            TIMEOUT,
        )
        .await?;
        if a.status != hyper::StatusCode::OK {
            return Err(refusal(c.server, &a));
        }
        let v: serde_json::Value = serde_json::from_slice(&a.body)
            .map_err(|e| Error::Unavailable(format!("--server {}: its answer: {e}", c.server)))?;
        // In the order the server names the types cleared (its own order, or the request's).
        let cleared = v["caches"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(serde_json::Value::as_str)
            .map(|t| format!("{t} {}", v["cleared"][t].as_u64().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ");
        self.report.line(format!(
            "cleared {what} of {of} on {}: entries cleared there: {cleared}; every other instance clears within a second",
            c.server
        ));
        Ok(())
    }

    /// Reads a board's top pages into a running server's leaderboard cache
    /// (`POST /v1/caches/warm`).
    ///
    /// # Errors
    /// [`Failure::Refused`] when the server refuses (an unknown board, a bad window, period, scope
    /// or limit, a key without the admin role); [`Error::Unavailable`] when it does not answer.
    pub async fn warm_server_caches(&self, w: &Warm<'_>, dry_run: bool) -> Result<(), Failure> {
        let window = w.window.unwrap_or("all");
        let scopes = match w.scopes {
            [] => "the global board".to_owned(),
            s => format!("scope(s) {}", s.join(", ")),
        };
        if dry_run {
            self.report.line(format!(
                "would warm board {}'s top {} pages ({window} window, {scopes}) on {}",
                w.board,
                w.limit.unwrap_or(20),
                w.server
            ));
            return Ok(());
        }
        let mut body = serde_json::json!({ "board": w.board });
        if let Some(v) = w.window {
            body["window"] = v.into();
        }
        if let Some(v) = w.period {
            body["period"] = v.into();
        }
        if !w.scopes.is_empty() {
            body["scopes"] = w.scopes.into();
        }
        if let Some(v) = w.limit {
            body["limit"] = v.into();
        }
        let a = send(
            w.server,
            hyper::Method::POST,
            "/v1/caches/warm",
            w.api_key,
            Some(&body),
            WARM_TIMEOUT,
        )
        .await?;
        if a.status != hyper::StatusCode::OK {
            return Err(refusal(w.server, &a));
        }
        let v: serde_json::Value = serde_json::from_slice(&a.body)
            .map_err(|e| Error::Unavailable(format!("--server {}: its answer: {e}", w.server)))?;
        let (pages, kept) = (
            v["pages"].as_u64().unwrap_or(0),
            v["warmed"].as_u64().unwrap_or(0),
        );
        let note = if kept == 0 {
            " (nothing kept: the server's leaderboard cache is off, RANKD_CACHE_TTL_LEADERBOARD_SECS=0)"
        } else {
            ""
        };
        self.report.line(format!(
            "warmed board {}'s top pages on {}: {pages} page(s) ({window} window, {scopes}), {kept} cache entries kept (its top and entries forms){note}",
            w.board, w.server,
        ));
        Ok(())
    }
}
