//! The HTTP/1.1 endpoint: an accept loop, one service fn, one route table. No framework.
//!
//! - [`routes`]: the route table and its dispatch
//! - [`handlers`]: one async fn per endpoint
//! - [`auth`]: Bearer keys
//! - [`problem`]: problem+json answers and body helpers

pub mod auth;
pub mod handlers;
pub mod problem;
pub mod routes;

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutWriter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::config::Config;
use crate::engine::{Engine, View};
use crate::metrics as m;
use crate::window::Window;
use problem::{Body, Problem};

/// What every request handler shares.
pub struct State {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The configuration the server started with.
    pub config: Config,
    /// Renders /metrics.
    pub metrics: PrometheusHandle,
    /// Board sizes, sampled for /metrics.
    pub board_sizes: m::BoardSizes,
    /// API keys.
    pub auth: auth::Auth,
    request_ids: AtomicU64,
    request_seed: u32,
}

impl State {
    fn next_request_id(&self) -> RequestId {
        RequestId::new(
            self.request_seed,
            self.request_ids.fetch_add(1, Ordering::Relaxed),
        )
    }
}

/// A request's id, `{seed:08x}-{n:x}`: the process's random seed and the request's number, in
/// hex. Written into a buffer on the stack: every request makes one.
#[derive(Clone, Copy)]
struct RequestId {
    buf: [u8; 25],
    len: usize,
}

impl RequestId {
    fn new(seed: u32, n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 25];
        for (i, b) in buf[..8].iter_mut().enumerate() {
            *b = HEX[(seed >> (28 - 4 * i) & 0xf) as usize];
        }
        buf[8] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            buf[9 + i] = HEX[(n >> (4 * (digits - 1 - i)) & 0xf) as usize];
        }
        Self {
            buf,
            len: 9 + digits,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// A bound, not yet serving, HTTP server.
pub struct App {
    listener: TcpListener,
    state: Arc<State>,
}

impl App {
    /// Binds `config.listen` (port 0 picks a free port; see [`App::local_addr`]).
    ///
    /// # Errors
    /// The bind error.
    pub async fn build(config: Config, engine: Arc<Engine>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Self::with_listener(listener, config, engine))
    }

    /// A server on a listener already bound (see [`answer_while_starting`]).
    pub fn with_listener(listener: TcpListener, config: Config, engine: Arc<Engine>) -> Self {
        let state = Arc::new(State {
            engine,
            auth: auth::Auth::new(&config.api_keys, config.public_reads)
                .with_metrics_key(config.metrics_key.as_deref())
                .with_rate_limit(config.rate_limit),
            metrics: m::install(),
            board_sizes: m::BoardSizes::default(),
            config,
            request_ids: AtomicU64::new(0),
            request_seed: RandomState::new().build_hasher().finish() as u32,
        });
        Self { listener, state }
    }

    /// The address actually bound.
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and gives in-flight requests the
    /// configured grace period to finish.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self { listener, state } = self;
        // Stops with this future, even when it is dropped rather than run to its end.
        let _sampler =
            AbortOnDropHandle::new(tokio::spawn(sample(state.clone(), shutdown.clone())));
        state.engine.caches().describe();
        let _caches = AbortOnDropHandle::new(tokio::spawn(background_caches(Arc::downgrade(
            &state.engine,
        ))));
        let limit = Arc::new(Semaphore::new(state.config.max_connections));
        let graceful = GracefulShutdown::new();
        loop {
            // Wait for a free slot before accepting: past the cap, clients queue in the kernel backlog
            // instead of costing this process memory.
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                c = accept(&listener) => c,
            };
            let _ = stream.set_nodelay(true);
            let st = state.clone();
            let svc = service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, Infallible>(serve(st, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(state.config.read_timeout)
                .serve_connection(with_write_deadline(stream, state.config.read_timeout), svc);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!("shutting down: draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(state.config.shutdown_grace) => {
                tracing::warn!(grace_secs = state.config.shutdown_grace.as_secs(), "grace period over; closing the remaining connections");
            }
        }
    }
}

