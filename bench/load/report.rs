//! The report: rows of figures, the floors judged on them, and the markdown, JSON and README
//! section they are written to.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use crate::measuring::Cpu;
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

    fn number(&self) -> Option<f64> {
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

#[derive(Debug, Clone, Serialize)]
struct Floor {
    text: String,
    met: Option<bool>,
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
    floor: Option<Floor>,
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
            floor: None,
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
        let floor = r.floor.as_ref().map_or_else(String::new, |f| {
            let mark = match f.met {
                Some(true) => "met",
                Some(false) => "**NOT met**",
                None => "not judged (quick run)",
            };
            format!("{}: {mark}", f.text)
        });
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

/// Where the CPU went: µs per operation of Redis' main thread, of rankd's threads and of the client.
fn cpu_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "CPU per operation, in µs (Redis: its main thread; rankd: the server's threads, and the \
         embedded store's; client: the load tool's client threads, which also run the engine in the \
         in-process rows). Measured from the CPU clocks over the same rounds, so they hold on a busy \
         machine where throughput does not.\n\n\
         | workload | members | rankd: Redis | rankd: rankd | rankd: client | twin: Redis | twin: rankd | twin: client |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in rows {
        let (Cell::Load(a), Cell::Load(b)) = (&r.rankd, &r.twin) else {
            if let (Cell::Missing { .. }, Cell::Load(b)) = (&r.rankd, &r.twin) {
                let _ = writeln!(
                    s,
                    "| {} | {} | – | – | – | {:.1} | {:.1} | {:.1} |",
                    r.workload,
                    size_label(r.members),
                    b.cpu_us.redis,
                    b.cpu_us.server,
                    b.cpu_us.client
                );
            }
            continue;
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.workload,
            size_label(r.members),
            a.cpu_us.redis,
            a.cpu_us.server,
            a.cpu_us.client,
            b.cpu_us.redis,
            b.cpu_us.server,
            b.cpu_us.client
        );
    }
    s
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

/// Issue 3's floors, judged on the headline size of a full run.
pub(crate) fn judge(rows: &mut [Row], plan: &Plan) {
    let headline = plan.headline();
    for r in rows.iter_mut() {
        if r.members != headline {
            continue;
        }
        let (text, met) = match r.id.as_str() {
            "submit" => ("≥ 80% of raw", r.ratio.map(|x| x >= 0.8)),
            "rank" => ("≥ 60% of raw", r.ratio.map(|x| x >= 0.6)),
            "batch" => (
                "≥ 100,000 events/s",
                r.rankd.number().map(|x| x >= 100_000.0),
            ),
            _ => continue,
        };
        r.floor = Some(Floor {
            text: text.into(),
            met: if plan.quick || headline < 1_000_000 {
                None
            } else {
                met
            },
        });
    }
}
