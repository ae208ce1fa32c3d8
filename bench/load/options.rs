//! The load tool's options, and the plan they make once defaults are applied.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "load",
    about = "rankd load harness: rankd over HTTP beside its raw Redis twin",
    args_override_self = true
)]
pub(crate) struct Opts {
    /// Small sizes and short runs: a smoke test of the harness, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Redis to measure against (loopback only).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub(crate) redis_url: String,
    /// The Redis is a private one bench/run started: the 10M-member case may run there.
    #[arg(long)]
    pub(crate) private_redis: bool,
    /// Prefix of every key this run writes.
    #[arg(long)]
    pub(crate) prefix: Option<String>,
    /// Concurrent connections (workers) on each side [default: 50, quick 4].
    #[arg(long)]
    conns: Option<usize>,
    /// Worker threads of the server's runtime [default: 2, what `rankd serve` gets on two cores;
    /// `TOKIO_WORKER_THREADS` sets it for `rankd serve`].
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) server_threads: u16,
    /// Seconds each side runs per round [default: 3, quick 0.25].
    #[arg(long)]
    duration: Option<f64>,
    /// Rounds per workload, alternating the sides [default: 3, quick 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds of warm-up per side before measuring [default: 1, quick 0.1].
    #[arg(long)]
    warmup: Option<f64>,
    /// Most operations per side per round (a bound besides the duration).
    #[arg(long)]
    max_ops: Option<u64>,
    /// Board sizes, comma-separated [default: 1000,1000000; quick 1000,20000].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<u64>>,
    /// Size of the extra member-rank case (0: none) [default: 10000000 on a private Redis, else 0].
    #[arg(long)]
    big: Option<u64>,
    /// Seconds the whole run may take before it is abandoned (and fails).
    #[arg(long)]
    deadline: Option<f64>,
    /// Run only the workloads whose id contains one of these (submit, submit-eid, submit-script,
    /// submit-solo, submit-spread, batch, batch-script, rank, rank-thin, rank-script, top, around,
    /// page, lookup, healthz, inproc, memory, cache-write, cache-top, cache-mix).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Also measure with load generators written elsewhere, once, at the largest size: wrk against
    /// rankd (GET a member, POST a score) and redis-benchmark against Redis (ZREVRANK, the least
    /// submit script). Needs `wrk` and `redis-benchmark` on the PATH; ignored with --quick.
    #[arg(long)]
    external: bool,
    /// Seconds between rankd's metrics samples [default: rankd's own, 15]; the results say so
    /// when it is set.
    #[arg(long)]
    pub(crate) metrics_sample: Option<u64>,
    /// rankd's RANKD_WRITE_SHARE: single events of one board one script call may carry [default:
    /// rankd's own, 64]; 1 sends each event alone, which measures submit.lua per single event.
    /// The results say so when it is set.
    #[arg(long)]
    pub(crate) write_share: Option<usize>,
    /// Boards of the spread row (submit-spread): single submits over this many boards at once
    /// [default: 100, quick 4].
    #[arg(long)]
    spread_boards: Option<usize>,
    /// Connections per board of the spread row, and of the one board it is compared with
    /// [default: 10, quick 2].
    #[arg(long)]
    spread_conns: Option<usize>,
    /// Members of each board of the spread row [default: 10000, quick 1000].
    #[arg(long)]
    spread_members: Option<u64>,
    /// Where to write the results (markdown).
    #[arg(long, default_value = "target/bench/RESULTS.md")]
    pub(crate) out: PathBuf,
    /// Where to write the rows as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// A README whose `<!-- results:begin -->` … `<!-- results:end -->` section gets the results.
    #[arg(long)]
    pub(crate) readme: Option<PathBuf>,
    /// A markdown file of criterion micro-benchmark figures to include.
    #[arg(long)]
    pub(crate) micro_md: Option<PathBuf>,
    /// The output of bench/embedded_memory.rs to include.
    #[arg(long)]
    pub(crate) embedded_memory: Option<PathBuf>,
    /// The command that ran this, for the record.
    #[arg(long)]
    pub(crate) command: Option<String>,
    /// Passed by cargo bench.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Settings after defaults.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) conns: usize,
    pub(crate) duration: Duration,
    pub(crate) rounds: usize,
    pub(crate) warmup: Duration,
    pub(crate) max_ops: u64,
    pub(crate) sizes: Vec<u64>,
    pub(crate) big: u64,
    pub(crate) deadline: Duration,
    pub(crate) external: bool,
    /// The spread row: boards, connections per board, members per board.
    pub(crate) spread_boards: usize,
    pub(crate) spread_conns: usize,
    pub(crate) spread_members: u64,
    only: Option<Vec<String>>,
}

impl Plan {
    pub(crate) fn from(o: &Opts) -> Result<Self> {
        let q = o.quick;
        let secs = |v: Option<f64>, full: f64, quick: f64| {
            Duration::from_secs_f64(v.unwrap_or(if q { quick } else { full }).max(0.0))
        };
        let sizes = o.sizes.clone().unwrap_or(if q {
            vec![1000, 20_000]
        } else {
            vec![1000, 1_000_000]
        });
        if sizes.is_empty() || sizes.contains(&0) {
            bail!("--sizes must name sizes of at least 1");
        }
        let big = o
            .big
            .unwrap_or(if o.private_redis && !q { 10_000_000 } else { 0 });
        if big > 1_000_000 && !o.private_redis {
            bail!("--big {big} needs a private Redis (--private-redis): the shared one is not to be bloated");
        }
        let conns = o.conns.unwrap_or(if q { 4 } else { 50 });
        if conns == 0 || conns > 1024 {
            bail!("--conns must be 1 to 1024");
        }
        let spread_boards = o.spread_boards.unwrap_or(if q { 4 } else { 100 });
        let spread_conns = o.spread_conns.unwrap_or(if q { 2 } else { 10 });
        // rankd serves at most 1,024 connections by default: the spread's and its single board's
        // must fit, with room for the connections of earlier rows still closing.
        if spread_boards == 0 || spread_conns == 0 || (spread_boards + 1) * spread_conns > 1010 {
            bail!("--spread-boards × --spread-conns must be at least 1 and at most 1,000");
        }
        let spread_members = o.spread_members.unwrap_or(if q { 1000 } else { 10_000 });
        if spread_members == 0 {
            bail!("--spread-members must be at least 1");
        }
        Ok(Self {
            quick: q,
            conns,
            duration: secs(o.duration, 3.0, 0.25),
            rounds: o.rounds.unwrap_or(if q { 1 } else { 3 }).max(1),
            warmup: secs(o.warmup, 1.0, 0.1),
            max_ops: o
                .max_ops
                .unwrap_or(if q { 50_000 } else { 5_000_000 })
                .max(1),
            sizes,
            big,
            deadline: secs(o.deadline, 1500.0, 100.0),
            external: o.external && !q,
            spread_boards,
            spread_conns,
            spread_members,
            only: o.only.clone(),
        })
    }

    pub(crate) fn wants(&self, id: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|l| l.iter().any(|w| id.contains(w.as_str())))
    }

    /// The size issue 3 and issue 4 name their figures at: the largest of the sizes.
    pub(crate) fn headline(&self) -> u64 {
        self.sizes.iter().copied().max().unwrap_or(0)
    }
}
