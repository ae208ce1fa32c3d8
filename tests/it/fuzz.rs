//! Fuzzing the request path: arbitrary methods, paths, percent-encodings, query strings, headers,
//! framings and bodies, written as raw bytes to the real server over TCP. Whatever arrives, the
//! server never panics, never answers 5xx, and keeps serving.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use rankd::http::routes::ROUTES;
use serde_json::{json, Value};

use crate::server::{raw, responses, TestApp, ADMIN, READER, WRITER};

/// One request as raw bytes; printed escaped, so that a failure shows exactly what was sent.
#[derive(Clone)]
struct RawRequest(Vec<u8>);

impl fmt::Debug for RawRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

fn bytes(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "get",
        ])
        .prop_map(bytes),
        1 => "[A-Z]{1,12}".prop_map(bytes),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

/// A path segment, odd percent-encodings and all.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]{1,8}",
        8 => Just("fz".to_owned()),
        6 => Just("m1".to_owned()),
        1 => Just("lookup".to_owned()),
        1 => prop::sample::select(vec![
            "%", "%z", "%zz", "%ff", "%00", "%2F", "%2f..%2F", "%C3%28", "%E2%82", "%F0%9F%98%80",
            "..", ".", "%20", "+", "a%00b", "%u0041", "%%41",
        ])
        .prop_map(str::to_owned),
        2 => "(%[0-9A-Fa-f]{2}){1,6}",
        1 => "[^/?# ]{0,20}",
        1 => "x{60,200}",
    ]
}

/// A method and a path: mostly a route of the router with its own method and its captures filled
/// in; else any method on a route, or something else altogether.
fn target() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let routed = (
        prop::sample::select(ROUTES),
        prop::collection::vec(segment(), 2),
        prop::bool::weighted(0.8),
        method(),
    )
        .prop_map(|(route, segs, own, other)| {
            let mut segs = segs.into_iter();
            let path: Vec<String> = route
                .path
                .split('/')
                .map(|p| {
                    if p.starts_with('{') {
                        segs.next().unwrap()
                    } else {
                        p.to_owned()
                    }
                })
                .collect();
            let method = if own {
                bytes(route.method.as_str())
            } else {
                other
            };
            (method, bytes(path.join("/")))
        });
    let other = prop_oneof![
        1 => "/[ -~]{0,40}".prop_map(bytes),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|mut b| {
            b.insert(0, b'/');
            b
        }),
        1 => prop::sample::select(vec![
            "*", "", "http://t/healthz", "//", "/v1//boards", "/v1/boards/", "/./healthz",
            "/healthz/", "/HEALTHZ", "/v1/boards/fz/top/", "/v1/boards/fz/members/",
        ])
        .prop_map(bytes),
    ];
    prop_oneof![
        8 => routed,
        1 => (method(), other),
    ]
}

fn query() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        6 => prop::sample::select(vec![
            "limit", "offset", "after", "radius", "window", "period", "scope", "min", "max",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z%+=]{0,6}",
    ];
    let value = prop_oneof![
        6 => prop::sample::select(vec![
            "-1", "0", "1", "5", "1000", "1001", "99999999999999999999", "-9223372036854775808",
            "NaN", "inf", "-inf", "1e999", "1e-999", "0x10", "abc", "%ff", "%", "all", "daily",
            "weekly", "monthly", "2026-W47", "2026-11", "2026-11-26", "2026-13-45", "class:7",
            "a+b", "%7B%7D", "0000000000000000aa", "3ff000000000000041", "",
        ])
        .prop_map(str::to_owned),
        1 => "[!-~]{0,20}",
    ];
    prop_oneof![
        8 => Just(Vec::new()),
        6 => prop::collection::vec((key, value), 0..5).prop_map(|pairs| {
            let q: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            bytes(format!("?{}", q.join("&")))
        }),
        1 => prop::sample::select(vec!["?", "??", "?&&=", "?=", "?limit", "?#frag", "?a=b#c"])
            .prop_map(bytes),
    ]
}

fn version() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        12 => Just("HTTP/1.1"),
        2 => Just("HTTP/1.0"),
        1 => prop::sample::select(vec![
            "HTTP/2.0", "HTTP/1.1 x", "", "http/1.1", "HTTP/1.2", "HTTP/9",
        ]),
    ]
}

fn authorization() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        8 => Just(Some(bytes(format!("Bearer {ADMIN}")))),
        2 => Just(Some(bytes(format!("Bearer {WRITER}")))),
        2 => Just(Some(bytes(format!("Bearer {READER}")))),
        2 => Just(None),
        1 => prop::sample::select(vec![
            "Bearer", "Bearer ", "bearer test-admin-key", "Basic dGVzdDp0ZXN0", "Bearer nope",
            "Bearer  test-admin-key  ",
        ])
        .prop_map(|s| Some(bytes(s))),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ]
}

