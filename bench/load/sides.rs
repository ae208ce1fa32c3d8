//! The workloads and their sides: each operation as rankd over HTTP, as its raw twin on Redis, and
//! as the engine called in-process.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use fred::prelude::{Client, ClientLike, LuaInterface, SortedSetsInterface, Value};
use fred::types::{ClusterHash, CustomCommand};
use rankd::backend::Call;
use rankd::board::Member;
use rankd::engine::{Engine, Submit, View};

use crate::client::{e2s, get_req, post_req, HttpConn};
use crate::fixtures::{member, Fixture, Rng};
use crate::{Bench, BATCH_EVENTS, LOOKUP, PAGE_LIMIT, PAGE_OFFSET, RADIUS, SCOPE, TOP};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A single submit against the least script doing its work.
    Submit,
    /// The same with an event id per event (the least script has no dedupe: its twin is the same).
    SubmitEid,
    /// A single submit against the very submit.lua call rankd makes.
    SubmitScript,
    /// A batch against pipelined ZINCRBY of the same events.
    Batch,
    /// A batch against the very submit.lua chunks rankd sends.
    BatchScript,
    Rank,
    /// Member rank against a thin HTTP server that makes one call of rankd's read script per GET.
    RankThin,
    /// Member rank again, its twin the engine's own script for one member (not in ALL: it runs
    /// once, at the headline size).
    RankScript,
    Top,
    Around,
    Page,
    Lookup,
    /// The HTTP stack alone: what any route costs before it does anything.
    Health,
}

impl Kind {
    pub(crate) const ALL: [Kind; 12] = [
        Kind::Submit,
        Kind::SubmitEid,
        Kind::SubmitScript,
        Kind::Batch,
        Kind::BatchScript,
        Kind::Rank,
        Kind::RankThin,
        Kind::Top,
        Kind::Around,
        Kind::Page,
        Kind::Lookup,
        Kind::Health,
    ];

    pub(crate) fn id(self) -> &'static str {
        match self {
            Kind::Submit => "submit",
            Kind::SubmitEid => "submit-eid",
            Kind::SubmitScript => "submit-script",
            Kind::Batch => "batch",
            Kind::BatchScript => "batch-script",
            Kind::Rank => "rank",
            Kind::RankThin => "rank-thin",
            Kind::RankScript => "rank-script",
            Kind::Top => "top",
            Kind::Around => "around",
            Kind::Page => "page",
            Kind::Lookup => "lookup",
            Kind::Health => "healthz",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Submit => "single submit (1 scope × 2 windows: 4 keys)",
            Kind::SubmitEid => "single submit with an event_id (1 scope × 2 windows)",
            Kind::SubmitScript => "single submit, against its script",
            Kind::Batch => "batch submit (1,000 events; 1 window, no scope)",
            Kind::BatchScript => "batch submit, against its script",
            Kind::Rank => "member rank",
            Kind::RankThin => "member rank, against a thin server",
            Kind::RankScript => "member rank, against its script",
            Kind::Top => "top 20",
            Kind::Around => "around, radius 5",
            Kind::Page => "page at offset 10,000 (50 entries)",
            Kind::Lookup => "lookup of 100 members",
            Kind::Health => "HTTP alone: GET /healthz (no Redis)",
        }
    }

    pub(crate) fn twin(self) -> &'static str {
        match self {
            Kind::Submit | Kind::SubmitEid => {
                "the least script: EVALSHA of ZINCRBY + ZREVRANK on each of the same 4 keys"
            }
            Kind::SubmitScript => "EVALSHA submit.lua, same KEYS/ARGV",
            Kind::Batch => "the same 1,000 events as pipelined ZINCRBY",
            Kind::BatchScript => "the same 2 chunks as pipelined EVALSHA",
            Kind::Rank => "ZREVRANK",
            Kind::RankThin => "a thin hyper + fred server: one EVALSHA read_members.lua per GET",
            Kind::RankScript => "EVALSHA read_members.lua for the member, same KEYS/ARGV",
            Kind::Top => "ZREVRANGE 0 19 WITHSCORES",
            Kind::Around => "ZREVRANK, then ZREVRANGE r-5 r+5 WITHSCORES",
            Kind::Page => "ZREVRANGE 10000 10049 WITHSCORES",
            Kind::Lookup => "100 × (ZSCORE + ZREVRANK), pipelined",
            Kind::Health => "ZREVRANK",
        }
    }

    /// Units (events) per operation.
    pub(crate) fn units(self) -> u64 {
        match self {
            Kind::Batch | Kind::BatchScript => BATCH_EVENTS as u64,
            _ => 1,
        }
    }

    pub(crate) fn unit(self) -> &'static str {
        match self {
            Kind::Batch | Kind::BatchScript => "events/s",
            _ => "ops/s",
        }
    }

    /// The twin is an HTTP server too (the thin one), driven by the same client as rankd.
    pub(crate) fn twin_is_http(self) -> bool {
        self == Kind::RankThin
    }
}

