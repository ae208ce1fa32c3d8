//! One async fn per endpoint: parse, call the engine once, answer.

use std::collections::HashMap;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::problem::{
    bytes_response, json, no_content, parse_json, read_body, BatchError, Body, Problem,
};
use super::State;
use crate::board::{BoardDef, BoardId, Display, Member, Score};
use crate::cache::CacheType;
use crate::engine::{
    CacheStatus, Cursor, Engine, Limit, Offset, PageForm, Radius, Served, Standing, Submit, View,
};
use crate::error::{Error, Invalid};
use crate::metrics as m;
use crate::window::Window;

type Answer = Result<Response<Body>, Problem>;

/// The committed OpenAPI document.
pub const OPENAPI: &str = include_str!("openapi.json");

fn engine_err(e: Error, id: &str) -> Problem {
    Problem::from_error(&e, id)
}

/// 200 with what the engine answered as JSON, or the problem its error is.
fn ok<T: Serialize>(answer: crate::error::Result<T>, id: &str) -> Answer {
    Ok(json(
        StatusCode::OK,
        &answer.map_err(|e| engine_err(e, id))?,
    ))
}

/// Query parameters, each at most once, none unknown.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(req: &Request<Incoming>, allowed: &[&str]) -> Result<Self, Problem> {
        let mut out = HashMap::new();
        for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(Invalid::new(
                    k.as_ref(),
                    format!(
                        "is not a parameter of this route (allowed: {})",
                        allowed.join(", ")
                    ),
                )
                .into());
            }
            if out.insert(k.to_string(), v.to_string()).is_some() {
                return Err(Invalid::new(k.as_ref(), "is given more than once").into());
            }
        }
        Ok(Self(out))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn int(&self, k: &str, default: i64) -> Result<i64, Problem> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) => Ok(n),
                // Too many digits for an i64 is still a number: past any limit, which the caller's
                // range check then names.
                Err(_)
                    if v.strip_prefix('-')
                        .unwrap_or(v)
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                        && v.len() > 1 =>
                {
                    Ok(if v.starts_with('-') {
                        i64::MIN
                    } else {
                        i64::MAX
                    })
                }
                Err(_) => Err(Invalid::new(k, format!("must be a whole number, got {v:?}")).into()),
            },
        }
    }

    fn score(&self, k: &str) -> Result<Option<Score>, Problem> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => {
                let n = v
                    .parse::<f64>()
                    .map_err(|_| Invalid::new(k, format!("must be a number, got {v:?}")))?;
                Ok(Some(Score::new(k, n)?))
            }
        }
    }

    fn view(&self) -> Result<View, Problem> {
        Ok(View::parse(
            self.get("window"),
            self.get("period"),
            self.get("scope"),
        )?)
    }
}

const VIEW: [&str; 3] = ["window", "period", "scope"];

fn with_view(extra: &[&'static str]) -> Vec<&'static str> {
    VIEW.iter().chain(extra).copied().collect()
}

fn board(s: &str) -> Result<BoardId, Problem> {
    Ok(BoardId::parse(s)?)
}

fn member_id(s: &str) -> Result<Member, Problem> {
    Ok(Member::parse(s)?)
}

pub fn healthz() -> Response<Body> {
    // A constant answer, not a JSON tree built and written per probe.
    super::problem::bytes_response(
        StatusCode::OK,
        "application/json",
        bytes::Bytes::from_static(br#"{"status":"ok"}"#),
    )
}

pub async fn readyz(state: &State) -> Answer {
    match state.engine.ready().await {
        Ok(()) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"status": "ready"}),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            Err(Problem::unavailable(
                "the leaderboard backend is unreachable",
            ))
        }
    }
}

pub fn metrics(state: &State) -> Response<Body> {
    let mut text = state.metrics.render();
    if state.config.metrics_boards {
        state.board_sizes.render(&mut text);
    }
    super::problem::bytes_response(StatusCode::OK, "text/plain; version=0.0.4", text)
}

pub fn openapi() -> Response<Body> {
    super::problem::bytes_response(StatusCode::OK, "application/json", OPENAPI)
}

#[derive(Serialize)]
struct CacheFigures {
    hits: u64,
    misses: u64,
    hit_rate_percentage: f64,
}

impl CacheFigures {
    fn new(hits: u64, misses: u64) -> Self {
        let total = hits + misses;
        Self {
            hits,
            misses,
            hit_rate_percentage: if total == 0 {
                0.0
            } else {
                hits as f64 * 100.0 / total as f64
            },
        }
    }
}

