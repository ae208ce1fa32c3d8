//! The thin server: the least an HTTP endpoint can do to answer a member's rank from rankd's own
//! read script, written only for the bench as the twin of "member rank". hyper 1 (HTTP/1.1) and a
//! fred pool of rankd's default size, on a runtime of as many workers as rankd's server runtime;
//! `GET /v1/boards/{b}/members/{m}` makes exactly one EVALSHA of `read_members.lua` with the KEYS
//! and ARGV rankd sends (captured from the engine, the member swapped in) and writes a small JSON
//! body. No auth, no routing table, no coalescing, no metrics, no logging.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use fred::prelude::{Builder, ClientLike, Config as FredConfig, LuaInterface, Pool, Value};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rankd::backend::Call;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

struct Read {
    pool: Pool,
    /// The path before the member: `/v1/boards/{b}/members/`.
    prefix: String,
    call: Call,
    /// Where the member sits in the call's ARGV.
    at: usize,
}

/// A running thin server; it stops when dropped.
pub(crate) struct Thin {
    pub(crate) addr: SocketAddr,
    _stop: DropGuard,
}

impl Thin {
    /// Starts the server on `rt` for the reads of `board` that `call` makes (member at ARGV `at`).
    pub(crate) async fn start(
        rt: &tokio::runtime::Handle,
        redis_url: &str,
        pool_size: usize,
        header_read_timeout: Duration,
        board: &str,
        (call, at): (Call, usize),
    ) -> Result<Self> {
        let config = FredConfig::from_url(redis_url).context("redis url")?;
        let pool = Builder::from_config(config).build_pool(pool_size.max(1))?;
        let state = Arc::new(Read {
            pool,
            prefix: format!("/v1/boards/{board}/members/"),
            call,
            at,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let init = state.clone();
        rt.spawn(async move { init.pool.init().await })
            .await?
            .context("the thin server's pool")?;
        rt.spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = stopped.cancelled() => break,
                    c = listener.accept() => match c {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                };
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| {
                            let st = st.clone();
                            async move { Ok::<_, Infallible>(answer(&st, &req).await) }
                        }),
                    );
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = stopped.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
            let _ = state.pool.quit().await;
        });
        Ok(Self {
            addr,
            _stop: stop.drop_guard(),
        })
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn answer(st: &Read, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let member = match req.uri().path().strip_prefix(st.prefix.as_str()) {
        Some(m) if req.method() == hyper::Method::GET && !m.is_empty() && !m.contains('/') => m,
        _ => return json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into()),
    };
    let mut args = st.call.args.clone();
    args[st.at] = member.to_owned();
    let reply: Result<Value, _> = st
        .pool
        .next()
        .evalsha(st.call.script.sha1(), st.call.keys.clone(), args)
        .await;
    // The reply: {total, {score, rank, …} or nil per member}.
    let mut parts = match reply {
        Ok(v) => v.into_array().into_iter(),
        Err(e) => {
            let body = serde_json::json!({ "error": e.to_string() }).to_string();
            return json(StatusCode::SERVICE_UNAVAILABLE, body);
        }
    };
    let total = parts.next().and_then(|v| v.as_i64());
    let row = parts
        .next()
        .map(|v| v.into_array())
        .and_then(|v| v.into_iter().next())
        .map(|v| v.into_array())
        .unwrap_or_default();
    let (Some(score), Some(rank)) = (
        row.first().and_then(Value::as_string),
        row.get(1).and_then(Value::as_i64),
    ) else {
        return json(
            StatusCode::NOT_FOUND,
            r#"{"error":"member not found"}"#.into(),
        );
    };
    let body =
        serde_json::json!({ "member": member, "score": score, "rank": rank, "total": total });
    json(StatusCode::OK, body.to_string())
}
