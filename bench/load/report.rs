//! The report: rows of figures, the floors judged on them, and the markdown, JSON and README
//! section they are written to.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use crate::caching::CacheHits;
use crate::coalescing::Spread;
use crate::measuring::{CmdFigure, Cpu};
use crate::options::Plan;

pub(crate) fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub(crate) fn size_label(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n.is_multiple_of(1000) => format!("{}K", n / 1000),
        n => n.to_string(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    pub(crate) rate: f64,
    pub(crate) unit: &'static str,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) first_error: Option<String>,
    /// µs of CPU per operation.
    pub(crate) cpu_us: Cpu,
    /// Redis's own accounting (INFO commandstats), per event.
    pub(crate) cmds: CmdFigure,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Cell {
    Load(Figure),
    Value { value: f64, unit: &'static str },
    Missing { why: String },
}

impl Cell {
    pub(crate) fn main(&self) -> String {
        match self {
            Cell::Load(f) => {
                let mut s = format!("{} {}", thousands(f.rate), f.unit);
                if f.errors > 0 {
                    let _ = write!(s, " ({} errors)", f.errors);
                }
                s
            }
            Cell::Value { value, unit } => format!("{value:.1} {unit}"),
            Cell::Missing { why } => why.clone(),
        }
    }

    fn latency(&self) -> String {
        match self {
            Cell::Load(f) => format!("{:.2} / {:.2} / {:.1}", f.p50_ms, f.p99_ms, f.max_ms),
            _ => "".into(),
        }
    }

    pub(crate) fn cpu(&self) -> String {
        match self {
            Cell::Load(f) => format!(
                "{:.1}/{:.1}/{:.1}",
                f.cpu_us.redis, f.cpu_us.server, f.cpu_us.client
            ),
            _ => String::new(),
        }
    }

    pub(crate) fn load(&self) -> Option<&Figure> {
        match self {
            Cell::Load(f) => Some(f),
            _ => None,
        }
    }

    pub(crate) fn number(&self) -> Option<f64> {
        match self {
            Cell::Load(f) => Some(f.rate),
            Cell::Value { value, .. } => Some(*value),
            Cell::Missing { .. } => None,
        }
    }

    pub(crate) fn errors(&self) -> Option<(u64, String)> {
        match self {
            Cell::Load(f) if f.errors > 0 || f.ops == 0 => Some((
                f.errors,
                f.first_error
                    .clone()
                    .unwrap_or_else(|| "no operation completed".into()),
            )),
            _ => None,
        }
    }
}

/// One floor of a row: what it asks, whether the run met it (None: not judged), and the figure
/// it was judged on or why it was not.
#[derive(Debug, Clone, Serialize)]
struct Floor {
    text: String,
    met: Option<bool>,
    note: Option<String>,
}

impl Floor {
    fn render(&self) -> String {
        let mark = match self.met {
            Some(true) => "met",
            Some(false) => "**NOT met**",
            None => "not judged",
        };
        match &self.note {
            Some(n) => format!("{}: {mark} ({n})", self.text),
            None => format!("{}: {mark}", self.text),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) workload: String,
    pub(crate) members: u64,
    conns: Option<usize>,
    pub(crate) rankd: Cell,
    pub(crate) twin_is: String,
    pub(crate) twin: Cell,
    /// rankd ÷ twin.
    pub(crate) ratio: Option<f64>,
    floors: Vec<Floor>,
    /// Figures beside the floors, printed with them (events per write call).
    notes: Vec<String>,
    /// The spread row's per-board p99s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) spread: Option<Spread>,
    /// The page cache's figures over a cache row's rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cache: Option<CacheHits>,
}

impl Row {
    pub(crate) fn new(
        id: &str,
        workload: &str,
        members: u64,
        conns: Option<usize>,
        rankd: Cell,
        twin_is: &str,
        twin: Cell,
    ) -> Self {
        let ratio = match (rankd.number(), twin.number()) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        Self {
            id: id.to_owned(),
            workload: workload.to_owned(),
            members,
            conns,
            rankd,
            twin_is: twin_is.to_owned(),
            twin,
            ratio,
            floors: Vec::new(),
            notes: Vec::new(),
            spread: None,
            cache: None,
        }
    }
}

pub(crate) struct Meta {
    pub(crate) date: String,
    pub(crate) commit: String,
    pub(crate) machine: String,
    pub(crate) redis: String,
    pub(crate) profile: &'static str,
    pub(crate) plan: String,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) command: String,
    pub(crate) wall: Duration,
}

fn sh(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores (shared), {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// HEAD, marked when the tree differs from it. The files a run writes (the results, the README's
/// results) do not count: they change nothing that is measured.
pub(crate) fn commit() -> String {
    let head = sh("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = sh(
        "git",
        &[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)bench/RESULTS*.md",
            ":(exclude)bench/README.md",
            ":(exclude)bench/HISTORY.md",
        ],
    )
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head} (+ uncommitted changes)")
    } else {
        head
    }
}

/// The results without a title: what RESULTS.md and the README section hold.
pub(crate) fn render(
    meta: &Meta,
    rows: &[Row],
    micro: Option<&str>,
    emb_memory: Option<&str>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "- date: {}", meta.date);
    let _ = writeln!(s, "- commit: {}", meta.commit);
    let _ = writeln!(s, "- machine: {}", meta.machine);
    let _ = writeln!(s, "- Redis: {}", meta.redis);
    let _ = writeln!(s, "- build: {}", meta.profile);
    let _ = writeln!(s, "- run: {}", meta.plan);
    let _ = writeln!(
        s,
        "- load average (1/5/15 min) before: {}, after: {}; wall time {:.0} s",
        meta.load_before,
        meta.load_after,
        meta.wall.as_secs_f64()
    );
    let _ = writeln!(s, "- command: `{}`\n", meta.command);
    s.push_str(&table(rows));
    s.push('\n');
    s.push_str(&cpu_table(rows));
    s.push('\n');
    s.push_str(&redis_table(rows));
    if let Some(m) = micro {
        let _ = writeln!(s, "\n## Micro-benchmarks (criterion, in-process)\n");
        s.push_str(m.trim());
        s.push('\n');
    }
    if let Some(m) = emb_memory {
        let _ = writeln!(
            s,
            "\n## Embedded memory (bench/embedded_memory.rs, same run, same Redis)\n\n```text\n{}\n```",
            m.trim()
        );
    }
    s
}

/// The headline of bench/embedded_memory.rs' output: bytes per member held by the embedded executor
/// filled through a script, and Redis' used_memory growth for the same members (the line of the
/// short `member:<n>` ids).
pub(crate) fn embedded_memory_row(out: &str) -> Option<Row> {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("member:<n>"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|t| t.parse::<f64>().ok())
        .collect();
    let [_, _, _, held, redis, ..] = nums[..] else {
        return None;
    };
    let members = out
        .lines()
        .next()
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|t| t.parse::<u64>().ok().filter(|n| *n >= 1000))
        })
        .unwrap_or(1_000_000);
    Some(Row::new(
        "memory-embedded",
        "memory per member, embedded executor (filled through a script; bench/embedded_memory.rs)",
        members,
        None,
        Cell::Value {
            value: held,
            unit: "B",
        },
        "Redis used_memory growth for the same members",
        Cell::Value {
            value: redis,
            unit: "B",
        },
    ))
}