/// Event ids of the submit-with-event-id workload: unique in the run, whichever side sends them.
static EVENT_IDS: AtomicU64 = AtomicU64::new(0);

/// What a worker needs to make its requests.
pub(crate) struct Work {
    pub(crate) kind: Kind,
    pub(crate) fx: Arc<Fixture>,
}

impl Work {
    fn lookup_members(&self, rng: &mut Rng) -> Vec<String> {
        (0..LOOKUP).map(|_| member(rng.below(self.fx.n))).collect()
    }

    fn http_request(&self, rng: &mut Rng, seq: u64) -> Cow<'_, [u8]> {
        let fx = &self.fx;
        let b = &fx.main;
        Cow::Owned(match self.kind {
            Kind::Submit | Kind::SubmitScript => {
                let body = format!(
                    r#"{{"member":"{}","value":1,"scopes":["{SCOPE}"]}}"#,
                    member(rng.below(fx.n))
                );
                post_req(&format!("/v1/boards/{b}/scores"), body.as_bytes())
            }
            Kind::SubmitEid => {
                let body = format!(
                    r#"{{"member":"{}","value":1,"scopes":["{SCOPE}"],"event_id":"e{}"}}"#,
                    member(rng.below(fx.n)),
                    EVENT_IDS.fetch_add(1, Ordering::Relaxed)
                );
                post_req(&format!("/v1/boards/{b}/scores"), body.as_bytes())
            }
            Kind::Batch | Kind::BatchScript => {
                return Cow::Borrowed(&fx.batches[(seq % fx.batches.len() as u64) as usize].http)
            }
            Kind::Rank | Kind::RankThin | Kind::RankScript => get_req(&format!(
                "/v1/boards/{b}/members/{}",
                member(rng.below(fx.n))
            )),
            Kind::Top => get_req(&format!("/v1/boards/{b}/top?limit={TOP}")),
            Kind::Around => get_req(&format!(
                "/v1/boards/{b}/members/{}/around?radius={RADIUS}",
                member(rng.below(fx.n))
            )),
            Kind::Page => get_req(&format!(
                "/v1/boards/{b}/entries?offset={PAGE_OFFSET}&limit={PAGE_LIMIT}"
            )),
            Kind::Lookup => {
                let body = serde_json::json!({ "members": self.lookup_members(rng) }).to_string();
                post_req(&format!("/v1/boards/{b}/members/lookup"), body.as_bytes())
            }
            Kind::Health => get_req("/healthz"),
        })
    }
}

/// One side of a comparison, one connection of it.
#[async_trait]
pub(crate) trait Side: Send {
    async fn op(&mut self) -> Result<(), String>;
}

struct HttpSide {
    conn: HttpConn,
    work: Arc<Work>,
    rng: Rng,
    seq: u64,
}

