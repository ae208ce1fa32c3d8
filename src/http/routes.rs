//! The route table and the one match that dispatches it.

use std::borrow::Cow;
use std::sync::LazyLock;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::handlers as h;
use super::problem::{Body, Problem};
use super::State;
use crate::config::Role;

/// Every endpoint, in the order of [`ROUTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    CacheStats,
    ClearCaches,
    WarmCaches,
    ListBoards,
    PutBoard,
    GetBoard,
    DeleteBoard,
    Submit,
    Batch,
    Top,
    Entries,
    ScoreRange,
    Lookup,
    Member,
    PutDisplay,
    RemoveMember,
    Around,
}

impl Endpoint {
    /// Whether the endpoint reads query parameters (and checks them itself). The probes take
    /// none and ignore any, as probes and scrapers may add their own.
    fn may_have_query(self) -> bool {
        matches!(
            self,
            Self::Top
                | Self::Entries
                | Self::ScoreRange
                | Self::Member
                | Self::Around
                | Self::Lookup
                | Self::Healthz
                | Self::Readyz
                | Self::Metrics
                | Self::OpenApi
        )
    }
}

/// A route without query parameters refuses any: `DELETE …/members/u42?scope=class:7` must not
/// pass for a removal from one scope while it removes the member everywhere.
fn refuse_query(req: &Request<Incoming>) -> Result<(), Problem> {
    let query = req.uri().query().unwrap_or("");
    match form_urlencoded::parse(query.as_bytes()).next() {
        Some((k, _)) => Err(Problem::invalid(&crate::Invalid::new(
            k.as_ref(),
            "is not a parameter of this route (it takes none)",
        ))),
        None => Ok(()),
    }
}

/// One route: method, path pattern (`{name}` captures a segment), the role it needs (None: open).
#[derive(Debug, Clone)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path pattern, as written in openapi.json.
    pub path: &'static str,
    /// The role a key needs.
    pub role: Option<Role>,
    /// What serves it.
    pub endpoint: Endpoint,
}

impl Route {
    /// The route's place in [`ROUTES`], which its endpoint's is too (a test checks it).
    pub fn index(&self) -> usize {
        self.endpoint as usize
    }
}

macro_rules! routes {
    ($($method:ident $path:literal $role:expr => $ep:ident),* $(,)?) => {
        /// Every route the server serves.
        pub const ROUTES: &[Route] = &[$(Route {
            method: Method::$method,
            path: $path,
            role: $role,
            endpoint: Endpoint::$ep,
        }),*];
    };
}

const READ: Option<Role> = Some(Role::Read);
const WRITE: Option<Role> = Some(Role::Write);
const ADMIN: Option<Role> = Some(Role::Admin);

routes! {
    GET "/healthz" None => Healthz,
    GET "/readyz" None => Readyz,
    GET "/metrics" None => Metrics,
    GET "/openapi.json" None => OpenApi,
    GET "/v1/stats/cache" READ => CacheStats,
    POST "/v1/caches/clear" ADMIN => ClearCaches,
    POST "/v1/caches/warm" ADMIN => WarmCaches,
    GET "/v1/boards" ADMIN => ListBoards,
    PUT "/v1/boards/{board}" ADMIN => PutBoard,
    GET "/v1/boards/{board}" ADMIN => GetBoard,
    DELETE "/v1/boards/{board}" ADMIN => DeleteBoard,
    POST "/v1/boards/{board}/scores" WRITE => Submit,
    POST "/v1/scores/batch" WRITE => Batch,
    GET "/v1/boards/{board}/top" READ => Top,
    GET "/v1/boards/{board}/entries" READ => Entries,
    GET "/v1/boards/{board}/scores" READ => ScoreRange,
    POST "/v1/boards/{board}/members/lookup" READ => Lookup,
    GET "/v1/boards/{board}/members/{member}" READ => Member,
    PUT "/v1/boards/{board}/members/{member}" WRITE => PutDisplay,
    DELETE "/v1/boards/{board}/members/{member}" WRITE => RemoveMember,
    GET "/v1/boards/{board}/members/{member}/around" READ => Around,
}

/// Most captures of any route's pattern (a test checks it).
const MAX_CAPTURES: usize = 2;