pub async fn cache_stats(state: &State, id: &str) -> Answer {
    use std::sync::atomic::Ordering::Relaxed;
    let defs = state.engine.cache_stats();
    let backend = state
        .engine
        .backend_stats()
        .await
        .map_err(|e| engine_err(e, id))?;
    let script_hits = backend.script_hits.unwrap_or(backend.script_calls);
    let mut caches = serde_json::json!({
        "definitions": CacheFigures::new(defs.definition_hits.load(Relaxed), defs.definition_misses.load(Relaxed)),
        "scripts": CacheFigures::new(script_hits, backend.script_reloads),
    });
    for (t, figures) in state.engine.caches().figures() {
        caches[t.as_str()] = serde_json::to_value(figures).unwrap_or_default();
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "caches": caches,
            "backend": {
                "kind": backend.kind,
                "used_memory_bytes": backend.used_memory_bytes,
                "keys": backend.keys,
            },
        }),
    ))
}

/// `POST /v1/caches/clear`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearCaches {
    caches: Option<Vec<String>>,
    board: Option<String>,
}

/// The cache types a request names, each checked (`field[i]` names a bad one); every type when
/// none is named.
fn cache_types(field: &str, names: Option<&[String]>) -> Result<Vec<CacheType>, Problem> {
    let Some(names) = names else {
        return Ok(CacheType::ALL.to_vec());
    };
    if names.is_empty() {
        return Err(Problem::invalid(&Invalid::new(
            field,
            "must name at least one cache type (leave it out for every type)",
        )));
    }
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            CacheType::parse(n).ok_or_else(|| {
                Problem::invalid(&Invalid::new(
                    format!("{field}[{i}]"),
                    format!(
                        "must be one of {}, got {n:?}",
                        CacheType::ALL.map(CacheType::as_str).join(", ")
                    ),
                ))
            })
        })
        .collect()
}

/// A board a request body names: a valid id (the error names `board`) of a defined board (404).
async fn defined_board(state: &State, b: &str, id: &str) -> Result<BoardId, Problem> {
    let b = BoardId::parse(b).map_err(|e| Problem::invalid(&Invalid::new("board", e.message)))?;
    state
        .engine
        .board(&b)
        .await
        .map_err(|e| engine_err(e, id))?;
    Ok(b)
}

pub async fn clear_caches(state: &State, req: Request<Incoming>, id: &str) -> Answer {
    let body = read_body(req, state.config.max_body_bytes, state.config.read_timeout).await?;
    let r: ClearCaches = parse_json(&body)?;
    let types = cache_types("caches", r.caches.as_deref())?;
    let board = match &r.board {
        Some(b) => Some(defined_board(state, b, id).await?),
        None => None,
    };
    let gone = state
        .engine
        .clear_caches(&types, board.as_ref())
        .await
        .map_err(|e| engine_err(e, id))?;
    let cleared: serde_json::Map<String, serde_json::Value> = CacheType::ALL
        .into_iter()
        .zip(gone)
        .filter(|(t, _)| types.contains(t))
        .map(|(t, n)| (t.as_str().to_owned(), n.into()))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "caches": types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "board": board,
            "cleared": cleared,
        }),
    ))
}

/// `POST /v1/caches/warm`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmCaches {
    board: String,
    window: Option<String>,
    period: Option<String>,
    scopes: Option<Vec<String>>,
    limit: Option<i64>,
}

pub async fn warm_caches(state: &State, req: Request<Incoming>, id: &str) -> Answer {
    let body = read_body(req, state.config.max_body_bytes, state.config.read_timeout).await?;
    let r: WarmCaches = parse_json(&body)?;
    let b = defined_board(state, &r.board, id).await?;
    let limit = Limit::new(r.limit.unwrap_or(20))?;
    let scopes: Vec<Option<&str>> = match &r.scopes {
        None => vec![None],
        Some(list) => list.iter().map(|s| Some(s.as_str())).collect(),
    };
    let mut views = Vec::with_capacity(scopes.len());
    for (i, scope) in scopes.into_iter().enumerate() {
        let view = View::parse(r.window.as_deref(), r.period.as_deref(), scope).map_err(|e| {
            if e.field == "scope" {
                Invalid::new(format!("scopes[{i}]"), e.message)
            } else {
                e
            }
        })?;
        views.push(view);
    }
    let warmed = state
        .engine
        .warm_pages(&b, &views, limit)
        .await
        .map_err(|e| engine_err(e, id))?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "board": b, "pages": views.len(), "warmed": warmed }),
    ))
}