#[async_trait]
impl Side for HttpSide {
    async fn op(&mut self) -> Result<(), String> {
        let req = self.work.http_request(&mut self.rng, self.seq);
        self.seq += 1;
        let (status, body) = self.conn.send(&req).await?;
        if status != 200 {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        Ok(())
    }
}

struct RawSide {
    c: Client,
    work: Arc<Work>,
    rng: Rng,
    seq: u64,
}

/// Sends calls as one pipeline of EVALSHA, as the Redis executor's `eval_many` does.
async fn evalsha_pipeline(c: &Client, calls: &[Call]) -> Result<(), String> {
    let pipeline = c.pipeline();
    for call in calls {
        let slot = call
            .keys
            .first()
            .map_or(0, |k| fred::util::redis_keyslot(k.as_bytes()));
        let mut args: Vec<Value> = Vec::with_capacity(2 + call.keys.len() + call.args.len());
        args.push(call.script.sha1().into());
        args.push(Value::Integer(call.keys.len() as i64));
        args.extend(call.keys.iter().map(|k| Value::from(k.as_str())));
        args.extend(call.args.iter().map(|a| Value::from(a.as_str())));
        let cmd = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(slot), false);
        let _: () = pipeline.custom(cmd, args).await.map_err(e2s)?;
    }
    for r in pipeline.try_all::<Value>().await {
        r.map_err(e2s)?;
    }
    Ok(())
}

#[async_trait]
impl Side for RawSide {
    async fn op(&mut self) -> Result<(), String> {
        let fx = &self.work.fx;
        let key = fx.zset.as_str();
        let seq = self.seq;
        self.seq += 1;
        match self.work.kind {
            Kind::Submit | Kind::SubmitEid => {
                let m = member(self.rng.below(fx.n));
                let _: Value = self
                    .c
                    .evalsha(
                        fx.least_sha.as_str(),
                        fx.main_keys.clone(),
                        vec!["1", m.as_str()],
                    )
                    .await
                    .map_err(e2s)?;
            }
            Kind::SubmitScript | Kind::RankScript => {
                let (call, at) = if self.work.kind == Kind::SubmitScript {
                    fx.submit.as_ref().ok_or("no captured submit")?
                } else {
                    fx.standing.as_ref().ok_or("no captured read_members")?
                };
                let mut args = call.args.clone();
                args[*at] = member(self.rng.below(fx.n));
                let _: Value = self
                    .c
                    .evalsha(call.script.sha1(), call.keys.clone(), args)
                    .await
                    .map_err(e2s)?;
            }
            Kind::Batch => {
                let b = &fx.batches[(seq % fx.batches.len() as u64) as usize];
                let p = self.c.pipeline();
                for m in &b.members {
                    let _: () = p
                        .zincrby(b.key.as_str(), 1.0, m.as_str())
                        .await
                        .map_err(e2s)?;
                }
                for r in p.try_all::<Value>().await {
                    r.map_err(e2s)?;
                }
            }
            Kind::BatchScript => {
                let b = &fx.batches[(seq % fx.batches.len() as u64) as usize];
                evalsha_pipeline(&self.c, &b.calls).await?;
            }
            Kind::RankThin => return Err("the thin server is measured over HTTP".into()),
            Kind::Rank | Kind::Health => {
                let m = member(self.rng.below(fx.n));
                let _: Value = self.c.zrevrank(key, m.as_str(), false).await.map_err(e2s)?;
            }
            Kind::Top => {
                let _: Value = self
                    .c
                    .zrevrange(key, 0, TOP as i64 - 1, true)
                    .await
                    .map_err(e2s)?;
            }
            Kind::Around => {
                let m = member(self.rng.below(fx.n));
                let r: Option<i64> = self.c.zrevrank(key, m.as_str(), false).await.map_err(e2s)?;
                let r = r.ok_or("member not found")?;
                let first = (r - RADIUS as i64).max(0);
                let _: Value = self
                    .c
                    .zrevrange(key, first, r + RADIUS as i64, true)
                    .await
                    .map_err(e2s)?;
            }
            Kind::Page => {
                let _: Value = self
                    .c
                    .zrevrange(
                        key,
                        PAGE_OFFSET as i64,
                        (PAGE_OFFSET + PAGE_LIMIT) as i64 - 1,
                        true,
                    )
                    .await
                    .map_err(e2s)?;
            }
            Kind::Lookup => {
                let members = self.work.lookup_members(&mut self.rng);
                let p = self.c.pipeline();
                for m in &members {
                    let _: () = p.zscore(key, m.as_str()).await.map_err(e2s)?;
                    let _: () = p.zrevrank(key, m.as_str(), false).await.map_err(e2s)?;
                }
                let _: Vec<Value> = p.all().await.map_err(e2s)?;
            }
        }
        Ok(())
    }
}

