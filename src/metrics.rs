//! Every metric name in one place, each described, and the Prometheus recorder.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// HTTP requests by route, method and status.
pub const HTTP_REQUESTS: &str = "rankd_http_requests_total";
/// HTTP request latency by route.
pub const HTTP_DURATION: &str = "rankd_http_request_duration_seconds";
/// Script call latency by script.
pub const SCRIPT_DURATION: &str = "rankd_script_duration_seconds";
/// Script calls that failed, by script and kind (reply, unavailable).
/// Events each single-write script call carried (concurrent score events of one board share one).
pub const WRITE_CALL_EVENTS: &str = "rankd_write_call_events";
/// Reads each coalesced single-member read call answered.
pub const READ_CALL_READS: &str = "rankd_read_call_reads";
pub const SCRIPT_ERRORS: &str = "rankd_script_errors_total";
/// Calls that could not reach the backend.
pub const BACKEND_ERRORS: &str = "rankd_backend_errors_total";
/// 1 when the backend answers, 0 when it does not (sampled).
pub const BACKEND_UP: &str = "rankd_backend_up";
/// Score events by outcome: accepted, duplicate, rejected.
pub const SCORE_EVENTS: &str = "rankd_score_events_total";
/// Cache hits by cache.
pub const CACHE_HITS: &str = "rankd_cache_hits_total";
/// Cache misses by cache.
pub const CACHE_MISSES: &str = "rankd_cache_misses_total";
/// Answers computed without looking in their cache, by cache.
pub const CACHE_BYPASSES: &str = "rankd_cache_bypasses_total";
/// Answer cache entries dropped for room, by cache.
pub const CACHE_EVICTIONS: &str = "rankd_cache_evictions_total";
/// Answer cache entries computed ahead of their readers, by cache.
pub const CACHE_WARMS: &str = "rankd_cache_warms_total";
/// Answer cache entries dropped, by cache and reason.
pub const CACHE_INVALIDATIONS: &str = "rankd_cache_invalidations_total";
/// Answer cache entries held, by cache.
pub const CACHE_ENTRIES: &str = "rankd_cache_entries";
/// Bytes answer cache entries are charged for, by cache.
pub const CACHE_BYTES: &str = "rankd_cache_bytes";
/// Each answer cache's TTL (0: off), by cache.
pub const CACHE_TTL: &str = "rankd_cache_ttl_seconds";
/// Members of each board's all-time global key (sampled, not computed per scrape; see
/// [`BoardSizes`]).
pub const BOARD_MEMBERS: &str = "rankd_board_members";
const BOARD_MEMBERS_HELP: &str =
    "Members of each board's all-time (or first window's current) global key, sampled.";

/// Seconds since the oldest operation not yet in the durable store was applied (sampled by the sweep).
pub const STORE_LAG: &str = "rankd_store_lag_seconds";
/// Group commits to the durable store, by outcome.
pub const STORE_COMMITS: &str = "rankd_store_commits_total";
/// 1 when a durable store is configured, 0 when scores live in Redis only.
pub const STORE_DURABLE: &str = "rankd_store_durable";
/// 1 while the durable store is the one Redis was paired with, 0 when it is another (it lost
/// history: see store::identity).
pub const STORE_PAIRED: &str = "rankd_store_paired";
/// Boards rebuilt from the durable store.
pub const STORE_REBUILDS: &str = "rankd_store_rebuilds_total";
/// Operations Redis numbered again after losing others, appended after the stored log.
pub const STORE_MERGED: &str = "rankd_store_merged_total";

/// Histogram buckets for latencies, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// How many requests one coalesced script call served.
const SHARE_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the recorder's histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide recorder (once) and describes every metric. Returns the handle that
/// renders the text format.
///
/// # Panics
/// When another metrics recorder was installed first.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .expect("latency buckets are not empty")
                .set_buckets_for_metric(Matcher::Suffix("_call_events".into()), &SHARE_BUCKETS)
                .expect("share buckets are not empty")
                .set_buckets_for_metric(Matcher::Suffix("_call_reads".into()), &SHARE_BUCKETS)
                .expect("share buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            // The recorder keeps every histogram sample until an upkeep folds it into its buckets:
            // without a scrape, or between two far apart, that is memory growing with every request
            // (about 30 bytes each). `install_recorder` leaves the upkeep to its caller.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("rankd-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread: histogram samples wait for a scrape");
            }
            describe();
            zero();
            handle
        })
        .clone()
}

/// Whether [`install`] has run: until then the macros hand out handles that record nothing.
pub fn installed() -> bool {
    HANDLE.get().is_some()
}

/// One series' handle, looked up once and kept.
///
/// `metrics::counter!(NAME, "label" => value)` looks the series up on every call: it builds the
/// key, hashes its labels and compares them in the registry, a visible share of a cheap request's
/// CPU. A series whose labels are fixed at the call site is looked up once here and recorded
/// through its handle after that. A handle is kept only once the recorder is installed (before,
/// the macros answer a handle that records nothing, which must not stick).
pub struct Resolved<T>(OnceLock<T>);

