//! The Redis executor: fred, standalone or cluster, plain or TLS, EVALSHA with a reload on NOSCRIPT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fred::error::ErrorKind;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::{BackendStats, Call, ExecError, Executor, Reply, Script};
use crate::error::Invalid;
use crate::tls::{handshake_refused, Roots};

/// How often, while Redis is unreachable, one call probes whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// How long a health check waits for PONG.
const PING_TIMEOUT: Duration = Duration::from_millis(300);

/// Connection settings for [`RedisExecutor`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `redis-cluster://host:port?node=host:port&node=…`; `rediss://`
    /// and `rediss-cluster://` for the same over TLS.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long one command may take before it fails.
    pub command_timeout: Duration,
    /// The certificate authorities a TLS server's certificate must chain to; `None` for the
    /// system's.
    pub ca: Option<Roots>,
}

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 2,
            command_timeout: Duration::from_secs(5),
            ca: None,
        }
    }

    /// The settings of `config` for a connection to `url` (its `redis_url`): pool size, command
    /// timeout, and the authorities of `redis_ca_file`, read here.
    ///
    /// # Errors
    /// [`Invalid`] naming `redis_ca_file` when that file holds no usable certificate.
    pub fn of(config: &crate::config::Config, url: &str) -> Result<Self, Invalid> {
        Ok(Self {
            url: url.to_owned(),
            pool_size: config.redis_pool_size,
            command_timeout: config.redis_timeout,
            ca: config
                .redis_ca_file
                .as_deref()
                .map(|path| Roots::from_file("redis_ca_file", path))
                .transpose()?,
        })
    }
}

/// Whether `url` names a Redis Cluster (`redis-cluster://` or `rediss-cluster://`).
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis-cluster://") || url.starts_with("rediss-cluster://")
}

/// Whether `url` connects over TLS (`rediss://` or `rediss-cluster://`).
pub fn is_tls_url(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with("rediss-cluster://")
}

/// fred's configuration of `config`: its URL read by fred, and for a TLS URL rustls set up by
/// [`Roots`] (fred's own would refuse to start on any unreadable file among the system's
/// authorities, and cannot take a CA file).
fn fred_config(config: &RedisConfig) -> Result<Config, ExecError> {
    let url = &config.url;
    let tls = is_tls_url(url);
    // The same URL without its `s`: fred reads host, port, credentials, database and nodes.
    let plain = match url.strip_prefix("rediss") {
        Some(rest) if tls => format!("redis{rest}"),
        _ => url.clone(),
    };
    let mut fred_config = Config::from_url(&plain)
        .map_err(|e| ExecError::Reply(format!("not a Redis URL: {}", e.details())))?;
    if tls {
        let roots = match &config.ca {
            Some(roots) => roots.clone(),
            None => Roots::system().map_err(ExecError::Reply)?,
        };
        let client = roots.client_config().map_err(ExecError::Reply)?;
        fred_config.tls = Some(fred::types::config::TlsConnector::from(client).into());
    }
    Ok(fred_config)
}

/// Runs scripts on Redis through a pool of fred clients.
pub struct RedisExecutor {
    pool: Pool,
    clustered: bool,
    /// Script-cache hits and misses, as counted on /metrics.
    hits: AtomicU64,
    reloads: AtomicU64,
    /// Set when Redis was found unreachable (a failed probe or call); while set, calls fail at
    /// once, and at most one probe every [`PROBE_EVERY`] checks whether Redis is back.
    down: std::sync::atomic::AtomicBool,
    /// When the last probe ran, ms since `started`.
    last_probe_ms: AtomicU64,
    started: std::time::Instant,
    /// When Redis last answered a call, ms since `started`: a PING stuck behind a deep queue
    /// while calls keep being answered is a busy Redis, not a lost one.
    last_answer_ms: AtomicU64,
}

impl std::fmt::Debug for RedisExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisExecutor").finish_non_exhaustive()
    }
}

/// Error replies by which Redis says it cannot serve for now.
const TRANSIENT: [&str; 6] = [
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "READONLY",
];

/// The script cache's hit counter, looked up once: every call counts one.
static SCRIPT_HITS: crate::metrics::Resolved<metrics::Counter> = crate::metrics::Resolved::new();

/// What fred 10 answers, as an `Unknown` error, for a command it had no connection for.
const UNROUTED: &str = "Failed to route command";