/// A connection whose writes may not stall forever.
///
/// hyper bounds how long a client may take to send a request, not how long it may leave its answers
/// unread. A client that sends requests and never reads (or reads too slowly for the answers to
/// drain) fills the socket's send buffer; every write then waits, and without a bound the connection
/// and its slot under the connection cap are held for good. A write (or flush, or shutdown) that has
/// made no progress for `limit` fails with `TimedOut`, which ends the connection; any progress starts
/// the count again, so a slow reader that keeps reading is served however long the whole takes.
fn with_write_deadline<S: AsyncRead + AsyncWrite>(
    stream: S,
    limit: Duration,
) -> TokioIo<Pin<Box<TimeoutWriter<S>>>> {
    let mut w = TimeoutWriter::new(stream);
    w.set_timeout(Some(limit));
    TokioIo::new(Box::pin(w))
}

/// The next connection. A failed accept (out of file descriptors and the like) is logged and
/// tried again after a short pause rather than spun on.
async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// What a server that does not serve yet is doing: the detail of its 503 answers (see
/// [`answer_while_starting`]). Clones share it.
#[derive(Debug, Clone)]
pub struct Starting(Arc<std::sync::Mutex<&'static str>>);

impl Default for Starting {
    fn default() -> Self {
        Self(Arc::new(std::sync::Mutex::new("rankd is starting")))
    }
}

impl Starting {
    /// From now on, the answers say `what`.
    pub fn set(&self, what: &'static str) {
        *self.0.lock().expect("start-up phase poisoned") = what;
    }

    /// What the answers say now.
    pub fn get(&self) -> &'static str {
        *self.0.lock().expect("start-up phase poisoned")
    }
}

/// Serves `listener` until `until` completes, and returns its output, while the engine is not
/// built yet (its start-up work under way, or Redis or the store out of reach): `GET /healthz`
/// answers 200, since the process is up; `GET /metrics` renders what is recorded (to the metrics
/// key, when one is set); everything else,
/// `/readyz` included, answers 503 with Retry-After and what `starting` says at the time. Each
/// connection carries one request, so that no client stays on this responder once the engine is
/// up. At most `limit`'s permits of connections are served at once (one semaphore for every call
/// while starting, of `max_connections` permits); past it, clients wait in the kernel backlog.
pub async fn answer_while_starting<T>(
    listener: &TcpListener,
    config: &Config,
    limit: &Arc<Semaphore>,
    starting: &Starting,
    until: impl std::future::Future<Output = T>,
) -> T {
    let metrics = m::install();
    // `/metrics` takes the metrics key here too, when one is set.
    let auth =
        Arc::new(auth::Auth::new(&[], false).with_metrics_key(config.metrics_key.as_deref()));
    let seed = RandomState::new().build_hasher().finish() as u32;
    let ids = Arc::new(AtomicU64::new(0));
    tokio::pin!(until);
    loop {
        let permit = tokio::select! {
            // The work first: once it is done, no more connection is taken here.
            biased;
            done = &mut until => return done,
            p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            biased;
            done = &mut until => return done,
            c = accept(listener) => c,
        };
        let (metrics, ids, starting, auth) =
            (metrics.clone(), ids.clone(), starting.clone(), auth.clone());
        let svc = service_fn(move |req: Request<Incoming>| {
            let id = format!("{seed:08x}-{:x}", ids.fetch_add(1, Ordering::Relaxed));
            let span = tracing::info_span!(
                "request",
                request_id = %id,
                method = %req.method(),
                route = "starting"
            );
            let _entered = span.enter();
            let mut resp = match (req.method(), req.uri().path()) {
                (&hyper::Method::GET, "/healthz") => handlers::healthz(),
                (&hyper::Method::GET, "/metrics") => match auth.check_metrics(req.headers()) {
                    Ok(()) => problem::bytes_response(
                        hyper::StatusCode::OK,
                        "text/plain; version=0.0.4",
                        metrics.render(),
                    ),
                    Err(p) => p.into_response(),
                },
                _ => Problem::unavailable(starting.get())
                    .with_request_id(&id)
                    .into_response(),
            };
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            tracing::debug!(
                status = resp.status().as_u16(),
                "request served while starting"
            );
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.read_timeout)
            .keep_alive(false)
            .serve_connection(with_write_deadline(stream, config.read_timeout), svc);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = conn.await;
        });
    }
}

