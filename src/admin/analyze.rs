//! `analyze`: sizes, lag, script latencies, cache hit rates, query plans, and the recommendations
//! drawn from them. With Redis, Redis and each board in it; with a store, the store (tables,
//! plans, and how much a start of rankd replays per board).

use super::server::hit_rate;
use super::{Admin, Failure, ServerStats};
use crate::board::{BoardId, Member};
use crate::engine::{Limit, Offset, View};

/// Calls per board and script that `analyze` times.
pub const LATENCY_SAMPLES: usize = 20;
/// Boards (the biggest) that `analyze` times scripts on.
pub const LATENCY_BOARDS: usize = 5;
/// Lookups a hit rate needs before it is judged: a server or Redis that has served almost nothing
/// yet (idle, or just started, each board's first lookup a miss) is no sign of anything.
pub const JUDGED_LOOKUPS: u64 = 1000;
/// Below this hit rate (percent) an answer cache that is on gets advice.
pub const ANSWER_HIT_RATE: f64 = 85.0;
/// Slowlog entries slower than this (µs) are advice.
const SLOW_US: u64 = 100_000;
/// Operations a start of rankd replays for one board past which a new rebuild base is advised.
const REPLAY_ADVICE: u64 = 100_000;

/// One script's latency as `analyze` measured it.
#[derive(Debug, Clone)]
struct Latency {
    script: &'static str,
    calls: usize,
    boards: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(script: &'static str, mut ms: Vec<f64>, boards: usize) -> Option<Self> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            script,
            calls: ms.len(),
            boards,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: ms[ms.len() - 1],
        })
    }

    fn line(&self) -> String {
        format!(
            "script latency, {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} calls on {} board(s), measured from here",
            self.script, self.p50_ms, self.p99_ms, self.max_ms, self.calls, self.boards
        )
    }
}

/// What the recommendations are drawn from.
#[derive(Default)]
struct Figures {
    lag_ops: usize,
    lag_ms: i64,
    slow: bool,
    biggest: (String, u64),
    latencies: Vec<Latency>,
    keyspace: Option<(u64, u64)>,
    leftovers: usize,
    replays: Vec<(BoardId, u64)>,
    seq_scan: bool,
}

impl Admin {
    /// Reports on Redis and the store, whichever are configured. `slowlog`: the Redis slowlog to
    /// judge, when read before the caller's own work (`optimize`); else it is read now.
    ///
    /// # Errors
    /// When Redis or the store cannot be reached.
    pub async fn analyze(
        &self,
        server: Option<&ServerStats>,
        slowlog: Option<Vec<String>>,
    ) -> Result<(), Failure> {
        let mut f = Figures::default();
        let stored: Option<Vec<(BoardId, u64)>> = match &self.store {
            Some(s) => Some(s.boards().await?),
            None => None,
        };
        if let Some(redis) = &self.redis {
            let engine = &redis.engine;
            let stats = engine.backend_stats().await?;
            self.report.line(format!(
                "backend {}: used_memory {} bytes, {} keys",
                stats.kind,
                stats.used_memory_bytes.unwrap_or(0),
                stats.keys.unwrap_or(0)
            ));
            let (hits, misses) = (
                stats.keyspace_hits.unwrap_or(0),
                stats.keyspace_misses.unwrap_or(0),
            );
            if let Some(rate) = hit_rate(hits, misses) {
                self.report.line(format!(
                    "cache hit rate, Redis keyspace (lookups that found their key, since Redis started): {rate:.1}%"
                ));
                f.keyspace = Some((hits, misses));
            }
            let slow = match slowlog {
                Some(s) => s,
                None => engine.slowlog().await?,
            };
            self.report
                .line(format!("slowlog: {} recent entries", slow.len()));
            for l in &slow {
                self.report.line(format!("  {l}"));
            }
            f.slow = slow.iter().any(|l| {
                l.split(' ')
                    .next()
                    .and_then(|us| us.parse::<u64>().ok())
                    .is_some_and(|us| us > SLOW_US)
            });
            let boards: Vec<(BoardId, Option<u64>)> = match &stored {
                Some(s) => s.iter().map(|(b, seq)| (b.clone(), Some(*seq))).collect(),
                None => engine
                    .boards()
                    .await?
                    .into_iter()
                    .map(|b| (b.board, None))
                    .collect(),
            };
            for (b, seq) in &boards {
                self.board_in_redis(b, *seq, &mut f).await?;
            }
            self.report.line(format!(
                "persister lag: {} operations await the store, the oldest for {:.1} s (the rankd_store_lag_seconds of this moment)",
                f.lag_ops,
                f.lag_ms as f64 / 1000.0
            ));
            f.latencies = self.script_latencies(&boards).await?;
            for l in &f.latencies {
                self.report.line(l.line());
            }
            let leftovers = self.verify_leftovers().await?;
            f.leftovers = leftovers.len();
            self.report.line(match leftovers.len() {
                0 => "scratch keys of interrupted verify runs: none".to_owned(),
                n => format!(
                    "scratch keys of interrupted verify runs: {n} keys under {}verify<pid>:",
                    self.config.key_prefix
                ),
            });
        } else if let Some(boards) = &stored {
            for (b, seq) in boards {
                let base = self.base_line(b, *seq, &mut f).await?;
                self.report
                    .line(format!("board {b}: store seq {seq}, {base}"));
            }
        }
        if let Some(store) = &self.store {
            for l in store.describe().await? {
                f.seq_scan |= l.contains("Seq Scan on rankd_snapshot_entries");
                self.report.line(l);
            }
        }
        if let Some(s) = server {
            for l in s.lines() {
                self.report.line(l);
            }
        }
        for r in recommendations(&f, server) {
            self.report.line(format!("recommend: {r}"));
        }
        Ok(())
    }