fn extra_headers() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        4 => prop::sample::select(vec![
            "Content-Type", "Accept", "Connection", "Expect", "Transfer-Encoding", "Host",
            "Content-Encoding", "Upgrade", "X-Request-Id", "Authorization", "Content-Length",
        ])
        .prop_map(bytes),
        2 => "[A-Za-z0-9-]{1,20}".prop_map(bytes),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    let value = prop_oneof![
        4 => prop::sample::select(vec![
            "application/json", "text/plain", "application/json; charset=utf-8", "close",
            "keep-alive", "upgrade", "100-continue", "chunked", "gzip", "websocket", "", "*/*",
            "-1", "18446744073709551616",
        ])
        .prop_map(bytes),
        2 => "[ -~]{0,40}".prop_map(bytes),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec((name, value), 1..4),
    ]
}

/// A JSON value shaped like what the API takes, with the field names it knows and some it does not.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        prop::sample::select(vec![
            "fz",
            "m1",
            "all",
            "daily",
            "weekly",
            "monthly",
            "desc",
            "asc",
            "incr",
            "best",
            "set",
            "first",
            "dense",
            "2026-11-26T10:00:00Z",
            "yesterday",
            "",
            "a b",
            "class:7",
        ])
        .prop_map(Value::from),
        "[^\"]{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            8 => prop::sample::select(vec![
                "member", "value", "scopes", "event_id", "at", "board", "events", "members",
                "display_name", "data", "windows", "order", "policy", "tie_break", "rank_mode",
                "retention_periods", "max_members",
            ])
            .prop_map(str::to_owned),
            1 => "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        6 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        4 => prop::sample::select(vec![
            json!({"member": "m1", "value": 1}),
            json!({"member": "m2", "value": -2.5, "scopes": ["class:7"], "event_id": "e1"}),
            json!({"member": "m3", "value": 3, "at": "2026-11-26T10:00:00Z"}),
            json!({"events": [
                {"board": "fz", "member": "m1", "value": 1},
                {"board": "fz", "member": "m4", "value": 4}
            ]}),
            json!({"members": ["m1", "m2", "zz"]}),
            json!({"display_name": "Em One", "data": {"level": 3}}),
            json!({}),
            json!({"windows": ["all", "daily"]}),
        ])
        .prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => prop::collection::vec(any::<u8>(), 0..300),
        1 => prop::sample::select(vec![
            "{", "}", "[", "null", "{\"member\": \"m1\", \"value\": 1e999}",
            "{\"member\": \"m1\", \"value\": NaN}", "{\"member\": \"\\ud800\", \"value\": 1}",
            "{\"events\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
            "{\"member\": \"m1\", \"value\": 1, \"member\": \"m2\"}",
            "\u{feff}{\"member\": \"m1\", \"value\": 1}",
        ])
        .prop_map(bytes),
        1 => (1usize..600).prop_map(|n| {
            let mut s = "[".repeat(n);
            s.push_str(&"]".repeat(n));
            bytes(s)
        }),
    ]
}