/// Every `metrics_sample`: backend health (through the readiness check, which sets its gauge) and
/// the size of every board, so that a scrape costs the backend nothing. A board whose count fails
/// keeps its last size; a board that no longer exists leaves the sample. Each board's key index
/// also forgets its expired keys here (one bounded call a board), so it does not grow with every
/// period ever written until someone runs `clear-caches`.
async fn sample(state: Arc<State>, shutdown: CancellationToken) {
    let engine = &state.engine;
    let mut tick = tokio::time::interval(state.config.metrics_sample);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _ = engine.ready().await;
        let Ok(boards) = engine.boards().await else {
            continue;
        };
        let mut sizes = Vec::with_capacity(boards.len());
        for b in boards {
            let window = if b.definition.windows.contains(&Window::All) {
                Window::All
            } else {
                b.definition.windows[0]
            };
            let _ = engine.forget_expired_keys(&b.board).await;
            let id = b.board.to_string();
            match engine.count(&b.board, &View::current(window)).await {
                Ok(n) => sizes.push((id, n)),
                Err(_) => {
                    if let Some(&n) = last.get(&id) {
                        sizes.push((id, n));
                    }
                }
            }
        }
        last = sizes.iter().cloned().collect();
        state.board_sizes.set(sizes);
    }
}