/// Segments captured by a pattern, percent-decoded, in order: borrowed from the path unless
/// decoding changed them, so that routing a request allocates nothing.
#[derive(Debug, Default)]
pub struct Params<'a> {
    items: [Cow<'a, str>; MAX_CAPTURES],
    n: usize,
}

impl Params<'_> {
    /// The `i`-th capture, or "" past the last.
    pub fn get(&self, i: usize) -> &str {
        if i < self.n {
            &self.items[i]
        } else {
            ""
        }
    }

    /// How many segments were captured.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// A bound on the `/`-separated segments of any route's pattern (the longest has 7, counting the
/// empty one before the leading `/`); a longer path matches no route.
const MAX_SEGMENTS: usize = 8;

/// Each route's pattern split at `/`, once, in the order of [`ROUTES`].
static PATTERNS: LazyLock<Vec<Vec<&'static str>>> =
    LazyLock::new(|| ROUTES.iter().map(|r| r.path.split('/').collect()).collect());

/// Whether a path, split into `segs`, has the shape of `pattern`: the same literal segments, a
/// non-empty segment for each capture.
fn matches(pattern: &[&str], segs: &[&str]) -> bool {
    pattern.len() == segs.len()
        && pattern.iter().zip(segs).all(|(p, s)| {
            if p.starts_with('{') {
                !s.is_empty()
            } else {
                p == s
            }
        })
}

/// The captures of a path (split into `segs`) that [`matches`] `pattern`, percent-decoded.
fn capture<'a>(pattern: &[&str], segs: &[&'a str]) -> Result<Params<'a>, Problem> {
    let mut params = Params::default();
    for (p, s) in pattern.iter().zip(segs) {
        if !p.starts_with('{') {
            continue;
        }
        match percent_encoding::percent_decode_str(s).decode_utf8() {
            Ok(v) => {
                params.items[params.n] = v;
                params.n += 1;
            }
            Err(_) => {
                let name = p.trim_matches(|c| c == '{' || c == '}');
                return Err(Problem::invalid(&crate::Invalid::new(
                    name,
                    "must be valid UTF-8 once percent-decoded",
                )));
            }
        }
    }
    Ok(params)
}

/// Finds the route for a request: the route and its parameters, or the problem to answer. The
/// path is split once, on the stack; trying every route then compares slices. Parameters that do
/// not decode are the route's problem, answered only after its key check (see [`dispatch`]): a
/// client without a key learns no more than that it needs one.
pub fn find<'a>(
    method: &Method,
    path: &'a str,
) -> Result<(&'static Route, Result<Params<'a>, Problem>), Problem> {
    let mut buf = [""; MAX_SEGMENTS];
    let mut n = 0;
    let mut start = 0;
    // Split at each '/' (an ASCII byte, so every piece is a str of its own).
    for end in path
        .bytes()
        .enumerate()
        .filter_map(|(i, b)| (b == b'/').then_some(i))
        .chain([path.len()])
    {
        if n == MAX_SEGMENTS {
            return Err(Problem::no_route(path));
        }
        buf[n] = &path[start..end];
        n += 1;
        start = end + 1;
    }
    let segs = &buf[..n];
    let mut allowed = Vec::new();
    // Literal segments win over captures: /members/lookup is not a member called "lookup" for POST.
    for (route, pattern) in ROUTES.iter().zip(PATTERNS.iter()) {
        if matches(pattern, segs) {
            if route.method == *method {
                return Ok((route, capture(pattern, segs)));
            }
            allowed.push(route.method.as_str());
        }
    }
    if allowed.is_empty() {
        Err(Problem::no_route(path))
    } else {
        Err(Problem::method_not_allowed(allowed))
    }
}

