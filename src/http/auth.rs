//! Bearer-key authentication: keys compared in constant time, never logged.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use hyper::header::{AUTHORIZATION, HOST};
use hyper::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use crate::config::{ApiKey, Role};

/// The configured keys, each with its tag (see [`Tags`]), so that checking a sent key takes the
/// same time whatever the length or content of the keys it is checked against.
pub struct Auth {
    tags: Tags,
    keys: Vec<(u64, ApiKey)>,
    public_reads: bool,
    /// The key `/metrics` requires and its tag, if any.
    metrics_key: Option<(u64, String)>,
    /// Requests a second each caller may make (`RANKD_RATE_LIMIT`); none when 0.
    limiter: Option<Limiter>,
}

/// Who a request comes from, for rate limits: a configured key (by its place in the list), or
/// anyone without one (public reads, or every request when no key is configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The configured key at this index.
    Key(usize),
    /// No key.
    Anonymous,
}

/// One token bucket per caller: `rate` requests a second, up to a second's worth at once.
struct Limiter {
    rate: f64,
    /// Tokens and when they were counted, per key, then one for anonymous callers.
    buckets: std::sync::Mutex<Vec<(f64, std::time::Instant)>>,
}

impl Limiter {
    fn new(rate: u32, callers: usize) -> Self {
        let now = std::time::Instant::now();
        Self {
            rate: f64::from(rate),
            buckets: std::sync::Mutex::new(vec![(f64::from(rate), now); callers + 1]),
        }
    }

    /// Takes a token for `at`; `Err` with the whole seconds until one is there.
    fn take(&self, at: usize) -> Result<(), u32> {
        let mut buckets = self.buckets.lock().expect("rate buckets poisoned");
        let (tokens, counted) = &mut buckets[at];
        let now = std::time::Instant::now();
        *tokens = (*tokens + now.duration_since(*counted).as_secs_f64() * self.rate).min(self.rate);
        *counted = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - *tokens) / self.rate).ceil() as u32).max(1))
        }
    }
}

/// Keyed 64-bit tags of keys: SipHash under a key drawn at random when the server starts.
///
/// A sent key is tagged (in time that depends on its own length only), and its tag compared in
/// constant time with each configured key's; only where a tag matches are the keys themselves
/// compared. The timing of a check can tell no more than whether a tag matched, which a client
/// cannot bring about without the key (or the random key of the tags). A tag costs about a
/// hundred instructions for a short key, where a SHA-256 of it cost 3,500, a tenth of a member
/// read's own work.
struct Tags(RandomState);

impl Tags {
    fn tag(&self, key: &[u8]) -> u64 {
        let mut h = self.0.build_hasher();
        h.write(key);
        h.finish()
    }

    /// Whether `sent`, whose tag is `sent_tag`, is the key `want` tagged `want_tag`.
    fn matches(sent: &[u8], sent_tag: u64, want: &[u8], want_tag: u64) -> bool {
        bool::from(want_tag.ct_eq(&sent_tag)) && bool::from(want.ct_eq(sent))
    }
}

impl Auth {
    /// Authentication over `keys`; with none, every request is allowed (the server then listens on
    /// loopback only, which config validation enforces).
    pub fn new(keys: &[ApiKey], public_reads: bool) -> Self {
        let tags = Tags(RandomState::new());
        Self {
            keys: keys
                .iter()
                .map(|k| (tags.tag(k.key.as_bytes()), k.clone()))
                .collect(),
            tags,
            public_reads,
            metrics_key: None,
            limiter: None,
        }
    }

    /// Limits every caller to `rate` requests a second (0: no limit).
    #[must_use]
    pub fn with_rate_limit(mut self, rate: u32) -> Self {
        self.limiter = (rate > 0).then(|| Limiter::new(rate, self.keys.len()));
        self
    }