fn classify(e: &Error) -> ExecError {
    match e.kind() {
        // No answer in time, or the connection lost with the command on it: it may have been
        // written, and Redis may have run it (a score applied), or may yet run it.
        ErrorKind::Timeout | ErrorKind::IO | ErrorKind::Canceled => {
            ExecError::Unanswered(in_words(e))
        }
        ErrorKind::Cluster | ErrorKind::Routing | ErrorKind::Backpressure => {
            ExecError::Unavailable(in_words(e))
        }
        // Redis answering that it cannot serve right now (still loading its data, busy with a
        // script, a cluster without a quorum): the request may be retried, it is not wrong.
        _ if TRANSIENT.iter().any(|p| e.details().starts_with(p)) => {
            ExecError::Unavailable(e.details().to_string())
        }
        // fred found no connection to send the command on (one was dropped and is reconnecting):
        // the command was never written, so it may be retried like any other unavailability.
        ErrorKind::Unknown if e.details().starts_with(UNROUTED) => {
            ExecError::Unavailable(e.details().to_string())
        }
        _ => ExecError::Reply(e.details().to_string()),
    }
}

/// A fred error in words. fred keeps an I/O error as its debug text (`Os { code: 111, kind:
/// ConnectionRefused, message: "Connection refused" }`): only its message is kept.
fn in_words(e: &Error) -> String {
    let details = e.details();
    let quoted = |field: &str| {
        let (_, rest) = details.split_once(field)?;
        rest.split('"').next().map(str::to_owned)
    };
    let io = if details.starts_with("Os {") {
        quoted("message: \"")
    } else if details.starts_with("Custom {") {
        quoted("error: \"")
    } else {
        details
            .strip_prefix("Kind(")
            .and_then(|k| k.strip_suffix(')'))
            .map(|k| {
                // ConnectionReset: connection reset.
                k.chars().fold(String::new(), |mut w, c| {
                    if c.is_uppercase() && !w.is_empty() {
                        w.push(' ');
                    }
                    w.push(c);
                    w
                })
            })
    };
    match (e.kind(), io) {
        (_, Some(io)) => format!("I/O error: {}", io.to_lowercase()),
        (ErrorKind::Timeout, None) => format!("no answer in time: {details}"),
        _ => e.to_string(),
    }
}

/// The answer of each call of a pipeline of `n` calls that was sent. fred answers a pipeline that
/// got no full answer (no answer in time, a connection lost under it) with one error for all of it:
/// each call may then have run, so each gets that error as [`ExecError::Unanswered`], unless the
/// error shows that nothing was written (no connection to write on, back-pressure).
fn per_call(results: Vec<Result<Value, Error>>, n: usize) -> Vec<Result<Reply, ExecError>> {
    if results.len() == n {
        return results
            .into_iter()
            .map(|r| {
                r.map(to_reply).map_err(|e| {
                    if is_noscript(&e) {
                        ExecError::Reply("NOSCRIPT".into())
                    } else {
                        classify(&e)
                    }
                })
            })
            .collect();
    }
    let e = match results.into_iter().find_map(Result::err) {
        Some(e) => match classify(&e) {
            unsent @ ExecError::Unavailable(_)
                if e.kind() == &ErrorKind::Backpressure || e.details().starts_with(UNROUTED) =>
            {
                unsent
            }
            ExecError::Unavailable(m) | ExecError::Reply(m) => ExecError::Unanswered(m),
            unanswered @ ExecError::Unanswered(_) => unanswered,
        },
        None => ExecError::Unanswered(format!("the pipeline answered fewer than its {n} calls")),
    };
    vec![Err(e); n]
}

/// A call ready for a pipeline: its keys and arguments, and the hash slot it goes to. They are
/// copied back to back into one buffer, and each send hands fred slices of it: sending a call (or
/// sending it again after NOSCRIPT) costs a reference count per argument, not an allocation.
#[derive(Clone)]
struct PipelinedCall {
    script: &'static super::Script,
    slot: u16,
    keys: usize,
    /// Every key, then every argument.
    buf: bytes::Bytes,
    /// Where each of them ends in `buf`.
    ends: Vec<usize>,
}

