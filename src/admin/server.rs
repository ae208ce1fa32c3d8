//! The client of a running server's own cache figures (`GET /v1/stats/cache`), for
//! `rankd admin analyze --server`.

use crate::error::{Error, Result};

/// A share in percent, or `None` with nothing counted.
pub(super) fn hit_rate(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 * 100.0 / total as f64)
}

/// A running server's own cache figures (`GET /v1/stats/cache`), for `analyze --server`.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// Where they came from.
    pub url: String,
    /// Definition cache lookups: (hits, misses).
    pub definitions: (u64, u64),
    /// Script cache lookups: (hits, misses).
    pub scripts: (u64, u64),
}

impl ServerStats {
    /// Asks a running server for its cache figures over HTTP/1.1.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server does not answer 200 with the figures.
    pub async fn fetch(base: &str, api_key: Option<&str>) -> Result<Self> {
        use http_body_util::BodyExt;
        let fail = |m: String| Error::Unavailable(format!("--server {base}: {m}"));
        let uri: hyper::Uri = format!("{}/v1/stats/cache", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| fail(format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(fail("only http:// URLs are supported".into()));
        }
        let host = uri.host().ok_or_else(|| fail("no host".into()))?;
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| fail("connect timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::get(uri.path()).header(hyper::header::HOST, host);
        if let Some(k) = api_key {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(5), sender.send_request(req))
                .await
                .map_err(|_| fail("no answer within 5 s".into()))?
                .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        if status != hyper::StatusCode::OK {
            return Err(fail(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        let counts = |name: &str| {
            let c = &v["caches"][name];
            c["hits"]
                .as_u64()
                .zip(c["misses"].as_u64())
                .ok_or_else(|| fail(format!("the answer holds no {name} cache figures")))
        };
        Ok(Self {
            url: base.to_owned(),
            definitions: counts("definitions")?,
            scripts: counts("scripts")?,
        })
    }

    /// Its figures, a line each.
    pub(super) fn lines(&self) -> Vec<String> {
        let show = |(hits, misses): (u64, u64)| match hit_rate(hits, misses) {
            Some(r) => format!("{r:.1}% ({hits} hits, {misses} misses)"),
            None => "no lookups yet".to_owned(),
        };
        vec![
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
        ]
    }
}