    /// Counts a request of `caller` against its rate limit.
    ///
    /// # Errors
    /// 429, with Retry-After, when the caller has used its requests for now.
    pub fn admit(&self, caller: Caller) -> Result<(), Problem> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let at = match caller {
            Caller::Key(i) => i,
            Caller::Anonymous => self.keys.len(),
        };
        limiter.take(at).map_err(|wait| {
            Problem::rate_limited(
                &format!(
                    "rate: at most {} requests a second for this {}; retry in {wait} s",
                    limiter.rate,
                    if caller == Caller::Anonymous {
                        "caller without a key"
                    } else {
                        "API key"
                    }
                ),
                wait,
            )
        })
    }

    /// Requires `key` as the bearer key of `/metrics`.
    #[must_use]
    pub fn with_metrics_key(mut self, key: Option<&str>) -> Self {
        self.metrics_key = key.map(|k| (self.tags.tag(k.as_bytes()), k.to_owned()));
        self
    }

    /// Checks a request for `/metrics`: open unless a metrics key is configured.
    ///
    /// # Errors
    /// 401 for a missing or other key.
    pub fn check_metrics(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let Some((want_tag, want)) = &self.metrics_key else {
            return Ok(());
        };
        let sent = bearer(headers).unwrap_or("").as_bytes();
        if Tags::matches(sent, self.tags.tag(sent), want.as_bytes(), *want_tag) {
            Ok(())
        } else {
            Err(Problem::unauthorized(
                "authorization: /metrics needs the metrics key (RANKD_METRICS_KEY) as `Authorization: Bearer <key>`",
            ))
        }
    }

    /// Checks that the request may use a route needing `role`. Without keys (rankd then listens
    /// on loopback only), only requests addressed to a loopback host are taken: a web page the
    /// user visits can reach 127.0.0.1 too, under a name of its own (DNS rebinding), and that
    /// name is what its requests carry as Host.
    ///
    /// # Errors
    /// 401 for a missing or unknown key, 403 for a key without the role, or without keys for a
    /// Host that is not loopback.
    pub fn check(&self, headers: &HeaderMap, role: Role) -> Result<Caller, Problem> {
        if self.keys.is_empty() {
            return loopback_host(headers).map(|()| Caller::Anonymous);
        }
        let header = headers.get(AUTHORIZATION);
        if header.is_none() && role == Role::Read && self.public_reads {
            return Ok(Caller::Anonymous);
        }
        if header.is_none() {
            return Err(Problem::unauthorized(
                "authorization: send an API key as `Authorization: Bearer <key>`",
            ));
        }
        let sent = bearer(headers).unwrap_or("").as_bytes();
        let sent_tag = self.tags.tag(sent);
        // Compare against every key, always, so timing says nothing about which one matched.
        let mut found: Option<(usize, &ApiKey)> = None;
        for (i, (tag, key)) in self.keys.iter().enumerate() {
            if Tags::matches(sent, sent_tag, key.key.as_bytes(), *tag) {
                found = Some((i, key));
            }
        }
        let Some((at, key)) = found else {
            return Err(Problem::unauthorized(
                "authorization: the API key is not known",
            ));
        };
        // Public reads are open to anyone, a known key without the read role included; an unknown
        // key is still refused above, as it says something is misconfigured.
        if key.grants(role) || (role == Role::Read && self.public_reads) {
            Ok(Caller::Key(at))
        } else {
            let mut p = Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!("authorization: this key lacks the {} role", role_name(role)),
            );
            p = p.with_field("authorization");
            Err(p)
        }
    }
}

/// The key a request sends as `Authorization: Bearer <key>`. The scheme is case-insensitive
/// (RFC 9110 §11.1): BEARER and bearer alike.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let h = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = h.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
}