#[derive(Serialize)]
struct BoardOut<'a> {
    board: &'a BoardId,
    #[serde(flatten)]
    definition: &'a BoardDef,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<u64>,
}

pub async fn list_boards(state: &State, id: &str) -> Answer {
    let boards = state.engine.boards().await.map_err(|e| engine_err(e, id))?;
    let out: Vec<BoardOut> = boards
        .iter()
        .map(|b| BoardOut {
            board: &b.board,
            definition: &b.definition,
            members: None,
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "boards": out })))
}

pub async fn put_board(state: &State, b: &str, req: Request<Incoming>, id: &str) -> Answer {
    let b = board(b)?;
    let body = read_body(req, state.config.max_body_bytes, state.config.read_timeout).await?;
    let def: BoardDef = parse_json(&body)?;
    let created = state
        .engine
        .put_board(&b, def)
        .await
        .map_err(|e| engine_err(e, id))?;
    let info = state
        .engine
        .board(&b)
        .await
        .map_err(|e| engine_err(e, id))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(
        status,
        &BoardOut {
            board: &b,
            definition: &info.definition,
            members: None,
        },
    ))
}

/// The view whose size `GET /v1/boards/{board}` reports: the all-time global board, or, for a
/// board without the all-time window, the current period of its first window.
fn size_view(def: &BoardDef) -> View {
    let window = if def.windows.contains(&Window::All) {
        Window::All
    } else {
        def.windows.first().copied().unwrap_or(Window::All)
    };
    View::current(window)
}

pub async fn get_board(state: &State, b: &str, id: &str) -> Answer {
    let b = board(b)?;
    let info = state
        .engine
        .board(&b)
        .await
        .map_err(|e| engine_err(e, id))?;
    let members = state
        .engine
        .count(&b, &size_view(&info.definition))
        .await
        .map_err(|e| engine_err(e, id))?;
    Ok(json(
        StatusCode::OK,
        &BoardOut {
            board: &b,
            definition: &info.definition,
            members: Some(members),
        },
    ))
}

pub async fn delete_board(state: &State, b: &str, id: &str) -> Answer {
    let b = board(b)?;
    state
        .engine
        .delete_board(&b)
        .await
        .map_err(|e| engine_err(e, id))?;
    Ok(no_content())
}

/// Declares a score event as a body holds it: the fields named first (in this order: serde's
/// errors list them so), then those of every event, none other allowed; and its [`Submit`].
macro_rules! event_in {
    ($(#[$doc:meta])* $name:ident { $($first:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($first: $ty,)*
            member: String,
            value: f64,
            #[serde(default)]
            scopes: Vec<String>,
            #[serde(default)]
            event_id: Option<String>,
            #[serde(default)]
            at: Option<String>,
        }

        impl $name {
            /// The event submitted to `board`.
            fn submit(&self, board: &str) -> Result<Submit, Invalid> {
                let at = parse_at(self.at.as_deref())?;
                Submit::parse(
                    board,
                    &self.member,
                    self.value,
                    &self.scopes,
                    self.event_id.as_deref(),
                    at,
                )
            }
        }
    };
}

event_in!(
    /// A score event as posted.
    EventIn {}
);

event_in!(
    /// A score event of a batch.
    BatchEventIn { board: String, }
);

/// A serde error's message without the " at line L column C" it ends with: positions inside one
/// event's text would mislead, as the event is not the whole body.
fn without_position(e: serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&suffix) {
        Some(m) => m.to_owned(),
        None => msg,
    }
}

fn parse_at(at: Option<&str>) -> Result<Option<i64>, Invalid> {
    at.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                Invalid::new(
                    "at",
                    format!("must be an RFC 3339 time such as 2026-11-26T10:00:00Z: {e}"),
                )
            })
    })
    .transpose()
}

