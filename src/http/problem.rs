//! problem+json responses and the JSON body helpers every handler uses.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Invalid};

/// The response body type of every route.
pub type Body = Full<Bytes>;

/// One invalid event of a batch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BatchError {
    /// Its index in `events`.
    pub index: usize,
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub detail: String,
}

impl BatchError {
    /// The event at `index`, invalid for the reason `inv` gives.
    pub fn new(index: usize, inv: Invalid) -> Self {
        Self {
            index,
            field: inv.field,
            detail: inv.message,
        }
    }
}

/// An RFC 9457 problem. Boxed: it travels in every handler's `Err`, which should stay small.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Problem(Box<ProblemBody>);

impl std::ops::Deref for Problem {
    type Target = ProblemBody;
    fn deref(&self) -> &ProblemBody {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemBody {
        &mut self.0
    }
}

/// The fields of a [`Problem`].
#[derive(Debug, Clone, Serialize)]
pub struct ProblemBody {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<BatchError>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(skip)]
    retry_after: Option<u32>,
    #[serde(skip)]
    challenge: bool,
    #[serde(skip)]
    allow: Option<String>,
}

impl Problem {
    /// A problem of `status`, with a slug for its type.
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self(Box::new(ProblemBody {
            kind: format!("urn:rankd:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            errors: None,
            request_id: None,
            retry_after: None,
            challenge: false,
            allow: None,
        }))
    }

    /// 400 for one bad field.
    pub fn invalid(e: &Invalid) -> Self {
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-input",
            "Invalid input",
            e.to_string(),
        );
        p.field = Some(e.field.clone());
        p
    }

    /// 400 for a batch, listing every invalid event.
    pub fn invalid_batch(errors: Vec<BatchError>, total: usize) -> Self {
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-batch",
            "Invalid batch",
            format!(
                "{} of {total} events are invalid; nothing was written. First: events[{}].{}: {}",
                errors.len(),
                errors[0].index,
                errors[0].field,
                errors[0].detail
            ),
        );
        p.field = Some("events".into());
        p.errors = Some(errors);
        p
    }

    /// 401 with a Bearer challenge.
    pub fn unauthorized(detail: &str) -> Self {
        let mut p = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        );
        p.field = Some("authorization".into());
        p.challenge = true;
        p
    }

    /// 429: the caller made its requests for now; retry after `wait` seconds.
    pub fn rate_limited(detail: &str, wait: u32) -> Self {
        let mut p = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            detail,
        );
        p.field = Some("rate".into());
        p.retry_after = Some(wait);
        p
    }

    /// 404 for a path no route serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("no route serves {path}"),
        )
    }

    /// 405 listing the methods the path allows.
    pub fn method_not_allowed(allow: Vec<&str>) -> Self {
        let mut p = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("this path allows {}", allow.join(", ")),
        );
        p.allow = Some(allow.join(", "));
        p
    }

    /// 503 with Retry-After.
    pub fn unavailable(detail: &str) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        );
        p.retry_after = Some(1);
        p
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Maps an engine error. Internal details go to the log, never into the body.
    pub fn from_error(e: &Error, request_id: &str) -> Self {
        match e {
            Error::Invalid(i) => Self::invalid(i),
            Error::InvalidBatch(list) => Self::invalid_batch(
                list.iter()
                    .map(|(i, inv)| BatchError::new(*i, inv.clone()))
                    .collect(),
                list.len(),
            ),
            Error::BoardNotFound(b) => {
                let mut p = Self::new(
                    StatusCode::NOT_FOUND,
                    "board-not-found",
                    "Board not found",
                    e.to_string(),
                );
                p.field = Some("board".into());
                let _ = b;
                p
            }
            Error::MemberNotFound { .. } => {
                let mut p = Self::new(
                    StatusCode::NOT_FOUND,
                    "member-not-found",
                    "Member not found",
                    e.to_string(),
                );
                p.field = Some("member".into());
                p
            }
            Error::Conflict(m) => {
                Self::new(StatusCode::CONFLICT, "conflict", "Conflict", m.clone())
            }
            Error::EventIdReused { field, .. } => {
                let mut p = Self::new(
                    StatusCode::CONFLICT,
                    "event-id-reused",
                    "Event id reused",
                    format!(
                        "{e}; nothing was written. A retry resends the same event under its \
                         event_id; another event needs an event_id of its own"
                    ),
                );
                p.field = Some(field.clone());
                p
            }
            Error::Unavailable(m) => {
                tracing::warn!(request_id, error = %m, "backend unavailable");
                let mut p =
                    Self::unavailable("the leaderboard backend is unreachable; retry shortly");
                p.request_id = Some(request_id.to_owned());
                p
            }
            Error::Rebuilding(b) => {
                tracing::info!(request_id, board = %b, "board being rebuilt");
                let mut p = Self::unavailable(&format!(
                    "board {b} is being rebuilt from the durable store; retry shortly"
                ));
                p.request_id = Some(request_id.to_owned());
                p
            }
            Error::Unconfirmed { detail, cause } => {
                tracing::warn!(request_id, error = %cause, "outcome unconfirmed");
                let mut p = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unconfirmed",
                    "Outcome not confirmed",
                    format!(
                        "{detail}: the request may have been applied. Resend a write only with the \
                         same event_id, which applies it at most once"
                    ),
                );
                p.retry_after = Some(1);
                p.request_id = Some(request_id.to_owned());
                p
            }
            Error::Backend(m) => {
                tracing::error!(request_id, error = %m, "backend error");
                let mut p = Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    format!("an internal error occurred; quote request id {request_id}"),
                );
                p.request_id = Some(request_id.to_owned());
                p
            }
        }
    }

    /// Names the offending field.
    #[must_use]
    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    /// Attaches the request id (5xx answers always carry it).
    #[must_use]
    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }

    /// The response.
    pub fn into_response(self) -> Response<Body> {
        let mut r = bytes_response(
            self.status(),
            "application/problem+json",
            serde_json::to_vec(&self).unwrap_or_default(),
        );
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        if self.challenge {
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rankd\""),
            );
        }
        if let Some(a) = &self.allow {
            if let Ok(v) = HeaderValue::from_str(a) {
                r.headers_mut().insert(hyper::header::ALLOW, v);
            }
        }
        r
    }
}