/// Whether a request names a loopback host: `localhost` (or a name under it), an address of
/// 127.0.0.0/8, or `[::1]`, with or without a port.
fn loopback_host(headers: &HeaderMap) -> Result<(), Problem> {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let loopback = name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    let mut p = Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Forbidden",
        format!(
            "host: without API keys rankd answers only requests addressed to a loopback host \
             (localhost, 127.0.0.1, [::1]), got {host:?}; set RANKD_API_KEYS to serve other names"
        ),
    );
    p = p.with_field("host");
    Err(p)
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Read => "read",
        Role::Write => "write",
        Role::Admin => "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = v {
            h.insert(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn each_key_and_the_callers_without_one_have_a_rate_of_their_own() {
        let keys = ApiKey::parse_list("a:admin,b:read").unwrap();
        let auth = Auth::new(&keys, true).with_rate_limit(2);
        let a = auth.check(&headers(Some("Bearer a")), Role::Write).unwrap();
        let b = auth.check(&headers(Some("Bearer b")), Role::Read).unwrap();
        let anon = auth.check(&headers(None), Role::Read).unwrap();
        assert_eq!(
            (a, b, anon),
            (Caller::Key(0), Caller::Key(1), Caller::Anonymous)
        );
        assert!(auth.admit(a).is_ok() && auth.admit(a).is_ok());
        let p = auth.admit(a).unwrap_err();
        assert_eq!(p.status(), 429);
        let body = serde_json::to_value(&*p).unwrap();
        assert_eq!(body["field"], "rate", "{body}");
        // The others' buckets are their own.
        for c in [b, b, anon, anon] {
            assert!(auth.admit(c).is_ok(), "{c:?}");
        }
        assert!(auth.admit(anon).is_err());
        // A second later a whole second's worth is back.
        std::thread::sleep(std::time::Duration::from_millis(1050));
        assert!(auth.admit(a).is_ok() && auth.admit(a).is_ok());
        assert!(auth.admit(a).is_err());
        // No limit configured: never refused.
        let open = Auth::new(&keys, false);
        assert!((0..1000).all(|_| open.admit(Caller::Key(0)).is_ok()));
    }

    #[test]
    fn a_matching_tag_alone_does_not_pass_for_the_key() {
        let tags = Tags(RandomState::new());
        let t = tags.tag(b"secret");
        assert_eq!(t, tags.tag(b"secret"));
        assert_ne!(t, tags.tag(b"secreT"));
        assert!(Tags::matches(b"secret", t, b"secret", t));
        // Keys whose tags collide are still told apart by the keys themselves.
        assert!(!Tags::matches(b"guess", t, b"secret", t));
        assert!(!Tags::matches(b"secret", t ^ 1, b"secret", t));
    }

    #[test]
    fn metrics_need_the_metrics_key_once_one_is_set() {
        let open = Auth::new(&[], false);
        assert!(open.check_metrics(&headers(None)).is_ok());
        let keyed = Auth::new(&ApiKey::parse_list("a:admin").unwrap(), false)
            .with_metrics_key(Some("scrape"));
        assert!(keyed.check_metrics(&headers(Some("Bearer scrape"))).is_ok());
        assert!(keyed
            .check_metrics(&headers(Some("bearer  scrape")))
            .is_ok());
        for sent in [
            None,
            Some("Bearer a"),
            Some("Bearer scrap"),
            Some("Basic scrape"),
        ] {
            assert_eq!(
                keyed.check_metrics(&headers(sent)).unwrap_err().status(),
                401,
                "{sent:?}"
            );
        }
    }

    #[test]
    fn without_keys_only_requests_to_a_loopback_host_are_taken() {
        let auth = Auth::new(&[], false);
        let host = |h: Option<&str>| {
            let mut m = HeaderMap::new();
            if let Some(h) = h {
                m.insert(HOST, h.parse().unwrap());
            }
            auth.check(&m, Role::Admin)
        };
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(host(Some(ok)).is_ok(), "{ok}");
        }
        for refused in [
            None,
            Some("evil.example"),
            Some("evil.example:8080"),
            Some("127.0.0.1.evil.example"),
            Some("localhost.evil.example"),
            Some("10.0.0.1:8080"),
            Some("[::2]:8080"),
        ] {
            let p = host(refused).unwrap_err();
            assert_eq!(p.status(), 403, "{refused:?}");
            assert_eq!(
                serde_json::to_value(&*p).unwrap()["field"],
                "host",
                "{refused:?}"
            );
        }
    }

    #[test]
    fn roles_are_enforced_and_admin_implies_the_others() {
        let keys = ApiKey::parse_list("r:read,w:write,a:admin").unwrap();
        let auth = Auth::new(&keys, false);
        assert!(auth.check(&headers(Some("Bearer r")), Role::Read).is_ok());
        assert_eq!(
            auth.check(&headers(Some("Bearer r")), Role::Write)
                .unwrap_err()
                .status(),
            403
        );
        assert!(auth.check(&headers(Some("Bearer a")), Role::Write).is_ok());
        for sent in ["bearer a", "BEARER a", "BeArEr  a"] {
            assert!(
                auth.check(&headers(Some(sent)), Role::Write).is_ok(),
                "{sent}"
            );
        }
        assert_eq!(
            auth.check(&headers(Some("Basic a")), Role::Read)
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            auth.check(&headers(Some("Bearer nope")), Role::Read)
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            auth.check(&headers(None), Role::Read).unwrap_err().status(),
            401
        );
        assert_eq!(
            auth.check(&headers(Some("Basic r")), Role::Read)
                .unwrap_err()
                .status(),
            401
        );
    }

    #[test]
    fn public_reads_need_no_key_but_writes_still_do() {
        let auth = Auth::new(&ApiKey::parse_list("w:write").unwrap(), true);
        assert!(auth.check(&headers(None), Role::Read).is_ok());
        assert_eq!(
            auth.check(&headers(None), Role::Write)
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            auth.check(&headers(Some("Bearer bad")), Role::Read)
                .unwrap_err()
                .status(),
            401
        );
        // A write-only key may read what anyone may.
        assert!(auth.check(&headers(Some("Bearer w")), Role::Read).is_ok());
        let private = Auth::new(&ApiKey::parse_list("w:write").unwrap(), false);
        assert_eq!(
            private
                .check(&headers(Some("Bearer w")), Role::Read)
                .unwrap_err()
                .status(),
            403
        );
    }
}