/// The method as a metric label: the standard ones by name, anything a client invents as `other`,
/// so that clients cannot grow the metric families without bound.
fn method_label(m: &hyper::Method) -> &'static str {
    match *m {
        hyper::Method::GET => "GET",
        hyper::Method::POST => "POST",
        hyper::Method::PUT => "PUT",
        hyper::Method::DELETE => "DELETE",
        hyper::Method::HEAD => "HEAD",
        hyper::Method::OPTIONS => "OPTIONS",
        hyper::Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The statuses rankd answers, each with a request counter resolved once per route ([`SERIES`]);
/// any other status is looked up by the macro each time.
const STATUSES: [u16; 15] = [
    200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 429, 500, 503,
];

/// The per-request series of one route, resolved once: recording a request then costs two atomic
/// adds, not two registry lookups.
struct RouteSeries {
    duration: m::Resolved<metrics::Histogram>,
    requests: [m::Resolved<metrics::Counter>; STATUSES.len()],
}

impl RouteSeries {
    const fn new() -> Self {
        Self {
            duration: m::Resolved::new(),
            requests: [const { m::Resolved::new() }; STATUSES.len()],
        }
    }
}

/// The series of each route, by [`routes::Route::index`].
static SERIES: [RouteSeries; routes::ROUTES.len()] =
    [const { RouteSeries::new() }; routes::ROUTES.len()];

/// Counts a request and records its latency, by route (`unmatched` for a path no route serves),
/// method and status.
fn record_request(
    route: Option<&'static routes::Route>,
    method: &hyper::Method,
    status: hyper::StatusCode,
    elapsed: Duration,
) {
    let label = route.map_or("unmatched", |r| r.path);
    let count = || metrics::counter!(m::HTTP_REQUESTS, "route" => label, "method" => method_label(method), "status" => status.as_str().to_owned());
    let secs = elapsed.as_secs_f64();
    let Some(route) = route else {
        count().increment(1);
        metrics::histogram!(m::HTTP_DURATION, "route" => label).record(secs);
        return;
    };
    // A matched route's method is the route's own.
    let series = &SERIES[route.index()];
    match STATUSES.iter().position(|&s| s == status.as_u16()) {
        Some(i) => series.requests[i].with(count, |c| c.increment(1)),
        None => count().increment(1),
    }
    series.duration.with(
        || metrics::histogram!(m::HTTP_DURATION, "route" => label),
        |h| h.record(secs),
    );
}

async fn serve(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let id = state.next_request_id();
    let id = id.as_str();
    let started = Instant::now();
    let method = req.method().clone();
    // A body the handler may leave unread (an early refusal, a route that takes none): hyper then
    // closes the connection after the answer, which must say so, or a keep-alive client's next
    // request on it fails.
    let sent_body = !hyper::body::Body::is_end_stream(req.body());
    // The route is found before the span is made, so that the span is made whole at once: a field
    // recorded later is formatted again by the log layer.
    // The path outlives the request, which the handler may consume: the parameters borrow it.
    let uri = req.uri().clone();
    let found = routes::find(&method, uri.path());
    let span = match &found {
        Ok((route, _)) => tracing::info_span!(
            "request",
            request_id = %id,
            %method,
            route = route.path
        ),
        Err(_) => tracing::info_span!("request", request_id = %id, %method),
    };
    let (route, mut resp) = async {
        match found {
            Err(p) => (None, p.into_response()),
            Ok((route, params)) => {
                let r = routes::dispatch(&state, route, params, req, id)
                    .await
                    .unwrap_or_else(|p: Problem| {
                        // Every 5xx body carries the request id, whichever handler answered it.
                        if p.status().is_server_error() {
                            p.with_request_id(id).into_response()
                        } else {
                            p.into_response()
                        }
                    });
                (Some(route), r)
            }
        }
    }
    .instrument(span.clone())
    .await;
    let status = resp.status();
    let elapsed = started.elapsed();
    record_request(route, &method, status, elapsed);
    // In the request's span, named as the parent rather than entered: a line below the level
    // logged costs nothing.
    if status.is_server_error() {
        tracing::warn!(
            parent: &span,
            status = status.as_u16(),
            ms = elapsed.as_millis() as u64,
            "request failed"
        );
    } else {
        tracing::debug!(
            parent: &span,
            status = status.as_u16(),
            ms = elapsed.as_millis() as u64,
            "request served"
        );
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // Handlers that take a body read it whole before they succeed; any other answer may leave it.
    let read_whole = status.is_success()
        && matches!(
            method,
            hyper::Method::POST | hyper::Method::PUT | hyper::Method::PATCH
        );
    if sent_body && !read_whole {
        resp.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Every quarter second: applies the cache clears other instances recorded, and reads again the
/// most read cached pages that a change made untrue (see [`crate::engine::Engine::warm_round`]). Stops when the
/// engine is dropped.
async fn background_caches(engine: std::sync::Weak<crate::engine::Engine>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(e) = engine.upgrade() else {
            return;
        };
        if let Err(err) = e.apply_clears().await {
            tracing::debug!(error = %err, "reading cache clears failed; will retry");
        }
        e.warm_round().await;
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn a_request_id_is_the_seed_and_the_number_in_hex() {
        for (seed, n) in [
            (0, 0),
            (0xdead_beef, 1),
            (7, 0xf),
            (0x0102_0304, 0x10),
            (u32::MAX, u64::MAX),
            (0x8000_0000, 0x1234_5678_9abc),
        ] {
            assert_eq!(
                RequestId::new(seed, n).as_str(),
                format!("{seed:08x}-{n:x}")
            );
        }
    }

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit_and_one_that_drains_does_not() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut w = with_write_deadline(ours, Duration::from_millis(300)).into_inner();
        // A slow reader, but one that keeps reading: each write progresses within the limit, so the
        // whole may take longer than the limit.
        let started = tokio::time::Instant::now();
        let reader = tokio::spawn(async move {
            let mut got = [0u8; 64];
            for _ in 0..16 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                theirs.read_exact(&mut got).await.unwrap();
            }
            theirs
        });
        w.write_all(&[7u8; 1024]).await.unwrap();
        let _theirs = reader.await.unwrap();
        assert!(started.elapsed() > Duration::from_millis(600));
        // Nobody reads now: the buffer fills, and the write fails once the limit has passed.
        let started = tokio::time::Instant::now();
        let e = w.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
}