    /// One board's line with Redis.
    async fn board_in_redis(
        &self,
        b: &BoardId,
        seq: Option<u64>,
        f: &mut Figures,
    ) -> Result<(), Failure> {
        let engine = &self.redis()?.engine;
        let members = engine
            .page(b, &View::all_time(), Offset::new(0)?, Limit::new(1)?)
            .await
            .map(|p| p.total)
            .unwrap_or(0);
        let waiting = engine.log_pending(b, 10_000).await?;
        let pending = waiting.len();
        f.lag_ops += pending;
        if let Some(oldest) = waiting.iter().map(|o| o.recv_ms).min() {
            f.lag_ms = f.lag_ms.max(engine.now_ms() - oldest);
        }
        let memory = match engine.board_memory(b).await? {
            Some(bytes) => format!("{bytes} bytes in Redis (MEMORY USAGE, sampled)"),
            None => "memory unknown".to_owned(),
        };
        let stored = match seq {
            Some(seq) => format!(
                "store seq {seq}, {pending} operations awaiting the store, {}",
                self.base_line(b, seq, f).await?
            ),
            None => "not stored (no durable store is configured)".to_owned(),
        };
        self.report.line(format!(
            "board {b}: {members} members (all-time, global), {memory}, {stored}"
        ));
        if members > f.biggest.1 {
            f.biggest = (b.to_string(), members);
        }
        Ok(())
    }

    /// Where a rebuild of a board starts, and how much it replays.
    async fn base_line(&self, b: &BoardId, seq: u64, f: &mut Figures) -> Result<String, Failure> {
        let base = self.store()?.base_seq(b).await?;
        let replays = seq - base.unwrap_or(0).min(seq);
        f.replays.push((b.clone(), replays));
        Ok(match base {
            Some(base) => {
                format!("rebuild base at seq {base} (a rebuild replays {replays} operations)")
            }
            None => format!("no rebuild base (a rebuild replays all {replays} operations)"),
        })
    }

