//! `rankd admin`: the operator's commands (the old `optimize_database`, grown up). Each takes a
//! dry run that prints what it would do and changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::Row;

use crate::board::BoardId;
use crate::config::Config;
use crate::engine::{Engine, Limit, Offset, RedisState, SystemClock, View};
use crate::error::{Error, Invalid, Result};
use crate::keys::Keys;
use crate::store::{rebuild, snapshot, PgStore};

/// Where the commands report: a progress bar on a terminal, plain lines when piped.
pub struct Progress {
    bar: ProgressBar,
    terminal: bool,
}

impl Progress {
    /// A progress report over `n` steps.
    pub fn new(what: &str, n: u64) -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = if terminal {
            let b = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{msg:20} [{bar:30}] {pos}/{len} {elapsed}")
            {
                b.set_style(style);
            }
            b.set_message(what.to_owned());
            b
        } else {
            ProgressBar::hidden()
        };
        Self { bar, terminal }
    }

    /// One step done.
    pub fn step(&self, line: &str) {
        self.bar.inc(1);
        if self.terminal {
            self.bar.set_message(line.to_owned());
        } else {
            println!("{line}");
        }
    }

    /// All done.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Calls per board and script that `analyze` times.
pub const LATENCY_SAMPLES: usize = 20;
/// Boards (the biggest) that `analyze` times scripts on.
pub const LATENCY_BOARDS: usize = 5;

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

/// A share in percent, or `None` with nothing counted.
fn hit_rate(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 * 100.0 / total as f64)
}

/// A running server's own cache figures (`GET /v1/stats/cache`), for `analyze --server`.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// Where they came from.
    pub url: String,
    /// Definition cache hit rate, in percent.
    pub definitions: Option<f64>,
    /// Script cache hit rate, in percent.
    pub scripts: Option<f64>,
}