pub async fn submit(state: &State, b: &str, req: Request<Incoming>, id: &str) -> Answer {
    let b = board(b)?;
    let body = read_body(req, state.config.max_body_bytes, state.config.read_timeout).await?;
    let parsed =
        parse_json::<EventIn>(&body).and_then(|e| e.submit(b.as_str()).map_err(Problem::from));
    let ev = match parsed {
        Ok(ev) => ev,
        Err(p) => {
            metrics::counter!(m::SCORE_EVENTS, "outcome" => "rejected").increment(1);
            return Err(p);
        }
    };
    match Engine::submit_shared(&state.engine, ev).await {
        Ok(r) => {
            let outcome = if r.duplicate { "duplicate" } else { "accepted" };
            metrics::counter!(m::SCORE_EVENTS, "outcome" => outcome).increment(1);
            Ok(json(StatusCode::OK, &r))
        }
        Err(e) => {
            if matches!(
                e,
                Error::Invalid(_) | Error::BoardNotFound(_) | Error::EventIdReused { .. }
            ) {
                metrics::counter!(m::SCORE_EVENTS, "outcome" => "rejected").increment(1);
            }
            Err(engine_err(e, id))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchIn {
    /// Each event's JSON text, parsed on its own so that every invalid event can be reported (one
    /// bad event does not stop the others being read), without building a JSON tree first.
    events: Vec<Box<serde_json::value::RawValue>>,
}

/// A batch body read and each of its events checked on its own (before the engine checks them
/// against their boards): the valid events with their indexes, and every invalid one's reason.
pub type ParsedBatch = (Vec<(usize, Submit)>, Vec<BatchError>);

/// Parses a `/v1/scores/batch` body: the whole-body problems (not JSON, no events, too many)
/// are errors; each event's own problems are listed, so that all of them can be answered at once.
///
/// # Errors
/// A 400 [`Problem`] naming the body's field and the limit.
pub fn parse_batch(body: &[u8]) -> Result<ParsedBatch, Problem> {
    let batch: BatchIn = parse_json(body)?;
    let total = batch.events.len();
    if total > crate::engine::MAX_BATCH {
        return Err(Invalid::new(
            "events",
            format!(
                "at most {} events per batch, got {total}",
                crate::engine::MAX_BATCH
            ),
        )
        .into());
    }
    if total == 0 {
        return Err(Invalid::new("events", "must hold at least one event").into());
    }
    let mut errors: Vec<BatchError> = Vec::new();
    let mut events: Vec<(usize, Submit)> = Vec::with_capacity(total);
    for (i, raw) in batch.events.iter().enumerate() {
        if raw.get().starts_with('[') {
            // serde would read the event from an array by position: events are objects.
            errors.push(BatchError {
                index: i,
                field: "event".into(),
                detail: "must be a JSON object, got an array".into(),
            });
            continue;
        }
        let de = &mut serde_json::Deserializer::from_str(raw.get());
        let parsed = serde_path_to_error::deserialize::<_, BatchEventIn>(de)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = without_position(e.into_inner());
                Invalid::new(super::problem::serde_field(&path, &msg, "event"), msg)
            })
            .and_then(|e| e.submit(&e.board));
        match parsed {
            Ok(s) => events.push((i, s)),
            Err(inv) => errors.push(BatchError::new(i, inv)),
        }
    }
    Ok((events, errors))
}

pub async fn batch(state: &State, req: Request<Incoming>, id: &str) -> Answer {
    let body = read_body(req, state.config.max_body_bytes, state.config.read_timeout).await?;
    // Validate the whole batch first and report every invalid event, not just the first.
    let (events, mut errors) = parse_batch(&body)?;
    let total = events.len() + errors.len();
    let checked = state
        .engine
        .check_batch(&events)
        .await
        .map_err(|e| engine_err(e, id))?;
    errors.extend(checked.into_iter().map(|(i, inv)| BatchError::new(i, inv)));
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.index);
        metrics::counter!(m::SCORE_EVENTS, "outcome" => "rejected").increment(total as u64);
        return Err(Problem::invalid_batch(errors, total));
    }
    let events: Vec<Submit> = events.into_iter().map(|(_, s)| s).collect();
    let out = match state.engine.submit_batch(&events).await {
        Ok(out) => out,
        // Refusals only the current scores could tell (a sum leaving a board's range).
        Err(Error::InvalidBatch(list)) => {
            metrics::counter!(m::SCORE_EVENTS, "outcome" => "rejected").increment(total as u64);
            let errors = list
                .into_iter()
                .map(|(i, inv)| BatchError::new(i, inv))
                .collect();
            return Err(Problem::invalid_batch(errors, total));
        }
        Err(e @ Error::EventIdReused { .. }) => {
            metrics::counter!(m::SCORE_EVENTS, "outcome" => "rejected").increment(total as u64);
            return Err(engine_err(e, id));
        }
        Err(e) => return Err(engine_err(e, id)),
    };
    metrics::counter!(m::SCORE_EVENTS, "outcome" => "accepted").increment(out.accepted);
    metrics::counter!(m::SCORE_EVENTS, "outcome" => "duplicate").increment(out.duplicates);
    Ok(json(StatusCode::OK, &out))
}