pub(crate) fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| workload | members | conns | rankd | rankd p50 / p99 / max (ms) | raw twin | twin | twin p50 / p99 / max (ms) | rankd ÷ twin | floor |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|---|--:|--:|--:|---|");
    for r in rows {
        let ratio = r
            .ratio
            .map_or_else(|| "–".into(), |x| format!("{:.0}%", x * 100.0));
        let floor = r
            .floors
            .iter()
            .map(Floor::render)
            .chain(r.notes.iter().cloned())
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            size_label(r.members),
            r.conns.map_or_else(|| "–".into(), |c| c.to_string()),
            r.rankd.main(),
            r.rankd.latency(),
            r.twin_is,
            r.twin.main(),
            r.twin.latency(),
            ratio,
            floor
        );
    }
    s
}

/// µs with one decimal, or a dash for a figure not measured.
fn us(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "–".into()
    }
}

/// Where the CPU went: µs per operation of Redis' main thread, of the server's threads and of the
/// client.
fn cpu_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "CPU per operation, in µs (Redis: its main thread; server: rankd's threads and the \
         embedded store's, or the thin server's for its twin; client: the load tool's client \
         threads, which also run the engine in the in-process rows, – for wrk and redis-benchmark, \
         other processes). Measured from the CPU clocks over the same rounds, so they hold on a busy \
         machine where throughput does not.\n\n\
         | workload | members | rankd: Redis | rankd: server | rankd: client | twin: Redis | twin: server | twin: client |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in rows {
        let side = |c: &Cell| {
            c.load().map_or_else(
                || "– | – | –".to_owned(),
                |f| {
                    format!(
                        "{} | {} | {}",
                        us(f.cpu_us.redis),
                        us(f.cpu_us.server),
                        us(f.cpu_us.client)
                    )
                },
            )
        };
        if r.rankd.load().is_none() && r.twin.load().is_none() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r.workload,
            size_label(r.members),
            side(&r.rankd),
            side(&r.twin)
        );
    }
    s
}