impl From<Invalid> for Problem {
    fn from(e: Invalid) -> Self {
        Problem::invalid(&e)
    }
}

/// A response with a body of `content_type`.
pub fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => bytes_response(status, "application/json", body),
        Err(e) => {
            tracing::error!(error = %e, "response does not serialise");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "response encoding failed",
            )
            .into_response()
        }
    }
}

/// 204.
pub fn no_content() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Whether a Content-Type names JSON: `application/json` in any case, with parameters allowed but
/// a charset other than UTF-8 refused (the body is read as UTF-8).
fn is_json(ct: &str) -> bool {
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
        && parts.all(|p| match p.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
                let v = v.trim().trim_matches('"');
                v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
            }
            _ => true,
        })
}

/// Reads a whole body, at most `limit` bytes, within `timeout`.
///
/// # Errors
/// 413 over the limit, 408 when the client is too slow, 415 for a non-JSON content type.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Problem> {
    // Required, not assumed: a web page may send a body without preflight only as a "simple"
    // content type (text/plain, forms), never as application/json.
    let ct = req
        .headers()
        .get(CONTENT_TYPE)
        .map(|ct| ct.to_str().unwrap_or(""));
    if !ct.is_some_and(is_json) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            match ct {
                Some(ct) => format!("content-type: must be application/json, got {ct:?}"),
                None => "content-type: must be application/json, got none".to_owned(),
            },
        )
        .with_field("content-type"));
    }
    let too_large = || {
        let mut p = Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Body too large",
            format!("body: must be at most {limit} bytes"),
        );
        p.field = Some("body".into());
        p
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), limit);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "Request timeout",
            format!("body: must arrive within {} s", timeout.as_secs()),
        )
        .with_field("body")),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Ok(Err(e)) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-body",
            "Bad request body",
            format!("body: could not be read: {e}"),
        )
        .with_field("body")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Parses a JSON body, naming the path of the offending field (`events[3].value`) on failure.
///
/// # Errors
/// 400 naming the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // serde would also read a struct from a JSON array, by position: every body is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(Problem::invalid(&Invalid::new(
            "body",
            "must be a JSON object, got an array",
        )));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        Problem::invalid(&Invalid::new(serde_field(&path, &msg, "body"), msg))
    })?;
    // Two objects back to back must not pass as the first with the second silently dropped.
    de.end().map_err(|e| {
        Problem::invalid(&Invalid::new(
            "body",
            format!("must be one JSON object with nothing after it: {e}"),
        ))
    })?;
    Ok(value)
}

/// The field a serde error is about: the unknown or missing field its message names (serde puts
/// those only in the message), else its path, else `whole` (the path is `.` at the top and `?` when
/// the parser stopped before it knew where it was, as on a syntax error).
pub fn serde_field(path: &str, msg: &str, whole: &str) -> String {
    let named = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("missing field `"))
        .and_then(|r| r.split('`').next());
    let path = match path {
        "." | "" | "?" => None,
        p => Some(p),
    };
    match (named, path) {
        (Some(u), None) => u.to_owned(),
        (Some(u), Some(p)) if !p.ends_with(u) => format!("{p}.{u}"),
        (_, None) => whole.to_owned(),
        (_, Some(p)) => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::BoardId;

    #[test]
    fn a_board_being_rebuilt_is_a_503_that_says_so_and_when_to_retry() {
        let p = Problem::from_error(&Error::Rebuilding(BoardId::parse("xp").unwrap()), "r1");
        assert_eq!(p.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            p.detail,
            "board xp is being rebuilt from the durable store; retry shortly"
        );
        assert_eq!(p.retry_after, Some(1));
        // Redis out of reach is another answer.
        let p = Problem::from_error(&Error::Unavailable("refused".into()), "r2");
        assert_eq!(
            p.detail,
            "the leaderboard backend is unreachable; retry shortly"
        );
    }
}