pub async fn remove_member(state: &State, b: &str, mem: &str, id: &str) -> Answer {
    let (b, mem) = (board(b)?, member_id(mem)?);
    state
        .engine
        .remove_member(&b, &mem)
        .await
        .map_err(|e| engine_err(e, id))?;
    Ok(no_content())
}

pub async fn put_display(
    state: &State,
    b: &str,
    mem: &str,
    req: Request<Incoming>,
    id: &str,
) -> Answer {
    let (b, mem) = (board(b)?, member_id(mem)?);
    let body = read_body(req, state.config.max_body_bytes, state.config.read_timeout).await?;
    let display: Display = parse_json(&body)?;
    let display = display.validated()?;
    state
        .engine
        .put_display(&b, &mem, display.clone())
        .await
        .map_err(|e| engine_err(e, id))?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"member": mem, "display_name": display.display_name, "data": display.data}),
    ))
}

pub async fn top(state: &State, b: &str, req: &Request<Incoming>, id: &str) -> Answer {
    let q = Query::parse(req, &with_view(&["limit"]))?;
    let b = board(b)?;
    let limit = Limit::new(q.int("limit", 20)?)?;
    let served = state
        .engine
        .page_served(
            &b,
            &q.view()?,
            Offset::new(0)?,
            limit,
            PageForm::Top,
            no_cache(req),
        )
        .await
        .map_err(|e| engine_err(e, id))?;
    Ok(cached_answer(served))
}

/// Whether the request asks for an answer computed afresh (`Cache-Control: no-cache`).
fn no_cache(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
}

/// A cached route's answer: its body, `X-Rankd-Cache`, and on a hit `Age` in whole seconds.
fn cached_answer(served: Served) -> Response<Body> {
    let mut r = bytes_response(StatusCode::OK, "application/json", served.body);
    let h = r.headers_mut();
    h.insert(
        "x-rankd-cache",
        hyper::header::HeaderValue::from_static(served.status.as_str()),
    );
    if let CacheStatus::Hit(age) = served.status {
        h.insert(hyper::header::AGE, age.as_secs().into());
    }
    r
}

pub async fn entries(state: &State, b: &str, req: &Request<Incoming>, id: &str) -> Answer {
    let q = Query::parse(req, &with_view(&["offset", "limit", "after"]))?;
    let b = board(b)?;
    let view = q.view()?;
    let limit = Limit::new(q.int("limit", 50)?)?;
    let served = match q.get("after") {
        Some(token) => {
            if q.get("offset").is_some() {
                return Err(Invalid::new("after", "cannot be combined with offset").into());
            }
            let cursor = Cursor::decode(token)?;
            // Cursor pages are not cached: they start wherever their member now stands.
            let page = state
                .engine
                .after(&b, &view, &cursor, limit)
                .await
                .map_err(|e| engine_err(e, id))?;
            state.engine.caches().bypass(CacheType::Leaderboard);
            Served {
                body: PageForm::Entries
                    .render(&page)
                    .map_err(|e| engine_err(e, id))?,
                status: CacheStatus::Bypass,
            }
        }
        None => {
            let offset = Offset::new(q.int("offset", 0)?)?;
            state
                .engine
                .page_served(&b, &view, offset, limit, PageForm::Entries, no_cache(req))
                .await
                .map_err(|e| engine_err(e, id))?
        }
    };
    Ok(cached_answer(served))
}

pub async fn score_range(state: &State, b: &str, req: &Request<Incoming>, id: &str) -> Answer {
    let q = Query::parse(req, &with_view(&["min", "max", "limit"]))?;
    let b = board(b)?;
    let min = q.score("min")?.unwrap_or(Score::new("min", f64::MIN)?);
    let max = q.score("max")?.unwrap_or(Score::new("max", f64::MAX)?);
    let limit = Limit::new(q.int("limit", 50)?)?;
    let mut page = state
        .engine
        .score_range(&b, &q.view()?, min, max, limit)
        .await
        .map_err(|e| engine_err(e, id))?;
    page.next = None;
    Ok(json(StatusCode::OK, &page))
}