impl PipelinedCall {
    fn new(call: Call) -> Self {
        let slot = call
            .keys
            .first()
            .map_or(0, |k| fred::util::redis_keyslot(k.as_bytes()));
        let all = || call.keys.iter().chain(&call.args);
        let mut buf = bytes::BytesMut::with_capacity(all().map(String::len).sum());
        let mut ends = Vec::with_capacity(call.keys.len() + call.args.len());
        for a in all() {
            buf.extend_from_slice(a.as_bytes());
            ends.push(buf.len());
        }
        Self {
            script: call.script,
            slot,
            keys: call.keys.len(),
            buf: buf.freeze(),
            ends,
        }
    }

    /// EVALSHA's arguments: sha, key count, keys, args.
    fn args(&self) -> Vec<Value> {
        let mut out = Vec::with_capacity(2 + self.ends.len());
        out.push(Value::from_static_str(self.script.sha1()));
        out.push(Value::Integer(self.keys as i64));
        let mut start = 0;
        for &end in &self.ends {
            out.push(Value::Bytes(self.buf.slice(start..end)));
            start = end;
        }
        out
    }
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Random, false)
}

fn is_noscript(e: &Error) -> bool {
    e.details().starts_with("NOSCRIPT")
}

/// A reply frame as a [`Reply`], as fred's own reading of it ([`Value`]) followed by [`to_reply`]
/// would give it, in one pass: a script's reply (a member read's rows, a page's entries) was read
/// into fred's values only to be read again into a `Reply`. An error frame anywhere in it fails the
/// whole as fred fails it, with the kind fred gives its text (only a cluster redirection's matters:
/// see [`classify`]).
fn frame_to_reply(frame: fred::types::Resp3Frame) -> Result<Reply, Error> {
    use fred::types::Resp3Frame as F;
    let text = |data: &[u8]| String::from_utf8_lossy(data).into_owned();
    Ok(match frame {
        F::Null => Reply::Nil,
        F::BlobString { data, .. }
        | F::SimpleString { data, .. }
        | F::VerbatimString { data, .. }
        | F::BigNumber { data, .. } => Reply::Bulk(text(&data)),
        F::Number { data, .. } => Reply::Int(data),
        F::Boolean { data, .. } => Reply::Int(i64::from(data)),
        F::Double { data, .. } => Reply::Bulk(data.to_string()),
        F::Array { data, .. } | F::Push { data, .. } => Reply::Array(
            data.into_iter()
                .map(frame_to_reply)
                .collect::<Result<_, _>>()?,
        ),
        F::Set { data, .. } => Reply::Array(
            data.into_iter()
                .map(frame_to_reply)
                .collect::<Result<_, _>>()?,
        ),
        F::SimpleError { data, .. } => return Err(error_reply(&data)),
        F::BlobError { data, .. } => return Err(error_reply(&text(&data))),
        // Not in a script's reply over RESP2, which rankd's connections speak.
        F::Map { .. } | F::Hello { .. } | F::ChunkedString(_) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                "unexpected reply frame: a map, a hello or a chunk",
            ))
        }
    })
}

/// An error reply as fred reads one: its kind from its first word.
fn error_reply(text: &str) -> Error {
    let kind = match text.split_whitespace().next().unwrap_or("") {
        "" => ErrorKind::Unknown,
        "ERR" if text.contains("instance has cluster support disabled") => ErrorKind::Config,
        "WRONGTYPE" => ErrorKind::InvalidArgument,
        "NOAUTH" | "WRONGPASS" => ErrorKind::Auth,
        "MOVED" | "ASK" | "CLUSTERDOWN" => ErrorKind::Cluster,
        _ => ErrorKind::Unknown,
    };
    Error::new(
        kind,
        if text.is_empty() {
            "No response!"
        } else {
            text
        }
        .to_owned(),
    )
}

fn to_reply(v: Value) -> Reply {
    match v {
        Value::Null => Reply::Nil,
        Value::Integer(i) => Reply::Int(i),
        Value::Boolean(b) => Reply::Int(i64::from(b)),
        Value::Double(d) => Reply::Bulk(d.to_string()),
        Value::String(s) => Reply::Bulk(String::from(&*s)),
        Value::Bytes(b) => Reply::Bulk(String::from_utf8_lossy(&b).into_owned()),
        Value::Array(items) => Reply::Array(items.into_iter().map(to_reply).collect()),
        Value::Map(m) => Reply::Array(
            m.inner()
                .into_iter()
                .flat_map(|(k, v)| {
                    [
                        Reply::Bulk(k.as_str().unwrap_or_default().to_string()),
                        to_reply(v),
                    ]
                })
                .collect(),
        ),
        Value::Queued => Reply::Bulk("QUEUED".into()),
    }
}

