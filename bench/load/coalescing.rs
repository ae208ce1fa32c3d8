//! The rows of write coalescing (`RANKD_WRITE_SHARE`: concurrent single writes to one board share
//! one script call): one connection with sharing on against the same build with it off, and
//! writes spread over many boards against one of those boards alone.
//!
//! Both compare rankd with rankd, over HTTP, in alternating rounds whose connections stay open from
//! round to round: 1,000 connections opened afresh each round would queue behind the ones still
//! closing under rankd's cap of 1,024.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use rankd::config::Config;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::fixtures::Fixture;
use crate::measuring::Sample;
use crate::report::{size_label, thousands, Cell, Row};
use crate::sides::{Kind, Side, Work};
use crate::{start_server, Bench};

/// The spread row's per-board figures: what its floor is judged on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Spread {
    pub(crate) boards: usize,
    /// The highest p99 of any board, and that board.
    pub(crate) worst_p99_ms: f64,
    pub(crate) worst_board: String,
    /// The median and the lowest of the boards' p99s.
    pub(crate) median_p99_ms: f64,
    pub(crate) best_p99_ms: f64,
    /// The fewest operations any board completed (how far its p99 can be trusted).
    pub(crate) fewest_ops: u64,
}

/// One set of workers over all rounds: each worker's own sample, and the whole.
struct Workers {
    each: Vec<Sample>,
    total: Sample,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Bench {
    /// Alternating rounds of two sets of workers (`a` first in even rounds), each after a warm-up,
    /// their connections kept from round to round.
    async fn paired(
        &self,
        mut a: Vec<Box<dyn Side>>,
        mut b: Vec<Box<dyn Side>>,
        rounds: usize,
        dur: Duration,
    ) -> Result<(Workers, Workers)> {
        let (na, nb) = (a.len(), b.len());
        let fresh = |n: usize| Workers {
            each: (0..n).map(|_| Sample::new()).collect(),
            total: Sample::new(),
        };
        let (mut sa, mut sb) = (fresh(na), fresh(nb));
        if !self.plan.warmup.is_zero() {
            (a, _, _) = self.measure_kept(a, self.plan.warmup).await;
            (b, _, _) = self.measure_kept(b, self.plan.warmup).await;
        }
        for round in 0..rounds {
            for a_now in [round % 2 == 0, round % 2 == 1] {
                self.check_cancel()?;
                let (sides, into, n) = if a_now {
                    (std::mem::take(&mut a), &mut sa, na)
                } else {
                    (std::mem::take(&mut b), &mut sb, nb)
                };
                if sides.len() != n {
                    bail!(
                        "{} of {n} connections timed out: {}",
                        n - sides.len(),
                        into.total.first_error.as_deref().unwrap_or("timed out")
                    );
                }
                let (kept, each, total) = self.measure_kept(sides, dur).await;
                for (acc, s) in into.each.iter_mut().zip(each) {
                    acc.merge(s);
                }
                into.total.merge(total);
                if a_now {
                    a = kept;
                } else {
                    b = kept;
                }
            }
        }
        Ok((sa, sb))
    }

    /// A single submit at one connection, with write sharing on (rankd as configured, or the
    /// default share when the run turned it off) against the same build with it off
    /// (`RANKD_WRITE_SHARE=1`, a second server in this process on the same runtime): the cost of
    /// sharing to a writer who never has company. Twice the rounds at half the length, so that
    /// the two alternate more often on a host whose speed drifts.
    pub(crate) async fn solo(&self, fx: &Arc<Fixture>) -> Result<Row> {
        self.check_cancel()?;
        let config = &self.server_config;
        let stop = CancellationToken::new();
        let mut servers = Vec::new();
        let share = if config.write_share > 1 {
            config.write_share
        } else {
            Config::default().write_share
        };
        let result = async {
            let on = if config.write_share > 1 {
                self.server
            } else {
                let on = Config {
                    write_share: share,
                    ..config.clone()
                };
                let (addr, task) = start_server(&self.server_rt, on, stop.clone()).await?;
                servers.push(task);
                addr
            };
            let off = Config {
                write_share: 1,
                ..config.clone()
            };
            let (off, task) = start_server(&self.server_rt, off, stop.clone()).await?;
            servers.push(task);
            let work = Arc::new(Work {
                kind: Kind::Submit,
                fx: fx.clone(),
            });
            // The same seed on both sides: the same members, in the same order.
            let a = self.http_sides_to(on, &work, 0, 1).await?;
            let b = self.http_sides_to(off, &work, 0, 1).await?;
            let p = &self.plan;
            let (on, off) = self.paired(a, b, p.rounds * 2, p.duration / 2).await?;
            let row = Row::new(
                "submit-solo",
                &format!(
                    "single submit, 1 connection, write sharing on (RANKD_WRITE_SHARE={share})"
                ),
                fx.n,
                Some(1),
                Cell::Load(on.total.figure(1, "ops/s")),
                "the same POST to the same build, sharing off (RANKD_WRITE_SHARE=1)",
                Cell::Load(off.total.figure(1, "ops/s")),
            );
            eprintln!(
                "load: {:<48} {:>5}  on {:>18} p50 {:.3} ms  off {:>18} p50 {:.3} ms",
                "single submit, 1 connection, sharing on / off",
                size_label(fx.n),
                row.rankd.main(),
                row.rankd.load().map_or(f64::NAN, |f| f.p50_ms),
                row.twin.main(),
                row.twin.load().map_or(f64::NAN, |f| f.p50_ms),
            );
            Ok(row)
        }
        .await;
        stop.cancel();
        for t in servers {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        result
    }

    /// Single submits over `--spread-boards` boards at once, `--spread-conns` connections each,
    /// against the first of those boards alone at `--spread-conns` connections (the same per-board
    /// concurrency), in alternating rounds: each board's p99 against the lone board's.
    pub(crate) async fn spread(&self) -> Result<Row> {
        self.check_cancel()?;
        let p = &self.plan;
        let (nb, per) = (p.spread_boards, p.spread_conns);
        let boards = self.load_spread(nb, p.spread_members).await?;
        let works: Vec<Arc<Work>> = boards
            .iter()
            .map(|fx| {
                Arc::new(Work {
                    kind: Kind::Submit,
                    fx: fx.clone(),
                })
            })
            .collect();
        // Worker i writes to board i % nb; each has a seed of its own.
        let mut all: Vec<Box<dyn Side>> = Vec::with_capacity(nb * per);
        for i in 0..nb * per {
            self.check_cancel()?;
            all.extend(
                self.http_sides_to(self.server, &works[i % nb], 100 + i as u64, 1)
                    .await?,
            );
        }
        let alone = self.http_sides_to(self.server, &works[0], 7, per).await?;
        let (spread, alone) = self.paired(all, alone, p.rounds, p.duration).await?;
        let mut per_board: Vec<Sample> = (0..nb).map(|_| Sample::new()).collect();
        for (i, s) in spread.each.iter().enumerate() {
            per_board[i % nb].add_counts(s);
        }
        let mut p99s: Vec<(f64, usize)> = per_board
            .iter()
            .enumerate()
            .map(|(b, s)| (ms(s.hist.value_at_quantile(0.99)), b))
            .collect();
        p99s.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (worst, wb) = p99s[nb - 1];
        let figures = Spread {
            boards: nb,
            worst_p99_ms: worst,
            worst_board: boards[wb].main.to_string(),
            median_p99_ms: p99s[nb / 2].0,
            best_p99_ms: p99s[0].0,
            fewest_ops: per_board.iter().map(|s| s.ops).min().unwrap_or(0),
        };
        let mut row = Row::new(
            "submit-spread",
            &format!(
                "single submit, {} connections over {nb} boards ({per} a board; 1 scope × 2 windows)",
                thousands((nb * per) as f64)
            ),
            p.spread_members,
            Some(nb * per),
            Cell::Load(spread.total.figure(1, "ops/s")),
            &format!(
                "one of those boards ({}) alone, {per} connections: the same POST",
                boards[0].main
            ),
            Cell::Load(alone.total.figure(1, "ops/s")),
        );
        // Throughput of 100 boards against one says nothing the floor asks: no ratio.
        row.ratio = None;
        eprintln!(
            "load: {:<48} {:>5}  all {:>18}  alone {:>18}  board p99 worst {:.2} ms ({}), median {:.2}, best {:.2}; alone p99 {:.2} ms",
            format!("single submit over {nb} boards × {per}"),
            size_label(p.spread_members),
            row.rankd.main(),
            row.twin.main(),
            figures.worst_p99_ms,
            figures.worst_board,
            figures.median_p99_ms,
            figures.best_p99_ms,
            row.twin.load().map_or(f64::NAN, |f| f.p99_ms),
        );
        row.spread = Some(figures);
        Ok(row)
    }
}