/// In-process: the engine called directly, no HTTP (issue 4).
struct EngineSide {
    engine: Arc<Engine>,
    work: Arc<Work>,
    rng: Rng,
}

#[async_trait]
impl Side for EngineSide {
    async fn op(&mut self) -> Result<(), String> {
        let fx = &self.work.fx;
        let m = member(self.rng.below(fx.n));
        match self.work.kind {
            Kind::Submit | Kind::SubmitScript => {
                let ev = Submit::parse(fx.main.as_str(), &m, 1.0, &[SCOPE.to_owned()], None, None)
                    .map_err(e2s)?;
                self.engine.submit(&ev).await.map_err(e2s)?;
            }
            Kind::Rank => {
                let m = Member::parse(&m).map_err(e2s)?;
                self.engine
                    .standing(&fx.main, &View::all_time(), &m)
                    .await
                    .map_err(e2s)?;
            }
            k => return Err(format!("{k:?} is not measured in-process")),
        }
        Ok(())
    }
}

impl Bench {
    pub(crate) async fn http_sides(
        &self,
        work: &Arc<Work>,
        round: u64,
        conns: usize,
    ) -> Result<Vec<Box<dyn Side>>> {
        self.http_sides_to(self.server, work, round, conns).await
    }

    /// HTTP workers against the server at `addr`.
    pub(crate) async fn http_sides_to(
        &self,
        addr: SocketAddr,
        work: &Arc<Work>,
        round: u64,
        conns: usize,
    ) -> Result<Vec<Box<dyn Side>>> {
        let mut v: Vec<Box<dyn Side>> = Vec::new();
        for i in 0..conns as u64 {
            v.push(Box::new(HttpSide {
                conn: HttpConn::connect(addr).await?,
                work: work.clone(),
                rng: Rng::new(round * 10_000 + i),
                seq: i,
            }));
        }
        Ok(v)
    }

    /// The twin's workers: the thin server's HTTP workers when there is one (`thin`), else Redis's.
    pub(crate) async fn twin_sides(
        &self,
        thin: Option<SocketAddr>,
        work: &Arc<Work>,
        round: u64,
        conns: usize,
    ) -> Result<Vec<Box<dyn Side>>> {
        match thin {
            Some(addr) => self.http_sides_to(addr, work, round, conns).await,
            None => Ok(self.raw_sides(work, round, conns)),
        }
    }

    /// The raw twin's workers: past one client per worker, workers share the clients (fred
    /// pipelines what they send on one connection).
    pub(crate) fn raw_sides(
        &self,
        work: &Arc<Work>,
        round: u64,
        conns: usize,
    ) -> Vec<Box<dyn Side>> {
        (0..conns as u64)
            .map(|i| {
                Box::new(RawSide {
                    c: self.clients[i as usize % self.clients.len()].clone(),
                    work: work.clone(),
                    rng: Rng::new(round * 10_000 + i),
                    seq: i,
                }) as Box<dyn Side>
            })
            .collect()
    }

    pub(crate) fn engine_sides(
        &self,
        engine: &Arc<Engine>,
        work: &Arc<Work>,
        round: u64,
    ) -> Vec<Box<dyn Side>> {
        (0..self.plan.conns as u64)
            .map(|i| {
                Box::new(EngineSide {
                    engine: engine.clone(),
                    work: work.clone(),
                    rng: Rng::new(round * 10_000 + i),
                }) as Box<dyn Side>
            })
            .collect()
    }
}