pub async fn member(
    state: &State,
    b: &str,
    mem: &str,
    req: &Request<Incoming>,
    id: &str,
) -> Answer {
    let q = Query::parse(req, &VIEW)?;
    let (b, mem) = (board(b)?, member_id(mem)?);
    let standing = state
        .engine
        .standing(&b, &q.view()?, &mem)
        .await
        .map_err(|e| engine_err(e, id))?;
    Ok(super::problem::bytes_response(
        StatusCode::OK,
        "application/json",
        standing_json(&standing),
    ))
}

/// A standing as JSON, byte for byte what serde writes for it (a test compares them), written
/// field by field: the member read is the hottest route, and serde's map escaped each of the
/// five constant keys again for every answer.
fn standing_json(s: &Standing) -> Vec<u8> {
    // Writing to a Vec cannot fail, nor can writing a string, a number or a JSON value.
    fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, key: &[u8], value: &T) {
        out.extend_from_slice(key);
        let _ = serde_json::to_writer(&mut *out, value);
    }
    let name = s.display_name.as_deref();
    let mut out = Vec::with_capacity(96 + s.member.as_str().len() + name.map_or(0, str::len));
    put(&mut out, b"{\"member\":", s.member.as_str());
    put(&mut out, b",\"score\":", &s.score);
    put(&mut out, b",\"rank\":", &s.rank);
    put(&mut out, b",\"percentile\":", &s.percentile);
    put(&mut out, b",\"total\":", &s.total);
    if let Some(name) = name {
        put(&mut out, b",\"display_name\":", name);
    }
    if let Some(data) = &s.data {
        put(&mut out, b",\"data\":", data);
    }
    out.push(b'}');
    out
}

pub async fn around(
    state: &State,
    b: &str,
    mem: &str,
    req: &Request<Incoming>,
    id: &str,
) -> Answer {
    let q = Query::parse(req, &with_view(&["radius"]))?;
    let (b, mem) = (board(b)?, member_id(mem)?);
    let radius = Radius::new(q.int("radius", 5)?)?;
    ok(state.engine.around(&b, &q.view()?, &mem, radius).await, id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupIn {
    members: Vec<String>,
}

pub async fn lookup(state: &State, b: &str, req: Request<Incoming>, id: &str) -> Answer {
    let q = Query::parse(&req, &VIEW)?;
    let view = q.view()?;
    let b = board(b)?;
    let body = read_body(req, state.config.max_body_bytes, state.config.read_timeout).await?;
    let input: LookupIn = parse_json(&body)?;
    if input.members.is_empty() || input.members.len() > crate::engine::MAX_LOOKUP {
        return Err(Invalid::new(
            "members",
            format!(
                "must name 1 to {} members, got {}",
                crate::engine::MAX_LOOKUP,
                input.members.len()
            ),
        )
        .into());
    }
    let members = input
        .members
        .iter()
        .enumerate()
        .map(|(i, s)| Member::parse_field(&format!("members[{i}]"), s))
        .collect::<Result<Vec<_>, _>>()?;
    let l = state
        .engine
        .lookup(&b, &view, &members)
        .await
        .map_err(|e| engine_err(e, id))?;
    Ok(json(StatusCode::OK, &l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standing_is_written_as_serde_writes_it() {
        let member = |m: &str| Member::parse(m).unwrap();
        let mut cases = Vec::new();
        for (m, score, rank, percentile, total) in [
            ("u7", 581_050_201.0, 41_897, 58.103, 100_000),
            ("ünï \"q\" \\ </tag>", -0.0, 1, 0.0, 1),
            ("m", 1e300, 3, 33.333_333_333_333_336, 9),
            ("x", 0.1, u64::MAX, 100.0, u64::MAX),
            ("y", -7.5e-300, 2, f64::MIN_POSITIVE, 2),
        ] {
            cases.push(Standing {
                member: member(m),
                score,
                rank,
                percentile,
                total,
                display_name: None,
                data: None,
            });
        }
        let mut named = cases[1].clone();
        named.display_name = Some("Zoë \u{1f600} \"the\"\n".into());
        named.data = Some(serde_json::json!({"b": [1, 2.5, null], "a": "\u{7f}"}));
        cases.push(named);
        let mut data_only = cases[0].clone();
        data_only.data = Some(serde_json::json!(null));
        cases.push(data_only);
        for s in cases {
            assert_eq!(
                String::from_utf8(standing_json(&s)).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
    }
}