/// Redis's own accounting per event, from INFO commandstats.
fn redis_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "Redis per event, from `INFO commandstats` over the same rounds: µs of Redis CPU (the \
         scripts' time when scripts ran, which holds the commands they call, else the commands'), \
         commands per event (inside scripts: the `redis.call`s) and script calls per event. Redis \
         times each command by the clock, so on a busy host a long call also counts the time its \
         thread waited for a core; the last column, from the CPU table's Redis main thread, is the \
         check.\n\n\
         | workload | members | rankd: Redis µs/event | rankd: commands/event | rankd: scripts/event | twin: Redis µs/event | twin: commands/event | twin: scripts/event | rankd ÷ twin, Redis µs | rankd ÷ twin, Redis main thread CPU |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in rows {
        let side = |c: &Cell| {
            c.load().map_or_else(
                || "– | – | –".to_owned(),
                |f| {
                    format!(
                        "{:.2} | {:.2} | {:.3}",
                        f.cmds.us_per_event, f.cmds.calls_per_event, f.cmds.scripts_per_event
                    )
                },
            )
        };
        if r.rankd.load().is_none() && r.twin.load().is_none() {
            continue;
        }
        let ratio = redis_ratio(r).map_or_else(|| "–".into(), |x| format!("{x:.2}×"));
        let cpu = cpu_ratio(r).map_or_else(|| "–".into(), |x| format!("{x:.2}×"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {ratio} | {cpu} |",
            r.workload,
            size_label(r.members),
            side(&r.rankd),
            side(&r.twin)
        );
    }
    s
}

/// rankd's Redis main-thread CPU per operation ÷ its twin's (INFO cpu).
fn cpu_ratio(r: &Row) -> Option<f64> {
    let (a, b) = (r.rankd.load()?, r.twin.load()?);
    (b.cpu_us.redis > 0.0).then(|| a.cpu_us.redis / b.cpu_us.redis)
}

/// rankd's Redis CPU per event ÷ its twin's (commandstats).
fn redis_ratio(r: &Row) -> Option<f64> {
    let (a, b) = (r.rankd.load()?, r.twin.load()?);
    (b.cmds.us_per_event > 0.0).then(|| a.cmds.us_per_event / b.cmds.us_per_event)
}