/// How the body is delimited.
#[derive(Debug, Clone)]
enum Framing {
    Exact,
    Absent,
    Smaller(usize),
    Larger(usize),
    Declared(&'static str),
    Twice(usize),
    Chunked,
    ChunkedBroken(&'static str),
    ChunkedAndLength,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        20 => Just(Framing::Exact),
        2 => Just(Framing::Absent),
        1 => (1usize..20).prop_map(Framing::Smaller),
        1 => (1usize..20).prop_map(Framing::Larger),
        1 => prop::sample::select(vec![
            "18446744073709551615", "18446744073709551616", "99999999999", "1048577", "-1", "abc",
            "1,2", " 5", "0x10", "",
        ])
        .prop_map(Framing::Declared),
        1 => (0usize..20).prop_map(Framing::Twice),
        2 => Just(Framing::Chunked),
        1 => prop::sample::select(vec![
            "zz\r\n", "ffffffffffffffff\r\n", "5\r\nab\r\n0\r\n\r\n", "-1\r\n", "",
        ])
            .prop_map(Framing::ChunkedBroken),
        1 => Just(Framing::ChunkedAndLength),
    ]
}

prop_compose! {
    fn raw_request()(
        (method, path) in target(),
        query in query(),
        version in version(),
        host in prop::option::weighted(0.9, Just("t")),
        auth in authorization(),
        json_type in prop::option::weighted(0.7, Just("application/json")),
        extra in extra_headers(),
        body in body(),
        framing in framing(),
        bare_lf in prop::bool::weighted(0.05),
    ) -> RawRequest {
        let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
        let mut r = Vec::new();
        r.extend_from_slice(&method);
        r.push(b' ');
        r.extend_from_slice(&path);
        r.extend_from_slice(&query);
        if !version.is_empty() {
            r.push(b' ');
            r.extend_from_slice(version.as_bytes());
        }
        r.extend_from_slice(eol);
        let mut header = |name: &[u8], value: &[u8]| {
            r.extend_from_slice(name);
            r.extend_from_slice(b": ");
            r.extend_from_slice(value);
            r.extend_from_slice(eol);
        };
        if let Some(h) = host {
            header(b"Host", h.as_bytes());
        }
        if let Some(a) = &auth {
            header(b"Authorization", a);
        }
        if let Some(t) = json_type {
            header(b"Content-Type", t.as_bytes());
        }
        for (n, v) in &extra {
            header(n, v);
        }
        let chunked = |body: &[u8]| {
            let mut out = Vec::new();
            for c in body.chunks(64) {
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        };
        let payload = match &framing {
            Framing::Exact => {
                header(b"Content-Length", body.len().to_string().as_bytes());
                body
            }
            Framing::Absent => body,
            Framing::Smaller(n) => {
                header(b"Content-Length", body.len().saturating_sub(*n).to_string().as_bytes());
                body
            }
            Framing::Larger(n) => {
                header(b"Content-Length", (body.len() + n).to_string().as_bytes());
                body
            }
            Framing::Declared(v) => {
                header(b"Content-Length", v.as_bytes());
                body
            }
            Framing::Twice(n) => {
                header(b"Content-Length", body.len().to_string().as_bytes());
                header(b"Content-Length", n.to_string().as_bytes());
                body
            }
            Framing::Chunked => {
                header(b"Transfer-Encoding", b"chunked");
                chunked(&body)
            }
            Framing::ChunkedBroken(tail) => {
                header(b"Transfer-Encoding", b"chunked");
                let mut out = chunked(&body);
                out.truncate(out.len() - 5);
                out.extend_from_slice(tail.as_bytes());
                out
            }
            Framing::ChunkedAndLength => {
                header(b"Transfer-Encoding", b"chunked");
                header(b"Content-Length", body.len().to_string().as_bytes());
                chunked(&body)
            }
        };
        r.extend_from_slice(eol);
        r.extend_from_slice(&payload);
        RawRequest(r)
    }
}

/// Panics on the fuzz runtime's threads (where the server runs), counted by a panic hook.
static SERVER_PANICS: AtomicU64 = AtomicU64::new(0);
const RUNTIME_THREADS: &str = "rankd-fuzz-server";

fn count_server_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(RUNTIME_THREADS) {
            SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
}

#[test]
fn arbitrary_requests_never_panic_the_server_nor_get_a_5xx_and_it_keeps_serving() {
    count_server_panics();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(RUNTIME_THREADS)
            .enable_all()
            .build()
            .unwrap(),
    );
    // A short read timeout, so that requests whose body never fully arrives cost little.
    let app = rt.block_on(TestApp::spawn_with(|c| {
        c.read_timeout = Duration::from_millis(300);
        c.max_body_bytes = 64 * 1024;
    }));
    rt.block_on(async {
        app.put_board("fz", json!({"windows": ["all", "daily"]}))
            .await;
        app.submit("fz", "m1", 5.0).await;
    });
    let addr = app.addr;
    let cases: u32 = std::env::var("RANKD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let answered = AtomicU64::new(0);
    let by_status = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new());
    let result = runner.run(&raw_request(), |req| {
        let out = rt.block_on(raw(
            addr,
            &req.0,
            Duration::from_secs(3),
            Duration::from_millis(15),
        ));
        let statuses = responses(&out);
        answered.fetch_add(statuses.len() as u64, Ordering::Relaxed);
        for s in &statuses {
            *by_status.lock().unwrap().entry(*s).or_default() += 1;
        }
        prop_assert!(
            statuses.iter().all(|s| *s < 500),
            "a 5xx answer: {}",
            String::from_utf8_lossy(&out)
        );
        prop_assert_eq!(
            SERVER_PANICS.load(Ordering::SeqCst),
            0,
            "the server panicked"
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let answered = answered.into_inner();
    eprintln!("fuzz answers by status: {:?}", by_status.lock().unwrap());
    assert!(
        answered >= u64::from(cases) / 2,
        "only {answered} answers to {cases} requests: the fuzzer mostly missed the server"
    );
    rt.block_on(async {
        let r = app
            .req(reqwest::Method::GET, "/healthz", None)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the server keeps serving");
        let r = app
            .req(reqwest::Method::GET, "/readyz", None)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    assert_eq!(
        SERVER_PANICS.load(Ordering::SeqCst),
        0,
        "the server panicked"
    );
}