    /// Times the read scripts on the biggest boards from this process (round trip included): a
    /// member's standing (read_members) and the top 20 (read_page), [`LATENCY_SAMPLES`] calls each
    /// per board, on at most [`LATENCY_BOARDS`] boards.
    async fn script_latencies(
        &self,
        boards: &[(BoardId, Option<u64>)],
    ) -> Result<Vec<Latency>, Failure> {
        let engine = &self.redis()?.engine;
        let mut sampled = Vec::new();
        for (b, _) in boards {
            if let Ok(p) = engine
                .page(b, &View::all_time(), Offset::new(0)?, Limit::new(1)?)
                .await
            {
                if let Some(first) = p.entries.first() {
                    sampled.push((p.total, b, first.member.clone()));
                }
            }
        }
        sampled.sort_by_key(|b| std::cmp::Reverse(b.0));
        sampled.truncate(LATENCY_BOARDS);
        let mut standing = Vec::new();
        let mut top = Vec::new();
        for (_, b, member) in &sampled {
            let member = Member::parse(member)?;
            for _ in 0..LATENCY_SAMPLES {
                let t = std::time::Instant::now();
                engine.standing(b, &View::all_time(), &member).await?;
                standing.push(t.elapsed().as_secs_f64() * 1e3);
                let t = std::time::Instant::now();
                engine.top(b, &View::all_time(), Limit::new(20)?).await?;
                top.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok([
            ("read_members (a member's standing)", standing),
            ("read_page (top 20)", top),
        ]
        .into_iter()
        .filter_map(|(script, ms)| Latency::of(script, ms, sampled.len()))
        .collect())
    }
}

/// The recommendations `f` calls for; one saying so when there is none.
fn recommendations(f: &Figures, server: Option<&ServerStats>) -> Vec<String> {
    let mut out = Vec::new();
    if f.lag_ops > 1000 || f.lag_ms > 10_000 {
        out.push(format!("{} operations await the store, the oldest for {:.1} s; check the store's health and the persister's commits (rankd_store_commits_total)", f.lag_ops, f.lag_ms as f64 / 1000.0));
    }
    if f.slow {
        out.push("commands over 100 ms in the slowlog; large deletes or snapshots of huge keys block Redis — bound boards with max_members, or snapshot less often".into());
    }
    if f.biggest.1 > 1_000_000 {
        out.push(format!(
            "board {} holds {} members; consider max_members to bound memory",
            f.biggest.0, f.biggest.1
        ));
    }
    if f.seq_scan {
        out.push("snapshot queries scan sequentially; run `rankd admin migrate` to create the indexes, then ANALYZE".into());
    }
    for l in f.latencies.iter().filter(|l| l.p50_ms > 2.0) {
        out.push(format!("{} takes {:.2} ms at the median from here; check Redis CPU and the slowlog, the network between rankd and Redis, and bound big boards with max_members", l.script, l.p50_ms));
    }
    if let Some((hits, misses)) = f.keyspace {
        if hits + misses >= JUDGED_LOOKUPS && hit_rate(hits, misses).is_some_and(|r| r < 50.0) {
            out.push("under half of Redis lookups find their key; reads of members that are not on their board dominate, or boards are being rebuilt".into());
        }
    }
    if let Some(s) = server {
        let (hits, misses) = s.definitions;
        if hits + misses >= JUDGED_LOOKUPS {
            if let Some(r) = hit_rate(hits, misses).filter(|r| *r < 90.0) {
                out.push(format!("the server's definition cache hits {r:.1}% of {} lookups; boards are redefined often, or instances restart often", hits + misses));
            }
        }
    }
    if let Some(s) = server {
        out.extend(answer_cache_advice(s));
    }
    if f.leftovers > 0 {
        out.push(format!(
            "{} scratch keys of interrupted verify runs take Redis memory; `rankd admin clear-caches` removes them",
            f.leftovers
        ));
    }
    for (b, n) in f.replays.iter().filter(|(_, n)| *n > REPLAY_ADVICE) {
        out.push(format!("a rebuild of board {b} replays {n} operations; `rankd admin snapshot --board {b}` makes a new rebuild base"));
    }
    if out.is_empty() {
        out.push("nothing; sizes, lag and plans look healthy".into());
    }
    out
}

/// Advice for each answer cache that is on and hits under [`ANSWER_HIT_RATE`] percent of at least
/// [`JUDGED_LOOKUPS`] lookups, led by what drops its entries most.
fn answer_cache_advice(s: &ServerStats) -> Vec<String> {
    let mut out = Vec::new();
    for (name, c) in &s.answers {
        let lookups = c.hits + c.misses;
        if c.ttl_secs == 0 || lookups < JUDGED_LOOKUPS {
            continue;
        }
        let Some(rate) = hit_rate(c.hits, c.misses).filter(|r| *r < ANSWER_HIT_RATE) else {
            continue;
        };
        let ttl = format!("RANKD_CACHE_TTL_{}_SECS", name.to_ascii_uppercase());
        let (by_ttl, by_write, by_capacity) =
            (c.dropped("ttl"), c.dropped("write"), c.dropped("capacity"));
        let mut steps = vec![
            format!(
                "raise its TTL ({ttl}, now {} s) if its entries run out before they are read again ({by_ttl} went by TTL)",
                c.ttl_secs
            ),
            if name == "leaderboard" {
                format!(
                    "warm the popular pages (`rankd admin warm-caches --server {} --board B`, per board, window and scopes dashboards read)",
                    s.url
                )
            } else {
                "warm the popular answers by reading them ahead of their readers".to_owned()
            },
            format!(
                "check write patterns: {by_write} entries were dropped by writes (a score that ranks within a cached page drops it; many writes to the top ranks keep it cold)"
            ),
        ];
        if by_capacity > 0 {
            steps.insert(
                0,
                format!("raise RANKD_CACHE_MAX_BYTES: {by_capacity} entries were dropped for room"),
            );
        } else if by_write > by_ttl {
            steps.rotate_left(2);
        }
        out.push(format!(
            "the server's {name} cache hits {rate:.1}% of {lookups} lookups (under {ANSWER_HIT_RATE}%): {}",
            steps.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::server::AnswerCache;

    fn server(hits: u64, misses: u64) -> ServerStats {
        ServerStats {
            url: "http://x".into(),
            definitions: (hits, misses),
            scripts: (0, 0),
            answers: Vec::new(),
        }
    }

    fn answers(
        name: &str,
        hits: u64,
        misses: u64,
        ttl_secs: u64,
        dropped: &[(&str, u64)],
    ) -> ServerStats {
        ServerStats {
            answers: vec![(
                name.to_owned(),
                AnswerCache {
                    hits,
                    misses,
                    ttl_secs,
                    invalidations: dropped.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
                    ..AnswerCache::default()
                },
            )],
            ..server(0, 0)
        }
    }

    #[test]
    fn an_answer_cache_under_85_percent_gets_advice_once_on_and_looked_up_enough() {
        let advice = |s: &ServerStats| answer_cache_advice(s);
        assert!(
            advice(&answers("leaderboard", 0, 0, 300, &[])).is_empty(),
            "idle"
        );
        assert!(
            advice(&answers("leaderboard", 100, 800, 300, &[])).is_empty(),
            "too few lookups"
        );
        assert!(
            advice(&answers("leaderboard", 10, 5000, 0, &[])).is_empty(),
            "off"
        );
        assert!(
            advice(&answers("leaderboard", 900, 100, 300, &[])).is_empty(),
            "90% hits"
        );
        assert!(
            advice(&answers("leaderboard", 850, 150, 300, &[])).is_empty(),
            "85% is enough"
        );
        let a = advice(&answers(
            "leaderboard",
            849,
            151,
            300,
            &[("ttl", 140), ("write", 3)],
        ));
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(
            a[0].starts_with("the server's leaderboard cache hits 84.9% of 1000 lookups (under 85%): raise its TTL (RANKD_CACHE_TTL_LEADERBOARD_SECS, now 300 s)"),
            "{a:?}"
        );
        assert!(
            a[0].contains("rankd admin warm-caches --server http://x --board B"),
            "{a:?}"
        );
        assert!(
            a[0].contains("check write patterns: 3 entries were dropped by writes"),
            "{a:?}"
        );
        // Writes drop most: their advice leads.
        let a = advice(&answers(
            "scope_stats",
            100,
            900,
            1800,
            &[("ttl", 1), ("write", 800)],
        ));
        assert!(
            a[0].contains("(under 85%): check write patterns: 800 entries"),
            "{a:?}"
        );
        assert!(a[0].contains("RANKD_CACHE_TTL_SCOPE_STATS_SECS"), "{a:?}");
        // Too small a budget leads when it dropped any.
        let a = advice(&answers("analytics", 100, 900, 600, &[("capacity", 50)]));
        assert!(
            a[0].contains("(under 85%): raise RANKD_CACHE_MAX_BYTES: 50 entries"),
            "{a:?}"
        );
        assert!(recommendations(
            &Figures::default(),
            Some(&answers("leaderboard", 0, 2000, 300, &[]))
        )
        .iter()
        .any(|r| r.contains("leaderboard cache hits 0.0%")),);
    }

    #[test]
    fn a_definition_cache_is_judged_only_once_it_has_seen_enough_lookups() {
        let advised = |s: &ServerStats| {
            recommendations(&Figures::default(), Some(s))
                .iter()
                .any(|r| r.contains("redefined often"))
        };
        assert!(!advised(&server(0, 0)), "idle");
        assert!(!advised(&server(0, 3)), "each board's first lookup");
        assert!(!advised(&server(10, 900)), "too few lookups to judge");
        assert!(advised(&server(100, 5000)), "a cache that keeps missing");
        assert!(!advised(&server(5000, 100)), "a cache that hits");
        assert_eq!(
            recommendations(&Figures::default(), None),
            ["nothing; sizes, lag and plans look healthy"]
        );
    }
}