impl ServerStats {
    /// Asks a running server for its cache figures over HTTP/1.1.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server does not answer 200 with the figures.
    pub async fn fetch(base: &str, api_key: Option<&str>) -> Result<Self> {
        use http_body_util::BodyExt;
        let fail = |m: String| Error::Unavailable(format!("--server {base}: {m}"));
        let uri: hyper::Uri = format!("{}/v1/stats/cache", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| fail(format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(fail("only http:// URLs are supported".into()));
        }
        let host = uri.host().ok_or_else(|| fail("no host".into()))?;
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| fail("connect timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::get(uri.path()).header(hyper::header::HOST, host);
        if let Some(k) = api_key {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(5), sender.send_request(req))
                .await
                .map_err(|_| fail("no answer within 5 s".into()))?
                .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        if status != hyper::StatusCode::OK {
            return Err(fail(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        let rate = |name: &str| {
            let c = &v["caches"][name];
            hit_rate(c["hits"].as_u64()?, c["misses"].as_u64()?)
        };
        Ok(Self {
            url: base.to_owned(),
            definitions: rate("definitions"),
            scripts: rate("scripts"),
        })
    }

    fn lines(&self) -> Vec<String> {
        let show = |r: Option<f64>| r.map_or("no lookups yet".to_owned(), |r| format!("{r:.1}%"));
        vec![
            format!(
                "cache hit rate, definitions (server {}): {}",
                self.url,
                show(self.definitions)
            ),
            format!(
                "cache hit rate, scripts (server {}): {}",
                self.url,
                show(self.scripts)
            ),
        ]
    }
}

/// The engine and store the commands work on.
pub struct Admin {
    /// The engine, with no persister attached (the commands call the store themselves).
    pub engine: Arc<Engine>,
    /// The durable store.
    pub store: PgStore,
    config: Config,
}

impl Admin {
    /// Connects to Redis and Postgres as the configuration says.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `database_url` when none is configured; unreachable services.
    pub async fn connect(config: &Config) -> Result<Self> {
        let url = config.database_url.as_deref().ok_or_else(|| {
            Invalid::new(
                "database_url",
                "rankd admin needs the durable store: set RANKD_DATABASE_URL",
            )
        })?;
        let store = PgStore::connect(url).await?;
        let engine = Arc::new(crate::serve::connect(config, Arc::new(SystemClock)).await?);
        // Commits and rebuilds go only into the store Redis was built from (see store::identity).
        if let Some(paired) = engine.store_pairing(None, false).await? {
            crate::store::Store::expect_id(&store, paired);
        }
        Ok(Self {
            engine,
            store,
            config: config.clone(),
        })
    }

    /// Creates or upgrades the tables and indexes. Returns the migrations applied (or pending, in a
    /// dry run).
    ///
    /// # Errors
    /// When Postgres cannot be reached or a migration fails.
    pub async fn migrate(&self, dry_run: bool) -> Result<Vec<String>> {
        let migrator = sqlx::migrate!("./migrations/postgres");
        let applied: Vec<i64> = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(self.store.pool())
            .await
            .map(|rows| rows.iter().map(|r| r.get::<i64, _>("version")).collect())
            .unwrap_or_default();
        let pending: Vec<String> = migrator
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect();
        if !dry_run {
            self.store.migrate().await?;
        }
        Ok(pending)
    }

    async fn boards(&self, board: Option<&BoardId>) -> Result<Vec<BoardId>> {
        Ok(match board {
            Some(b) => vec![b.clone()],
            None => self
                .store
                .boards()
                .await?
                .into_iter()
                .map(|(b, _)| b)
                .collect(),
        })
    }

    /// Copies what the Redis logs hold that the store does not yet (so that a check compares like
    /// with like).
    async fn catch_up(&self, boards: &[BoardId]) -> Result<usize> {
        let mut n = 0;
        for b in boards {
            loop {
                let pending = self.engine.log_pending(b, 1000).await?;
                if pending.is_empty() {
                    break;
                }
                self.store.insert_ops(&pending).await?;
                self.engine.log_confirm(&pending).await?;
                n += pending.len();
            }
        }
        Ok(n)
    }

    /// Snapshots every key of one board, or of all. In a dry run, lists the keys it would read.
    ///
    /// # Errors
    /// When Redis or Postgres cannot be reached.
    pub async fn snapshot(&self, board: Option<&BoardId>, dry_run: bool) -> Result<Vec<String>> {
        let boards = self.boards(board).await?;
        let progress = Progress::new("snapshot", boards.len() as u64);
        let mut lines = Vec::new();
        for b in &boards {
            if dry_run {
                let keys = self.engine.snapshot_board(b).await?;
                for k in keys {
                    lines.push(format!(
                        "would snapshot {b} {} {} {} ({} members)",
                        k.key.window,
                        k.key.period,
                        k.key.scope.as_deref().unwrap_or("-"),
                        k.entries.len()
                    ));
                }
            } else {
                let r = snapshot::snapshot(&self.engine, &self.store, Some(b)).await?;
                let base = match (r.keys, r.bases) {
                    (0, _) => "",
                    (_, 0) => {
                        ", history only (read while the board changed, ahead of the store, or not what the stored log implies)"
                    }
                    _ => ", a rebuild base",
                };
                lines.push(format!(
                    "snapshot {b}: {} keys, {} entries{base}",
                    r.keys, r.entries
                ));
            }
            progress.step(&format!("snapshot {b}"));
        }
        progress.finish();
        Ok(lines)
    }

    /// Rebuilds Redis from the store where Redis lost boards (or acknowledged operations). In a dry
    /// run, says which boards it would rebuild.
    ///
    /// # Errors
    /// When Redis or Postgres cannot be reached.
    pub async fn warm(&self, board: Option<&BoardId>, dry_run: bool) -> Result<Vec<String>> {
        let stored: BTreeMap<BoardId, u64> = self.store.boards().await?.into_iter().collect();
        let boards = self.boards(board).await?;
        let progress = Progress::new("warm", boards.len() as u64);
        let mut lines = Vec::new();
        for b in &boards {
            let Some(seq) = stored.get(b) else {
                lines.push(format!("{b}: not in the store"));
                continue;
            };
            let state = self.engine.redis_state(b).await?;
            let needed = !matches!(state, RedisState::Live(s) if s >= *seq);
            let line = match (needed, dry_run) {
                (false, _) => format!("{b}: present in Redis (seq {seq}), nothing to do"),
                (true, true) => format!("{b}: would rebuild ({state:?}, store at seq {seq})"),
                (true, false) => {
                    rebuild::rebuild(&self.engine, &self.store, b).await?;
                    format!("{b}: rebuilt to seq {seq}")
                }
            };
            progress.step(&line);
            lines.push(line);
        }
        progress.finish();
        Ok(lines)
    }

    /// Compares Redis with the store: the store's log is replayed into a scratch key prefix and
    /// every key compared (member counts, score sums, the first differing members). Returns the
    /// differences (empty when Redis and the store agree).
    ///
    /// # Errors
    /// When Redis or Postgres cannot be reached.
    pub async fn verify(&self, board: Option<&BoardId>, dry_run: bool) -> Result<Vec<String>> {
        let boards = self.boards(board).await?;
        if dry_run {
            return Ok(boards.iter().map(|b| format!("would verify {b}")).collect());
        }
        if let Err(Error::Unavailable(why)) = crate::store::Store::check_identity(&self.store).await
        {
            return Ok(vec![why]);
        }
        let mut diffs = Vec::new();
        // Boards Redis has that the store does not know: a store that lost them, or never had them.
        if board.is_none() {
            for b in self.engine.boards().await? {
                if !boards.contains(&b.board) {
                    diffs.push(format!(
                        "{}: in Redis, but the store holds no definition of it",
                        b.board
                    ));
                }
            }
        }
        self.catch_up(&boards).await?;
        let scratch_prefix = format!("{}verify{}:", self.config.key_prefix, std::process::id());
        let mut scratch_config = self.config.clone();
        scratch_config.key_prefix = scratch_prefix;
        let scratch = crate::serve::connect(&scratch_config, Arc::new(SystemClock)).await?;
        let progress = Progress::new("verify", boards.len() as u64);
        for b in &boards {
            if self.store.diverged(b).await? {
                diffs.push(format!(
                    "{b}: Redis numbered operations again after losing others; they are parked until \
                     the board is resynchronised (rankd serve does it within ten seconds)"
                ));
                progress.step(&format!("verify {b}"));
                continue;
            }
            let ops = self.store.ops(b).await?;
            scratch.replay(b, &ops).await?;
            let live = self.engine.snapshot_board(b).await;
            let want = scratch.snapshot_board(b).await?;
            match live {
                Err(Error::BoardNotFound(_)) => diffs.push(format!("{b}: missing from Redis")),
                Err(e) => return Err(e),
                Ok(got) => diffs.extend(compare(b, &got, &want)),
            }
            scratch.delete_board(b).await?;
            progress.step(&format!("verify {b}"));
        }
        progress.finish();
        Ok(diffs)
    }

    /// Clears derived data: the expired entries of every board's key index (rebuilt as keys are
    /// written). With `boards`, also every board's Redis keys (the store keeps them; `warm` brings
    /// them back).
    ///
    /// # Errors
    /// When Redis or Postgres cannot be reached.
    pub async fn clear_caches(&self, boards: bool, dry_run: bool) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for (b, _) in self.store.boards().await? {
            if dry_run {
                lines.push(format!("would prune {b}'s key index of expired keys"));
            } else {
                let live = self.engine.prune_index(&b).await?;
                lines.push(format!("pruned {b}'s key index: {live} live keys"));
            }
            if boards {
                if dry_run {
                    lines.push(format!(
                        "would remove {b}'s Redis keys (the store keeps them)"
                    ));
                } else {
                    self.engine.discard(&b).await?;
                    lines.push(format!(
                        "removed {b}'s Redis keys; `rankd admin warm` restores them"
                    ));
                }
            }
        }
        Ok(lines)
    }

    /// Reports sizes, lag, plans and recommendations.
    ///
    /// # Errors
    /// When Redis or Postgres cannot be reached.
    pub async fn analyze(&self, server: Option<&ServerStats>) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let stats = self.engine.backend_stats().await?;
        out.push(format!(
            "backend {}: used_memory {} bytes, {} keys",
            stats.kind,
            stats.used_memory_bytes.unwrap_or(0),
            stats.keys.unwrap_or(0)
        ));
        let keyspace = hit_rate(
            stats.keyspace_hits.unwrap_or(0),
            stats.keyspace_misses.unwrap_or(0),
        );
        if let Some(rate) = keyspace {
            out.push(format!(
                "cache hit rate, Redis keyspace (lookups that found their key, since Redis started): {rate:.1}%"
            ));
        }
        if let Some(s) = server {
            out.extend(s.lines());
        }
        let slow = self.engine.slowlog().await?;
        out.push(format!("slowlog: {} recent entries", slow.len()));
        out.extend(slow.iter().map(|l| format!("  {l}")));
        let mut biggest = (String::new(), 0u64);
        let mut lag_total = 0usize;
        let mut lag_ms = 0i64;
        for (b, seq) in self.store.boards().await? {
            let members = self
                .engine
                .page(&b, &View::all_time(), Offset::new(0)?, Limit::new(1)?)
                .await
                .map(|p| p.total)
                .unwrap_or(0);
            let waiting = self.engine.log_pending(&b, 10_000).await?;
            let pending = waiting.len();
            lag_total += pending;
            if let Some(oldest) = waiting.iter().map(|o| o.recv_ms).min() {
                lag_ms = lag_ms.max(self.engine.now_ms() - oldest);
            }
            let memory = match self.engine.board_memory(&b).await? {
                Some(bytes) => format!("{bytes} bytes in Redis (MEMORY USAGE, sampled)"),
                None => "memory unknown".to_owned(),
            };
            out.push(format!("board {b}: {members} members (all-time, global), {memory}, store seq {seq}, {pending} operations awaiting the store"));
            if members > biggest.1 {
                biggest = (b.to_string(), members);
            }
        }
        out.push(format!(
            "persister lag: {lag_total} operations await the store, the oldest for {:.1} s (the rankd_store_lag_seconds of this moment)",
            lag_ms as f64 / 1000.0
        ));
        let latencies = self.script_latencies().await?;
        out.extend(latencies.iter().map(Latency::line));
        for table in [
            "rankd_ops",
            "rankd_boards",
            "rankd_snapshots",
            "rankd_snapshot_entries",
        ] {
            let row = sqlx::query("SELECT pg_total_relation_size($1::regclass) AS total, pg_indexes_size($1::regclass) AS idx")
                .bind(table)
                .fetch_one(self.store.pool())
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            out.push(format!(
                "table {table}: {} bytes, of which indexes {} bytes",
                row.get::<i64, _>("total"),
                row.get::<i64, _>("idx")
            ));
        }
        for (what, sql) in [
            (
                "latest ranks of a key",
                "EXPLAIN SELECT e.rank, e.member, e.score FROM rankd_snapshot_entries e WHERE e.snapshot_id = \
                 (SELECT id FROM rankd_snapshots WHERE board = 'x' AND window_name = 'all' AND scope = '' ORDER BY taken_at DESC LIMIT 1) \
                 AND e.rank <= 20 ORDER BY e.rank",
            ),
            (
                "rank history of a member",
                "EXPLAIN SELECT s.taken_at, e.rank, e.score FROM rankd_snapshot_entries e JOIN rankd_snapshots s ON s.id = e.snapshot_id \
                 WHERE e.member = 'u42' AND s.board = 'x' AND s.window_name = 'all' AND s.scope = '' ORDER BY s.taken_at",
            ),
            (
                "activity of a member",
                "EXPLAIN SELECT board, at_ms, value FROM rankd_ops WHERE member = 'u42' AND op = 'e' AND at_ms > 0 ORDER BY at_ms",
            ),
        ] {
            let plan = sqlx::query(sql)
                .fetch_all(self.store.pool())
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            out.push(format!("plan of {what}:"));
            out.extend(plan.iter().map(|r| format!("  {}", r.get::<String, _>(0))));
        }
        // Recommendations drawn from the figures above.
        if lag_total > 1000 || lag_ms > 10_000 {
            out.push(format!("recommend: {lag_total} operations await the store, the oldest for {:.1} s; check Postgres health and the persister's commits (rankd_store_commits_total)", lag_ms as f64 / 1000.0));
        }
        if slow.iter().any(|l| {
            l.split(' ')
                .next()
                .and_then(|us| us.parse::<u64>().ok())
                .is_some_and(|us| us > 100_000)
        }) {
            out.push("recommend: commands over 100 ms in the slowlog; large deletes or snapshots of huge keys block Redis — bound boards with max_members, or snapshot less often".into());
        }
        if biggest.1 > 1_000_000 {
            out.push(format!(
                "recommend: board {} holds {} members; consider max_members to bound memory",
                biggest.0, biggest.1
            ));
        }
        if out
            .iter()
            .any(|l| l.contains("Seq Scan on rankd_snapshot_entries"))
        {
            out.push("recommend: snapshot queries scan sequentially; run `rankd admin migrate` to create the indexes, then ANALYZE".into());
        }
        for l in latencies.iter().filter(|l| l.p50_ms > 2.0) {
            out.push(format!("recommend: {} takes {:.2} ms at the median from here; check Redis CPU and the slowlog, the network between rankd and Redis, and bound big boards with max_members", l.script, l.p50_ms));
        }
        if keyspace.is_some_and(|r| r < 50.0) {
            out.push("recommend: under half of Redis lookups find their key; reads of members that are not on their board dominate, or boards are being rebuilt".into());
        }
        if let Some(r) = server.and_then(|s| s.definitions) {
            if r < 90.0 {
                out.push(format!("recommend: the server's definition cache hits {r:.1}%; boards are redefined often, or instances restart often"));
            }
        }
        if !out.iter().any(|l| l.starts_with("recommend:")) {
            out.push("recommend: nothing; sizes, lag and plans look healthy".into());
        }
        Ok(out)
    }

    /// Times the read scripts on the biggest boards from this process (round trip included): a
    /// member's standing (read_members) and the top 20 (read_page), [`LATENCY_SAMPLES`] calls each
    /// per board, on at most [`LATENCY_BOARDS`] boards.
    async fn script_latencies(&self) -> Result<Vec<Latency>> {
        let mut boards = Vec::new();
        for (b, _) in self.store.boards().await? {
            if let Ok(p) = self
                .engine
                .page(&b, &View::all_time(), Offset::new(0)?, Limit::new(1)?)
                .await
            {
                if let Some(first) = p.entries.first() {
                    boards.push((p.total, b, first.member.clone()));
                }
            }
        }
        boards.sort_by_key(|b| std::cmp::Reverse(b.0));
        boards.truncate(LATENCY_BOARDS);
        let mut standing = Vec::new();
        let mut top = Vec::new();
        for (_, b, member) in &boards {
            let member = crate::board::Member::parse(member)?;
            for _ in 0..LATENCY_SAMPLES {
                let t = std::time::Instant::now();
                self.engine.standing(b, &View::all_time(), &member).await?;
                standing.push(t.elapsed().as_secs_f64() * 1e3);
                let t = std::time::Instant::now();
                self.engine
                    .top(b, &View::all_time(), Limit::new(20)?)
                    .await?;
                top.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok([
            ("read_members (a member's standing)", standing),
            ("read_page (top 20)", top),
        ]
        .into_iter()
        .filter_map(|(script, ms)| Latency::of(script, ms, boards.len()))
        .collect())
    }

    /// Pairs Redis with this store when it was built from another (see [`crate::store::identity`]):
    /// an operator's decision that the history this store lacks stays lost. Running servers follow
    /// within ten seconds: they store into it again, starting with what the Redis logs kept.
    ///
    /// # Errors
    /// When Redis or Postgres cannot be reached.
    pub async fn pair_store(&self, dry_run: bool) -> Result<Vec<String>> {
        let id = crate::store::Store::store_id(&self.store).await?;
        let paired = self.engine.store_pairing(None, false).await?;
        if paired.as_deref() == Some(id.as_str()) {
            return Ok(vec![format!(
                "Redis is already paired with this store ({id})"
            )]);
        }
        let was = paired.unwrap_or_else(|| "none".into());
        if dry_run {
            return Ok(vec![format!(
                "would pair Redis with this store ({id}) instead of {was}"
            )]);
        }
        self.engine.store_pairing(Some(&id), true).await?;
        Ok(vec![
            format!("Redis is now paired with this store ({id}) instead of {was}"),
            "boards whose definition this store lacks cannot be rebuilt from it: Redis holds              their only whole copy"
                .into(),
        ])
    }

    /// migrate, snapshot, warm, analyze.
    ///
    /// # Errors
    /// The first step's failure.
    pub async fn optimize(&self, dry_run: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        out.extend(
            self.migrate(dry_run)
                .await?
                .into_iter()
                .map(|m| format!("migration {m}")),
        );
        out.extend(self.warm(None, dry_run).await?);
        out.extend(self.snapshot(None, dry_run).await?);
        out.extend(self.analyze(None).await?);
        Ok(out)
    }

    /// The key formatter in use.
    pub fn keys(&self) -> &Keys {
        self.engine.keys()
    }
}

/// The differences between a board's live keys and the keys its stored log implies.
fn compare(
    board: &BoardId,
    got: &[crate::engine::KeySnapshot],
    want: &[crate::engine::KeySnapshot],
) -> Vec<String> {
    let key = |k: &crate::engine::KeySnapshot| {
        format!(
            "{} {} {}",
            k.key.window,
            k.key.period,
            k.key.scope.as_deref().unwrap_or("-")
        )
    };
    let got: BTreeMap<String, &crate::engine::KeySnapshot> =
        got.iter().map(|k| (key(k), k)).collect();
    let want: BTreeMap<String, &crate::engine::KeySnapshot> =
        want.iter().map(|k| (key(k), k)).collect();
    let mut out = Vec::new();
    for name in got
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (got.get(name), want.get(name)) {
            (Some(g), Some(w)) => {
                let sum =
                    |k: &crate::engine::KeySnapshot| k.entries.iter().map(|e| e.score).sum::<f64>();
                if g.entries != w.entries {
                    let first = g
                        .entries
                        .iter()
                        .zip(&w.entries)
                        .find(|(a, b)| a != b)
                        .map(|(a, b)| format!("first difference: Redis {a:?}, store {b:?}"))
                        .unwrap_or_default();
                    out.push(format!(
                        "{board} {name}: Redis {} members (sum {}), store {} members (sum {}); {first}",
                        g.entries.len(),
                        sum(g),
                        w.entries.len(),
                        sum(w)
                    ));
                }
            }
            (Some(g), None) => out.push(format!(
                "{board} {name}: {} members in Redis, none in the store",
                g.entries.len()
            )),
            (None, Some(w)) => out.push(format!(
                "{board} {name}: {} members in the store, none in Redis",
                w.entries.len()
            )),
            (None, None) => {}
        }
    }
    out
}