pub(crate) fn put_in_readme(readme: &std::path::Path, body: &str) -> Result<()> {
    const BEGIN: &str = "<!-- results:begin -->";
    const END: &str = "<!-- results:end -->";
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let (Some(a), Some(b)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} … {END} section", readme.display());
    };
    if b < a {
        bail!("{}: {END} comes before {BEGIN}", readme.display());
    }
    // The results sit under a heading of the README: their own sections go one level down.
    let body = body.trim().replace("\n## ", "\n### ");
    let out = format!("{}{BEGIN}\n{}\n{}", &text[..a], body, &text[b..]);
    std::fs::write(readme, out)?;
    Ok(())
}

/// The floors, judged on the headline size of a full run (1M members and more): issue 3's on the
/// rows of the twins it named, the ones against the least work and the write-coalescing issue's
/// (bench/README.md, "floor"); the spread row's at its own size, in any full run.
pub(crate) fn judge(rows: &mut [Row], plan: &Plan) {
    let headline = plan.headline();
    let judged = !plan.quick && headline >= 1_000_000;
    // rankd's own CPU per /healthz, for the CPU floor of member reads.
    let healthz = rows
        .iter()
        .find(|r| r.id == "healthz" && r.members == headline)
        .and_then(|r| r.rankd.load())
        .map(|f| f.cpu_us.server);
    for r in rows.iter_mut() {
        // Single submits over HTTP: how many events one script call carried, on average.
        if r.id.starts_with("submit") {
            if let Some(f) = r.rankd.load().filter(|f| f.cmds.scripts_per_event > 0.0) {
                r.notes.push(format!(
                    "events per write call {:.1}",
                    1.0 / f.cmds.scripts_per_event
                ));
            }
        }
        let spread = r.id == "submit-spread";
        if r.members != headline && !spread {
            continue;
        }
        let share = |min: f64, of: &str| {
            let x = r.ratio;
            (
                format!("≥ {:.0}% of {of}", min * 100.0),
                x.map(|x| x >= min),
                x.map(|x| format!("{:.0}%", x * 100.0)),
            )
        };
        let redis = |max: f64| {
            let x = redis_ratio(r);
            let main = cpu_ratio(r).map_or_else(String::new, |y| format!("; main thread {y:.2}×"));
            (
                format!("Redis CPU/event ≤ {max}× the twin's"),
                x.map(|x| x <= max),
                x.map(|x| format!("{x:.2}×{main}")),
            )
        };
        let p = |c: &Cell, f: fn(&Figure) -> f64| c.load().map(f);
        let floors = match r.id.as_str() {
            "submit" => {
                let p99 = p(&r.rankd, |f| f.p99_ms);
                let coalescing = |(t, m, n): (String, Option<bool>, Option<String>)| {
                    (format!("write coalescing: {t}"), m, n)
                };
                vec![
                    share(0.5, "the twin"),
                    redis(1.6),
                    coalescing(share(1.5, "the twin")),
                    coalescing(redis(0.5)),
                    coalescing((
                        "p99 ≤ 10 ms".into(),
                        p99.map(|x| x <= 10.0),
                        p99.map(|x| format!("{x:.2} ms")),
                    )),
                ]
            }
            "submit-solo" => {
                let (on50, off50) = (p(&r.rankd, |f| f.p50_ms), p(&r.twin, |f| f.p50_ms));
                let (on99, off99) = (p(&r.rankd, |f| f.p99_ms), p(&r.twin, |f| f.p99_ms));
                let note = match (on50, off50, on99, off99) {
                    (Some(a), Some(b), Some(c), Some(d)) if b > 0.0 && d > 0.0 => Some(format!(
                        "p50 {a:.3} / {b:.3} ms = {:.3}×; p99 {c:.2} / {d:.2} ms = {:.2}×",
                        a / b,
                        c / d
                    )),
                    _ => None,
                };
                vec![(
                    "p50 ≤ 1.05× sharing off's".into(),
                    on50.zip(off50).map(|(a, b)| a <= 1.05 * b),
                    note,
                )]
            }
            "submit-spread" => {
                let alone = p(&r.twin, |f| f.p99_ms);
                let x = r.spread.as_ref().zip(alone).filter(|(_, a)| *a > 0.0);
                vec![(
                    "worst board's p99 ≤ 3× the lone board's p99".into(),
                    x.map(|(s, a)| s.worst_p99_ms <= 3.0 * a),
                    x.map(|(s, a)| {
                        format!(
                            "{:.2} ms ({}) ÷ {a:.2} ms = {:.2}×; median board {:.2} ms (worst ÷ median {:.2}×), best {:.2} ms; fewest ops of a board {}",
                            s.worst_p99_ms,
                            s.worst_board,
                            s.worst_p99_ms / a,
                            s.median_p99_ms,
                            s.worst_p99_ms / s.median_p99_ms.max(1e-9),
                            s.best_p99_ms,
                            thousands(s.fewest_ops as f64)
                        )
                    }),
                )]
            }
            "cache-mix" => {
                let c = r.cache;
                vec![
                    share(3.0, "the mix with the cache off"),
                    (
                        "hit rate ≥ 85% (/v1/stats/cache)".into(),
                        c.map(|c| c.hit_rate_percentage >= 85.0),
                        c.map(|c| {
                            format!(
                                "{:.1}% ({} hits, {} misses, {} bypasses; X-Rankd-Cache: hit on {} of {} reads)",
                                c.hit_rate_percentage,
                                thousands(c.hits as f64),
                                thousands(c.misses as f64),
                                thousands(c.bypasses as f64),
                                thousands(c.header_hits as f64),
                                thousands(c.reads as f64)
                            )
                        }),
                    ),
                ]
            }
            "cache-top" => vec![share(0.7, "/healthz")],
            "cache-top-redis" => vec![redis(0.1)],
            "cache-write" => vec![redis(1.05)],
            "submit-eid" => vec![redis(2.0)],
            "submit-script" => vec![share(0.8, "raw")],
            "batch" => {
                let twin = r.twin.number().unwrap_or(0.0);
                let rankd = r.rankd.number().unwrap_or(0.0);
                let rate = if twin >= 150_000.0 {
                    (
                        Some(rankd >= 100_000.0),
                        format!("{} events/s", thousands(rankd)),
                    )
                } else {
                    (
                        None,
                        format!("the twin reached {} events/s", thousands(twin)),
                    )
                };
                vec![
                    redis(2.0),
                    (
                        "≥ 100,000 events/s when the twin reaches 150,000".into(),
                        rate.0,
                        Some(rate.1),
                    ),
                ]
            }
            "rank" => vec![share(0.6, "raw")],
            "rank-thin" => {
                let x = match (r.rankd.load(), healthz) {
                    (Some(f), Some(h)) if h > 0.0 => Some(f.cpu_us.server / h),
                    _ => None,
                };
                vec![
                    share(0.8, "the thin server"),
                    (
                        "rankd CPU/read ≤ 2× its CPU per /healthz".into(),
                        x.map(|x| x <= 2.0),
                        Some(x.map_or_else(|| "no /healthz row".into(), |x| format!("{x:.2}×"))),
                    ),
                ]
            }
            _ => continue,
        };
        r.floors = if judged || (spread && !plan.quick) {
            floors
                .into_iter()
                .map(|(text, met, note)| Floor { text, met, note })
                .collect()
        } else {
            // Named once, all unjudged: a quick run's figures mean nothing.
            let text = floors
                .into_iter()
                .map(|(t, _, _)| t)
                .collect::<Vec<_>>()
                .join("; ");
            vec![Floor {
                text,
                met: None,
                note: Some("quick or small run".into()),
            }]
        };
    }
}