/// Serves one request already matched to `route`.
pub async fn dispatch(
    state: &State,
    route: &Route,
    params: Result<Params<'_>, Problem>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Body>, Problem> {
    if let Some(role) = route.role {
        let caller = state.auth.check(req.headers(), role)?;
        state.auth.admit(caller)?;
    }
    let params = params?;
    if !route.endpoint.may_have_query() {
        refuse_query(&req)?;
    }
    let p = |i: usize| params.get(i);
    match route.endpoint {
        Endpoint::Healthz => Ok(h::healthz()),
        Endpoint::Readyz => h::readyz(state).await,
        Endpoint::Metrics => {
            state.auth.check_metrics(req.headers())?;
            Ok(h::metrics(state))
        }
        Endpoint::OpenApi => Ok(h::openapi()),
        Endpoint::CacheStats => h::cache_stats(state, id).await,
        Endpoint::ClearCaches => h::clear_caches(state, req, id).await,
        Endpoint::WarmCaches => h::warm_caches(state, req, id).await,
        Endpoint::ListBoards => h::list_boards(state, id).await,
        Endpoint::PutBoard => h::put_board(state, p(0), req, id).await,
        Endpoint::GetBoard => h::get_board(state, p(0), id).await,
        Endpoint::DeleteBoard => h::delete_board(state, p(0), id).await,
        Endpoint::Submit => h::submit(state, p(0), req, id).await,
        Endpoint::Batch => h::batch(state, req, id).await,
        Endpoint::Top => h::top(state, p(0), &req, id).await,
        Endpoint::Entries => h::entries(state, p(0), &req, id).await,
        Endpoint::ScoreRange => h::score_range(state, p(0), &req, id).await,
        Endpoint::Member => h::member(state, p(0), p(1), &req, id).await,
        Endpoint::PutDisplay => h::put_display(state, p(0), p(1), req, id).await,
        Endpoint::RemoveMember => h::remove_member(state, p(0), p(1), id).await,
        Endpoint::Around => h::around(state, p(0), p(1), &req, id).await,
        Endpoint::Lookup => h::lookup(state, p(0), req, id).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_fits_the_segment_and_capture_bounds() {
        for r in ROUTES {
            assert!(r.path.split('/').count() <= MAX_SEGMENTS, "{}", r.path);
            assert!(r.path.matches('{').count() <= MAX_CAPTURES, "{}", r.path);
            let path = r.path.replace('{', "x").replace('}', "");
            let (found, _) = find(&r.method, &path).unwrap();
            assert_eq!(found.endpoint, r.endpoint, "{path}");
        }
    }

    #[test]
    fn each_route_is_at_its_endpoints_place() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert_eq!(r.index(), i, "{}", r.path);
        }
    }

    #[test]
    fn literal_segments_and_captures_route_as_documented() {
        let all = |p: Params<'_>| {
            (0..p.len())
                .map(|i| p.get(i).to_owned())
                .collect::<Vec<_>>()
        };
        let (r, p) = find(&Method::POST, "/v1/boards/xp/members/lookup").unwrap();
        assert_eq!(
            (r.endpoint, all(p.unwrap())),
            (Endpoint::Lookup, vec!["xp".to_owned()])
        );
        let (r, p) = find(&Method::GET, "/v1/boards/xp/members/u%2042").unwrap();
        assert_eq!(
            (r.endpoint, all(p.unwrap())),
            (Endpoint::Member, vec!["xp".to_owned(), "u 42".to_owned()])
        );
        let (_, p) = find(&Method::GET, "/v1/boards/x%2Fy/top").unwrap();
        let p = p.unwrap();
        assert_eq!((p.get(0), p.get(1)), ("x/y", ""));
        assert!(matches!(p.items[0], Cow::Owned(_)));
        let (_, p) = find(&Method::GET, "/v1/boards/xp/members/u1/around").unwrap();
        assert!(matches!(
            p.unwrap().items,
            [Cow::Borrowed("xp"), Cow::Borrowed("u1")]
        ));
        assert_eq!(
            find(&Method::PATCH, "/v1/boards/xp").unwrap_err().status(),
            405
        );
        assert_eq!(find(&Method::GET, "/v2/nothing").unwrap_err().status(), 404);
        assert_eq!(
            find(&Method::GET, "/v1/boards/xp/members/u1/around/a/b/c")
                .unwrap_err()
                .status(),
            404
        );
        assert_eq!(
            find(&Method::GET, "/v1/boards//top").unwrap_err().status(),
            404
        );
        // The route is found; its parameter is its problem, answered after the key check.
        let (r, p) = find(&Method::GET, "/v1/boards/%ff/top").unwrap();
        assert_eq!(r.endpoint, Endpoint::Top);
        assert_eq!(p.unwrap_err().status(), 400);
    }
}