impl<T> Resolved<T> {
    /// Not looked up yet.
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// Calls `f` with the series' handle, looking it up through `make` the first time.
    pub fn with(&self, make: impl FnOnce() -> T, f: impl FnOnce(&T)) {
        if let Some(h) = self.0.get() {
            return f(h);
        }
        let h = make();
        if installed() {
            f(self.0.get_or_init(|| h));
        } else {
            f(&h);
        }
    }
}

impl<T> Default for Resolved<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Resolved<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Resolved"
        } else {
            "Resolved(not yet)"
        })
    }
}

/// Starts the unlabelled families, the cache counters and the score events of each outcome at
/// zero, so that alerts and rates see a series from the first scrape rather than from the first
/// error (or the first duplicate).
fn zero() {
    metrics::counter!(BACKEND_ERRORS).absolute(0);
    for outcome in ["accepted", "duplicate", "rejected"] {
        metrics::counter!(SCORE_EVENTS, "outcome" => outcome).absolute(0);
    }
    for cache in ["definitions", "scripts"] {
        metrics::counter!(CACHE_HITS, "cache" => cache).absolute(0);
        metrics::counter!(CACHE_MISSES, "cache" => cache).absolute(0);
    }
}

fn describe() {
    describe_gauge!(
        STORE_LAG,
        Unit::Seconds,
        "Age of the oldest operation not yet committed to the durable store."
    );
    describe_counter!(
        STORE_COMMITS,
        "Group commits to the durable store, by outcome."
    );
    describe_gauge!(
        STORE_DURABLE,
        "1 when a durable store is configured, 0 when scores live in Redis only."
    );
    describe_gauge!(
        STORE_PAIRED,
        "1 while the durable store is the one Redis was paired with; 0 when it is another, which lacks the history Redis was built from (nothing is stored in it or rebuilt from it)."
    );
    describe_counter!(STORE_REBUILDS, "Boards rebuilt from the durable store.");
    describe_counter!(
        STORE_MERGED,
        "Operations Redis numbered again after losing others the store held, appended after the stored log."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests served, by route, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route."
    );
    describe_histogram!(
        SCRIPT_DURATION,
        Unit::Seconds,
        "Lua script call latency, by script."
    );
    describe_histogram!(
        WRITE_CALL_EVENTS,
        "Single score events each write script call carried: concurrent writes to one board share a call."
    );
    describe_histogram!(
        READ_CALL_READS,
        "Single-member reads each read script call answered: concurrent reads of one key share a call."
    );
    describe_counter!(
        SCRIPT_ERRORS,
        "Lua script calls that failed, by script and kind: refused (the script's own refusal, such as a stale definition or a value out of range), reply (an error Redis answered), unavailable (never sent: Redis out of reach), unanswered (sent, and no answer in time)."
    );
    describe_counter!(
        BACKEND_ERRORS,
        "Calls that could not reach the backend (Redis or embedded)."
    );
    describe_gauge!(
        BACKEND_UP,
        "1 when the backend answered its last health check, else 0."
    );
    describe_counter!(
        SCORE_EVENTS,
        "Score events, by outcome: accepted, duplicate, rejected."
    );
    describe_counter!(CACHE_HITS, "Cache hits, by cache.");
    describe_counter!(CACHE_MISSES, "Cache misses, by cache.");
    describe_counter!(
        CACHE_BYPASSES,
        "Answers computed without looking in their cache (Cache-Control: no-cache, a page the cache does not keep, or the cache off), by cache."
    );
    describe_counter!(
        CACHE_EVICTIONS,
        "Answer cache entries dropped to stay within RANKD_CACHE_MAX_BYTES, by cache."
    );
    describe_counter!(
        CACHE_WARMS,
        "Answer cache entries computed ahead of their readers, by cache."
    );
    describe_counter!(
        CACHE_INVALIDATIONS,
        "Answer cache entries dropped, by cache and reason (write, ttl, clear, definition, rebuild, capacity)."
    );
    describe_gauge!(CACHE_ENTRIES, "Answer cache entries held, by cache.");
    describe_gauge!(
        CACHE_BYTES,
        "Bytes the answer cache entries are charged for, by cache."
    );
    describe_gauge!(CACHE_TTL, "Each answer cache's TTL in seconds (0: off).");
}

/// The latest sample of every board's size, rendered after the recorder's families on /metrics.
///
/// Not a gauge of the recorder: the recorder keeps every series it has seen until the process
/// exits, so a deleted board would be reported at its last size forever, and boards created and
/// deleted over time would grow /metrics without bound. A sample names only the boards that
/// existed when it was taken.
#[derive(Debug, Default)]
pub struct BoardSizes(Mutex<Vec<(String, u64)>>);

impl BoardSizes {
    /// Replaces the sample.
    pub fn set(&self, sizes: Vec<(String, u64)>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = sizes;
    }

    /// Appends the family, in the Prometheus text format, when the sample holds a board.
    pub fn render(&self, out: &mut String) {
        let sizes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if sizes.is_empty() {
            return;
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(out, "# HELP {BOARD_MEMBERS} {BOARD_MEMBERS_HELP}");
        let _ = writeln!(out, "# TYPE {BOARD_MEMBERS} gauge");
        // Board ids are [A-Za-z0-9_.-]: nothing in them needs escaping in a label value.
        for (board, n) in sizes.iter() {
            let _ = writeln!(out, "{BOARD_MEMBERS}{{board=\"{board}\"}} {n}");
        }
    }
}