impl RedisExecutor {
    /// Connects to Redis. Commands issued while Redis is out of reach fail rather than wait.
    ///
    /// # Errors
    /// [`ExecError::Reply`] for what waiting will not mend: a URL fred cannot read, a refused
    /// password, a TLS server's certificate refused (or no authority to check it against);
    /// [`ExecError::Unavailable`] when Redis cannot be reached.
    pub async fn connect(config: &RedisConfig) -> Result<Self, ExecError> {
        let fred_config = fred_config(config)?;
        let timeout = config.command_timeout;
        let pool = Builder::from_config(fred_config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = timeout;
                // One attempt: replaying an EVALSHA whose reply was lost could apply a score twice,
                // and a retry behind a reconnect is what makes a request wait for the timeout.
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build_pool(config.pool_size.max(1))
            .map_err(|e| ExecError::Unavailable(in_words(&e)))?;
        let clustered = is_cluster_url(&config.url);
        // Nothing was sent yet. A refused password, a bad setting or a refused certificate will
        // not mend by waiting; anything else is Redis out of reach.
        let trusted = match config.ca {
            Some(_) => "those of redis_ca_file",
            None => "the system's; redis_ca_file names a private one",
        };
        pool.init().await.map_err(|e| {
            if let Some(refused) = handshake_refused(e.details(), trusted) {
                return ExecError::Reply(refused);
            }
            match e.kind() {
                ErrorKind::Auth
                | ErrorKind::Config
                | ErrorKind::Url
                | ErrorKind::InvalidArgument
                | ErrorKind::Tls => ExecError::Reply(in_words(&e)),
                _ => ExecError::Unavailable(in_words(&e)),
            }
        })?;
        Ok(Self {
            pool,
            clustered,
            hits: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
            last_probe_ms: AtomicU64::new(0),
            started: std::time::Instant::now(),
            last_answer_ms: AtomicU64::new(0),
        })
    }

    /// The underlying pool, for administrative commands.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Where a command every primary must answer goes, through `client`: each primary of a
    /// cluster (as `client` last saw the cluster), or `None` for the one server.
    pub fn primaries(&self, client: &Client) -> Vec<Option<Server>> {
        if self.clustered {
            client
                .cached_cluster_state()
                .map(|s| s.unique_primary_nodes().into_iter().map(Some).collect())
                .unwrap_or_default()
        } else {
            vec![None]
        }
    }

    /// True when any connection of the pool is down. Redis going away drops every connection, but
    /// each notices on its own time: a request routed to one that has not noticed yet would wait out
    /// the command timeout, so the first connection to notice speaks for all of them.
    fn any_down(&self) -> bool {
        self.pool.clients().iter().any(|c| !c.is_connected())
    }

    /// Whether calls may go to Redis now. While Redis is known to be down, calls fail at once (a
    /// connection that has not noticed the loss would hold a call for the whole command timeout),
    /// and one call every [`PROBE_EVERY`] probes with a short PING to find Redis back.
    async fn reachable(&self) -> bool {
        if self.any_down() {
            self.down.store(true, Ordering::Relaxed);
            return false;
        }
        if !self.down.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_probe_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PROBE_EVERY.as_millis() as u64
            || self
                .last_probe_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        self.probe().await.is_ok()
    }

    /// A PING bounded by [`PING_TIMEOUT`]; records whether Redis answered.
    async fn probe(&self) -> Result<(), ExecError> {
        let client = self.pool.next();
        let sent = self.elapsed_ms();
        let r = match tokio::time::timeout(PING_TIMEOUT, client.ping::<()>(None)).await {
            Ok(r) => r.map_err(|e| classify(&e)),
            // Calls answered while the PING waited: Redis is up, its queue deeper than the PING
            // may wait (a burst of large batches). Calls keep going to it, each within its own
            // timeout, rather than all failing until a later PING gets through.
            Err(_) if self.last_answer_ms.load(Ordering::Relaxed) > sent => Ok(()),
            Err(_) => Err(ExecError::Unavailable(
                "Redis did not answer PING in time".into(),
            )),
        };
        self.down.store(r.is_err(), Ordering::Relaxed);
        r
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Notes that Redis answered a call now.
    fn answered(&self) {
        self.last_answer_ms
            .store(self.elapsed_ms().max(1), Ordering::Relaxed);
    }

    /// Classifies a failed administrative command, remembering Redis as down when it is out of
    /// reach.
    fn noted(&self, e: &Error) -> ExecError {
        let e = classify(e);
        if matches!(e, ExecError::Unavailable(_) | ExecError::Unanswered(_)) {
            self.down.store(true, Ordering::Relaxed);
        }
        e
    }

    /// Counts script-cache hits and misses, for /metrics and /v1/stats/cache alike.
    fn cache(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.hits.fetch_add(hits, Ordering::Relaxed);
            SCRIPT_HITS.with(
                || metrics::counter!(crate::metrics::CACHE_HITS, "cache" => "scripts"),
                |c| c.increment(hits),
            );
        }
        if misses > 0 {
            self.reloads.fetch_add(misses, Ordering::Relaxed);
            metrics::counter!(crate::metrics::CACHE_MISSES, "cache" => "scripts").increment(misses);
        }
    }

    fn note(&self, r: &Result<Reply, ExecError>) {
        if matches!(r, Err(ExecError::Unavailable(_) | ExecError::Unanswered(_))) {
            self.down.store(true, Ordering::Relaxed);
        }
    }

    async fn load_one(&self, script: &Script) -> Result<(), ExecError> {
        self.pool
            .next()
            .script_load_cluster::<(), _>(script.source())
            .await
            .map_err(|e| classify(&e))
    }

    /// Sends calls as one pipeline on one connection (per node in a cluster), so that calls of one
    /// slot run in order; calls whose node had lost the script are loaded and sent again, in order.
    async fn pipeline(&self, calls: &[PipelinedCall]) -> super::Replies {
        let client = self.pool.next();
        let pipeline = client.pipeline();
        for call in calls {
            // fred pipelines have no EVALSHA of their own: send it as a custom command routed by the
            // hash slot of its first key (every key of a call shares that slot).
            let cmd = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(call.slot), false);
            let _: () = pipeline
                .custom(cmd, call.args())
                .await
                .map_err(|e| classify(&e))?;
        }
        let mut out = per_call(pipeline.try_all::<Value>().await, calls.len());
        // A call that met NOSCRIPT did not run (its node lost the script: a restart or a failover).
        // Load the scripts and run exactly those calls again, in their order.
        let failed: Vec<usize> = (0..out.len())
            .filter(|&i| matches!(&out[i], Err(ExecError::Reply(m)) if m == "NOSCRIPT"))
            .collect();
        // A script that ran is a hit, whether it answered or refused; a call that never reached
        // Redis, or was not answered, is neither.
        let ran = out
            .iter()
            .filter(|r| !matches!(r, Err(ExecError::Unavailable(_) | ExecError::Unanswered(_))))
            .count();
        self.cache((ran - failed.len()) as u64, failed.len() as u64);
        if ran > 0 {
            self.answered();
        }
        if !failed.is_empty() {
            // The other calls ran: from here on a failure is answered for the calls that met
            // NOSCRIPT alone (they did not run), never for the whole pipeline.
            let mut loaded: Vec<&'static str> = Vec::new();
            let mut again = Ok(());
            for &i in &failed {
                if again.is_ok() && !loaded.contains(&calls[i].script.name()) {
                    loaded.push(calls[i].script.name());
                    again = self.load_one(calls[i].script).await;
                }
            }
            let resent: Vec<PipelinedCall> = failed.iter().map(|&i| calls[i].clone()).collect();
            let answers = match again {
                Ok(()) => Box::pin(self.pipeline(&resent))
                    .await
                    .unwrap_or_else(|e| vec![Err(e); resent.len()]),
                Err(e) => vec![Err(e); resent.len()],
            };
            for (i, r) in failed.into_iter().zip(answers) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    async fn evalsha(client: &Client, call: &PipelinedCall) -> Result<Reply, Error> {
        let cmd = CustomCommand::new_static("EVALSHA", ClusterHash::Custom(call.slot), false);
        frame_to_reply(client.custom_raw(cmd, call.args()).await?)
    }
}

#[async_trait]
impl Executor for RedisExecutor {
    async fn load(&self, scripts: &[&'static Script]) -> Result<(), ExecError> {
        for s in scripts {
            self.load_one(s).await?;
        }
        Ok(())
    }

    async fn eval(&self, call: Call) -> Result<Reply, ExecError> {
        let client = self.pool.next();
        // While Redis is out of reach, fail at once rather than queue behind the reconnect.
        if !self.reachable().await {
            return Err(ExecError::Unavailable("not connected to Redis".into()));
        }
        // The arguments move into values once; a retry after NOSCRIPT shares their bytes.
        let call = PipelinedCall::new(call);
        let r = match Self::evalsha(client, &call).await {
            Ok(v) => {
                self.cache(1, 0);
                Ok(v)
            }
            Err(e) if is_noscript(&e) => {
                self.cache(0, 1);
                // Redis restarted or failed over to a node without the script: load it and retry once.
                self.load_one(call.script).await?;
                Self::evalsha(client, &call).await.map_err(|e| classify(&e))
            }
            Err(e) => {
                let e = classify(&e);
                if matches!(e, ExecError::Reply(_)) {
                    // The script ran and refused: its cache served it.
                    self.cache(1, 0);
                }
                Err(e)
            }
        };
        self.note(&r);
        r
    }

    async fn eval_many(&self, calls: Vec<Call>) -> super::Replies {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        if !self.reachable().await {
            return Err(ExecError::Unavailable("not connected to Redis".into()));
        }
        // Each call's EVALSHA arguments, built once: the strings move into the values (no copy of
        // what can be megabytes of arguments), and a call that meets NOSCRIPT is sent again from them.
        let encoded: Vec<PipelinedCall> = calls.into_iter().map(PipelinedCall::new).collect();
        self.pipeline(&encoded).await
    }

    async fn ping(&self) -> Result<(), ExecError> {
        if self.any_down() {
            self.down.store(true, Ordering::Relaxed);
            return Err(ExecError::Unavailable("not connected to Redis".into()));
        }
        self.probe().await
    }

    async fn reload_missing(&self, scripts: &[&'static Script]) -> Result<(), ExecError> {
        let client = self.pool.next();
        let mut args: Vec<&str> = vec!["EXISTS"];
        args.extend(scripts.iter().map(|s| s.sha1()));
        // Every primary of a cluster keeps its own script cache.
        let nodes = self.primaries(client);
        let mut missing: Vec<&'static Script> = Vec::new();
        for node in nodes {
            let r: Result<Value, Error> = match node {
                Some(server) => {
                    client
                        .with_cluster_node(server)
                        .custom(cmd("SCRIPT"), args.clone())
                        .await
                }
                None => client.custom(cmd("SCRIPT"), args.clone()).await,
            };
            let flags = r.map_err(|e| self.noted(&e))?.into_array();
            for (s, f) in scripts.iter().zip(flags) {
                if f.as_i64() != Some(1) && !missing.iter().any(|m| m.name() == s.name()) {
                    missing.push(s);
                }
            }
        }
        for s in missing {
            self.cache(0, 1);
            self.load_one(s).await?;
        }
        Ok(())
    }

    async fn close(&self) {
        // QUIT where Redis answers; either way fred's connection tasks end.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.pool.quit()).await;
    }

    async fn slowlog(&self) -> Result<Vec<String>, ExecError> {
        if !self.reachable().await {
            return Err(ExecError::Unavailable("not connected to Redis".into()));
        }
        let client = self.pool.next();
        let v: Value = client
            .custom(cmd("SLOWLOG"), vec!["GET", "10"])
            .await
            .map_err(|e| self.noted(&e))?;
        let Reply::Array(entries) = to_reply(v) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .iter()
            .filter_map(|e| match e {
                Reply::Array(f) if f.len() >= 4 => {
                    let us = match &f[2] {
                        Reply::Int(n) => *n,
                        _ => 0,
                    };
                    let args: Vec<String> = match &f[3] {
                        Reply::Array(a) => a
                            .iter()
                            .take(4)
                            .map(|x| match x {
                                Reply::Bulk(s) => s.chars().take(48).collect(),
                                other => format!("{other:?}"),
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    Some(format!("{us} µs: {}", args.join(" ")))
                }
                _ => None,
            })
            .collect())
    }

    async fn hash_fields(
        &self,
        key: &str,
        fields: &[String],
    ) -> Result<Vec<Option<String>>, ExecError> {
        if !self.reachable().await {
            return Err(ExecError::Unavailable("not connected to Redis".into()));
        }
        self.pool
            .next()
            .hmget(key, fields.to_vec())
            .await
            .map_err(|e| self.noted(&e))
    }

    async fn memory_usage(&self, keys: &[String]) -> Result<Option<u64>, ExecError> {
        if !self.reachable().await {
            return Err(ExecError::Unavailable("not connected to Redis".into()));
        }
        if keys.is_empty() {
            return Ok(Some(0));
        }
        // One pipeline; in a cluster each command goes to its key's node.
        let pipe = self.pool.next().pipeline();
        for k in keys {
            let slot = fred::util::redis_keyslot(k.as_bytes());
            let cmd = CustomCommand::new_static("MEMORY", ClusterHash::Custom(slot), false);
            let _: () = pipe
                .custom(cmd, vec!["USAGE", k.as_str()])
                .await
                .map_err(|e| self.noted(&e))?;
        }
        let sizes: Vec<Option<u64>> = pipe.all().await.map_err(|e| self.noted(&e))?;
        Ok(Some(sizes.into_iter().flatten().sum()))
    }

    async fn stats(&self) -> Result<BackendStats, ExecError> {
        // Same gate as a script call: a connection that has not yet noticed Redis is gone would
        // hold INFO for the whole command timeout.
        if !self.reachable().await {
            return Err(ExecError::Unavailable("not connected to Redis".into()));
        }
        let client = self.pool.next();
        let nodes = self.primaries(client);
        let mut memory = 0u64;
        let mut keys = 0u64;
        let (mut hits, mut misses) = (0u64, 0u64);
        for node in nodes {
            let info: String = match &node {
                Some(n) => {
                    client
                        .with_cluster_node(n.clone())
                        .custom(cmd("INFO"), vec!["memory", "stats"])
                        .await
                }
                None => client.custom(cmd("INFO"), vec!["memory", "stats"]).await,
            }
            .map_err(|e| self.noted(&e))?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            memory += field("used_memory");
            hits += field("keyspace_hits");
            misses += field("keyspace_misses");
            keys += match &node {
                Some(n) => client.with_cluster_node(n.clone()).dbsize::<u64>().await,
                None => client.dbsize::<u64>().await,
            }
            .map_err(|e| self.noted(&e))?;
        }
        Ok(BackendStats {
            kind: if self.clustered {
                "redis-cluster"
            } else {
                "redis"
            },
            used_memory_bytes: Some(memory),
            keys: Some(keys),
            script_calls: 0,
            script_hits: Some(self.hits.load(Ordering::Relaxed)),
            script_reloads: self.reloads.load(Ordering::Relaxed),
            keyspace_hits: Some(hits),
            keyspace_misses: Some(misses),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_is_told_in_words_not_as_debug_text() {
        let e = Error::new(
            ErrorKind::IO,
            r#"Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#,
        );
        assert_eq!(in_words(&e), "I/O error: connection refused");
        let e = Error::new(ErrorKind::IO, "Kind(UnexpectedEof)");
        assert_eq!(in_words(&e), "I/O error: unexpected eof");
    }

    #[test]
    fn redis_saying_it_cannot_serve_for_now_is_unavailable_not_a_wrong_request() {
        for details in [
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script",
            "CLUSTERDOWN The cluster is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "MASTERDOWN Link with MASTER is down",
            "READONLY You can't write against a read only replica.",
        ] {
            let e = Error::new(ErrorKind::Unknown, details);
            assert!(
                matches!(classify(&e), ExecError::Unavailable(_)),
                "{details}"
            );
        }
        // No connection to send it on (between a drop and the reconnect): it was never sent.
        let e = Error::new(ErrorKind::Unknown, "Failed to route command.");
        assert!(matches!(classify(&e), ExecError::Unavailable(_)));
        let e = Error::new(
            ErrorKind::Unknown,
            "ERR RANKD_RANGE 0 value: must be finite",
        );
        assert!(matches!(classify(&e), ExecError::Reply(_)));
    }

    #[test]
    fn a_call_sent_and_not_answered_may_have_run() {
        for kind in [ErrorKind::Timeout, ErrorKind::IO, ErrorKind::Canceled] {
            let e = Error::new(kind.clone(), "Request timed out.");
            assert!(matches!(classify(&e), ExecError::Unanswered(_)), "{kind:?}");
        }
    }
}
