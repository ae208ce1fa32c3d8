//! Configuration: defaults, then a rankd.toml file, then `RANKD_*` environment variables, then flags;
//! validated once, so that a bad setting fails the start with a message naming it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Invalid;

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read ranks and statistics.
    Read,
    /// Submit scores, remove members, set display data.
    Write,
    /// Define and delete boards (implies read and write).
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// One API key and its roles.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The secret clients send as `Authorization: Bearer <key>`.
    pub key: String,
    /// What it may do.
    pub roles: Vec<Role>,
}

impl std::fmt::Debug for ApiKey {
    // Keys are secrets: never printed, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

impl ApiKey {
    /// Whether this key grants `role` (admin grants everything).
    pub fn grants(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// Parses `KEY:ROLES,KEY:ROLES`, roles joined by `+` from read, write, admin.
    ///
    /// # Errors
    /// [`Invalid`] naming `api_keys` and the entry at fault (by position, never by its secret).
    pub fn parse_list(s: &str) -> Result<Vec<ApiKey>, Invalid> {
        let mut out: Vec<ApiKey> = Vec::new();
        for (i, entry) in s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let field = format!("api_keys[{i}]");
            let Some((key, roles)) = entry.rsplit_once(':') else {
                return Err(Invalid::new(field, "must be KEY:ROLES, e.g. k1:read+write"));
            };
            // A key travels in an HTTP header: outside visible ASCII it could never be sent, and
            // would fail every request with 401 rather than the start with this message.
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic()) {
                return Err(Invalid::new(
                    field,
                    "the key must be non-empty, of visible ASCII characters (no white space)",
                ));
            }
            let roles = roles
                .split('+')
                .map(|r| {
                    Role::parse(r.trim()).ok_or_else(|| {
                        Invalid::new(
                            field.clone(),
                            format!(
                                "unknown role {r:?} (expected read, write or admin, joined by +)"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if out.iter().any(|k| k.key == key) {
                return Err(Invalid::new(field, "the same key is listed twice"));
            }
            out.push(ApiKey {
                key: key.to_owned(),
                roles,
            });
        }
        Ok(out)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `rankd serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP endpoint listens (`RANKD_LISTEN`, default 127.0.0.1:8080; port 0 picks one).
    pub listen: SocketAddr,
    /// `redis://…` or `redis-cluster://host:port?node=host:port…` (`RANKD_REDIS_URL`); none runs the
    /// embedded engine.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (`RANKD_KEY_PREFIX`, default `rankd:`).
    pub key_prefix: String,
    /// API keys (`RANKD_API_KEYS`); none means no authentication, allowed on loopback only.
    pub api_keys: Vec<ApiKey>,
    /// Whether reads need no key (`RANKD_PUBLIC_READS`).
    pub public_reads: bool,
    /// The bearer key `/metrics` requires (`RANKD_METRICS_KEY`); none leaves it open.
    pub metrics_key: Option<String>,
    /// Requests a second each API key may make, and callers without a key together
    /// (`RANKD_RATE_LIMIT`, default 0: no limit).
    pub rate_limit: u32,
    /// Whether `/metrics` has a series per board (`RANKD_METRICS_BOARDS`, default true): the board
    /// ids are then visible to whoever scrapes it.
    pub metrics_boards: bool,
    /// Log format (`RANKD_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Largest request body (`RANKD_MAX_BODY_BYTES`, default 1 MiB).
    pub max_body_bytes: usize,
    /// Most connections served at once (`RANKD_MAX_CONNECTIONS`, default 1024).
    pub max_connections: usize,
    /// How long a client may take to send its headers, and separately its body, and how long an
    /// answer's write may wait for the client to read (`RANKD_READ_TIMEOUT_SECS`, default 10).
    pub read_timeout: Duration,
    /// How long in-flight requests get to finish on shutdown (`RANKD_SHUTDOWN_GRACE_SECS`, default 10).
    pub shutdown_grace: Duration,
    /// How long event ids are remembered (`RANKD_DEDUPE_WINDOW_SECS`, default 86400).
    pub dedupe_window: Duration,
    /// Redis connections (`RANKD_REDIS_POOL_SIZE`, default 2). Each pipelines the commands in flight
    /// on it, so a few connections carry any load; more cost Redis and rankd a syscall per command.
    pub redis_pool_size: usize,
    /// How long a Redis command may wait for its answer (`RANKD_REDIS_TIMEOUT_MS`, default 5000).
    /// A write not answered in time is reported as possibly applied.
    pub redis_timeout: Duration,
    /// How often board sizes are sampled for the metrics (`RANKD_METRICS_SAMPLE_SECS`, default 15).
    pub metrics_sample: Duration,
    /// The durable store, `postgres://user@host:port/db` (`RANKD_DATABASE_URL`); none keeps scores
    /// in Redis only.
    pub database_url: Option<String>,
    /// When writes are answered: `sync` (after the store commits) or `async` (`RANKD_DURABILITY`).
    pub durability: crate::engine::Durability,
    /// Where the embedded engine keeps its durable store, an SQLite file (`RANKD_DATA_DIR`, default
    /// ./rankd-data; empty keeps the embedded engine in memory only).
    pub data_dir: Option<PathBuf>,
    /// How often every key is snapshotted into the store (`RANKD_SNAPSHOT_INTERVAL_SECS`, default 300).
    pub snapshot_interval: Duration,
    /// How long snapshots are kept (`RANKD_SNAPSHOT_RETENTION_DAYS`, default 30).
    pub snapshot_retention_days: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis_url: None,
            key_prefix: "rankd:".into(),
            api_keys: Vec::new(),
            public_reads: false,
            metrics_key: None,
            metrics_boards: true,
            rate_limit: 0,
            log_format: LogFormat::Text,
            max_body_bytes: 1 << 20,
            max_connections: 1024,
            read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            dedupe_window: Duration::from_secs(24 * 3600),
            redis_pool_size: 2,
            redis_timeout: Duration::from_secs(5),
            metrics_sample: Duration::from_secs(15),
            database_url: None,
            durability: crate::engine::Durability::Sync,
            data_dir: Some(PathBuf::from("rankd-data")),
            snapshot_interval: Duration::from_secs(300),
            snapshot_retention_days: 30,
        }
    }
}

/// The settings a rankd.toml file may hold: the same names as the environment, lower case without
/// the `RANKD_` prefix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    redis_url: Option<String>,
    key_prefix: Option<String>,
    api_keys: Option<String>,
    public_reads: Option<bool>,
    metrics_key: Option<String>,
    metrics_boards: Option<bool>,
    rate_limit: Option<u64>,
    log_format: Option<String>,
    max_body_bytes: Option<u64>,
    max_connections: Option<u64>,
    read_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    dedupe_window_secs: Option<u64>,
    redis_pool_size: Option<u64>,
    redis_timeout_ms: Option<u64>,
    metrics_sample_secs: Option<u64>,
    database_url: Option<String>,
    durability: Option<String>,
    snapshot_interval_secs: Option<u64>,
    snapshot_retention_days: Option<u64>,
    data_dir: Option<String>,
}

/// Raw settings from one layer, all strings, before parsing.
pub type Layer = Vec<(&'static str, String)>;

const NAMES: [&str; 22] = [
    "listen",
    "redis_url",
    "key_prefix",
    "api_keys",
    "public_reads",
    "metrics_key",
    "metrics_boards",
    "rate_limit",
    "log_format",
    "max_body_bytes",
    "max_connections",
    "read_timeout_secs",
    "shutdown_grace_secs",
    "dedupe_window_secs",
    "redis_pool_size",
    "redis_timeout_ms",
    "metrics_sample_secs",
    "database_url",
    "durability",
    "snapshot_interval_secs",
    "snapshot_retention_days",
    "data_dir",
];

impl Config {
    /// Loads defaults, then `file` (or ./rankd.toml when it exists), then `RANKD_*` variables from
    /// `env`, then `overrides` (command-line flags).
    ///
    /// # Errors
    /// [`Invalid`] naming the setting at fault.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: Layer,
    ) -> Result<Self, Invalid> {
        let mut layers: Vec<Layer> = Vec::new();
        let default_file = PathBuf::from("rankd.toml");
        let path = file.or_else(|| default_file.exists().then_some(default_file.as_path()));
        if let Some(path) = path {
            layers.push(Self::file_layer(path)?);
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut env_layer = Layer::new();
        for name in NAMES {
            let var = format!("RANKD_{}", name.to_ascii_uppercase());
            if let Some((_, v)) = env.iter().find(|(k, _)| *k == var) {
                env_layer.push((name, v.clone()));
            }
        }
        layers.push(env_layer);
        layers.push(overrides);
        let mut c = Config::default();
        for layer in layers {
            for (name, value) in layer {
                c.set(name, &value)?;
            }
        }
        c.validate()?;
        Ok(c)
    }

    fn file_layer(path: &Path) -> Result<Layer, Invalid> {
        let field = || format!("config file {}", path.display());
        let text =
            std::fs::read_to_string(path).map_err(|e| Invalid::new(field(), e.to_string()))?;
        let f: FileConfig =
            toml::from_str(&text).map_err(|e| Invalid::new(field(), e.to_string()))?;
        let mut l = Layer::new();
        let mut put = |name: &'static str, v: Option<String>| {
            if let Some(v) = v {
                l.push((name, v));
            }
        };
        put("listen", f.listen);
        put("redis_url", f.redis_url);
        put("key_prefix", f.key_prefix);
        put("api_keys", f.api_keys);
        put("public_reads", f.public_reads.map(|b| b.to_string()));
        put("metrics_key", f.metrics_key);
        put("metrics_boards", f.metrics_boards.map(|b| b.to_string()));
        put("rate_limit", f.rate_limit.map(|n| n.to_string()));
        put("log_format", f.log_format);
        put("max_body_bytes", f.max_body_bytes.map(|n| n.to_string()));
        put("max_connections", f.max_connections.map(|n| n.to_string()));
        put(
            "read_timeout_secs",
            f.read_timeout_secs.map(|n| n.to_string()),
        );
        put(
            "shutdown_grace_secs",
            f.shutdown_grace_secs.map(|n| n.to_string()),
        );
        put(
            "dedupe_window_secs",
            f.dedupe_window_secs.map(|n| n.to_string()),
        );
        put("redis_pool_size", f.redis_pool_size.map(|n| n.to_string()));
        put(
            "redis_timeout_ms",
            f.redis_timeout_ms.map(|n| n.to_string()),
        );
        put(
            "metrics_sample_secs",
            f.metrics_sample_secs.map(|n| n.to_string()),
        );
        put("database_url", f.database_url);
        put("durability", f.durability);
        put("data_dir", f.data_dir);
        put(
            "snapshot_interval_secs",
            f.snapshot_interval_secs.map(|n| n.to_string()),
        );
        put(
            "snapshot_retention_days",
            f.snapshot_retention_days.map(|n| n.to_string()),
        );
        Ok(l)
    }

    /// Sets one setting from its string form.
    ///
    /// # Errors
    /// [`Invalid`] naming the setting.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), Invalid> {
        let num = |lo: u64, hi: u64| -> Result<u64, Invalid> {
            value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| {
                    Invalid::new(
                        name,
                        format!("must be a whole number from {lo} to {hi}, got {value:?}"),
                    )
                })
        };
        match name {
            "listen" => {
                self.listen = value.trim().parse().map_err(|_| {
                    Invalid::new(
                        name,
                        format!("must be an address like 127.0.0.1:8080, got {value:?}"),
                    )
                })?;
            }
            "redis_url" => {
                let v = value.trim();
                if v.is_empty() {
                    self.redis_url = None;
                } else if v.starts_with("redis://") || v.starts_with("redis-cluster://") {
                    self.redis_url = Some(v.to_owned());
                } else {
                    // TLS (rediss://) is not built in: say so here rather than fail at connect time.
                    return Err(Invalid::new(
                        name,
                        "must start with redis:// or redis-cluster:// (TLS is not supported)",
                    ));
                }
            }
            "key_prefix" => {
                crate::keys::Keys::new(value).map_err(|e| e.renamed(name))?;
                self.key_prefix = value.to_owned();
            }
            "api_keys" => self.api_keys = ApiKey::parse_list(value)?,
            "public_reads" => self.public_reads = flag(name, value, false)?,
            "metrics_boards" => self.metrics_boards = flag(name, value, true)?,
            "rate_limit" => self.rate_limit = num(0, 1_000_000)? as u32,
            "metrics_key" => {
                let v = value.trim();
                if !v.is_empty() && !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Invalid::new(
                        name,
                        "must be visible ASCII characters (no spaces)",
                    ));
                }
                self.metrics_key = (!v.is_empty()).then(|| v.to_owned());
            }
            "log_format" => {
                self.log_format = match value.trim() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => {
                        return Err(Invalid::new(
                            name,
                            format!("must be text or json, got {value:?}"),
                        ))
                    }
                }
            }
            "max_body_bytes" => self.max_body_bytes = num(1024, 64 << 20)? as usize,
            "max_connections" => self.max_connections = num(1, 1_000_000)? as usize,
            "read_timeout_secs" => self.read_timeout = Duration::from_secs(num(1, 3600)?),
            "shutdown_grace_secs" => self.shutdown_grace = Duration::from_secs(num(0, 3600)?),
            "dedupe_window_secs" => {
                self.dedupe_window = Duration::from_secs(num(0, 30 * 24 * 3600)?)
            }
            "redis_pool_size" => self.redis_pool_size = num(1, 256)? as usize,
            "redis_timeout_ms" => self.redis_timeout = Duration::from_millis(num(50, 600_000)?),
            "metrics_sample_secs" => self.metrics_sample = Duration::from_secs(num(1, 3600)?),
            "database_url" => {
                let v = value.trim();
                if v.is_empty() {
                    self.database_url = None;
                } else if v.starts_with("postgres://") || v.starts_with("postgresql://") {
                    // Every form libpq takes: user, password, host (a Unix socket directory
                    // too), port and sslmode in the URL or as its parameters; without a user,
                    // PGUSER, then the operating-system user, as libpq does.
                    <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(v)
                        .map_err(|e| Invalid::new(name, format!("not a Postgres URL: {e}")))?;
                    self.database_url = Some(v.to_owned());
                } else {
                    return Err(Invalid::new(name, "must start with postgres://"));
                }
            }
            "snapshot_interval_secs" => {
                self.snapshot_interval = Duration::from_secs(num(10, 7 * 24 * 3600)?)
            }
            "snapshot_retention_days" => self.snapshot_retention_days = num(1, 3650)? as u32,
            "data_dir" => {
                let v = value.trim();
                self.data_dir = (!v.is_empty()).then(|| PathBuf::from(v));
            }
            "durability" => {
                self.durability = match value.trim() {
                    "sync" => crate::engine::Durability::Sync,
                    "async" => crate::engine::Durability::Async,
                    _ => {
                        return Err(Invalid::new(
                            name,
                            format!("must be sync or async, got {value:?}"),
                        ))
                    }
                }
            }
            _ => return Err(Invalid::new(name, "is not a rankd setting")),
        }
        Ok(())
    }

    /// Checks settings that depend on each other.
    ///
    /// # Errors
    /// [`Invalid`] naming `listen` when no API key is configured and the address is not loopback.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.api_keys.is_empty() && !self.listen.ip().is_loopback() {
            return Err(Invalid::new(
                "listen",
                format!(
                    "{} is not a loopback address and no API key is configured: set RANKD_API_KEYS \
                     (e.g. RANKD_API_KEYS=\"$(openssl rand -hex 16):admin\") or api_keys in rankd.toml, \
                     or listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

/// A true-or-false setting; empty means `empty`.
fn flag(name: &str, value: &str, empty: bool) -> Result<bool, Invalid> {
    match value.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        "" => Ok(empty),
        _ => Err(Invalid::new(
            name,
            format!("must be true or false, got {value:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn api_keys_parse_roles_and_admin_implies_the_others() {
        let keys = ApiKey::parse_list("k1:read,k2:read+write,k3:admin").unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys[0].grants(Role::Read) && !keys[0].grants(Role::Write));
        assert!(keys[1].grants(Role::Write) && !keys[1].grants(Role::Admin));
        assert!(keys[2].grants(Role::Read) && keys[2].grants(Role::Write));
        assert_eq!(
            ApiKey::parse_list("k1:root").unwrap_err().field,
            "api_keys[0]"
        );
        assert!(ApiKey::parse_list("k1").is_err());
        let e = ApiKey::parse_list("ok:read,clé:read").unwrap_err();
        assert_eq!(e.field, "api_keys[1]");
        assert!(e.message.contains("ASCII"), "{e}");
        assert!(
            !e.message.contains("clé"),
            "the key stays out of the message"
        );
        assert!(
            !format!("{:?}", keys[0]).contains("k1"),
            "keys never reach debug output"
        );
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_the_environment() {
        let dir = std::env::temp_dir().join(format!("rankd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rankd.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nkey_prefix = \"file:\"\npublic_reads = true\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[("RANKD_KEY_PREFIX", "env:")]), vec![]).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.key_prefix, "env:");
        assert!(c.public_reads);
        let c = Config::load(
            Some(&file),
            env(&[]),
            vec![("listen", "127.0.0.1:0".into())],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        std::fs::write(&file, "colour = \"red\"\n").unwrap();
        assert!(Config::load(Some(&file), env(&[]), vec![]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_keys_only_loopback_is_allowed_and_the_error_says_how_to_add_keys() {
        let e = Config::load(None, env(&[("RANKD_LISTEN", "0.0.0.0:8080")]), vec![]).unwrap_err();
        assert_eq!(e.field, "listen");
        assert!(e.message.contains("RANKD_API_KEYS"), "{e}");
        let ok = Config::load(
            None,
            env(&[
                ("RANKD_LISTEN", "0.0.0.0:8080"),
                ("RANKD_API_KEYS", "secret:admin"),
            ]),
            vec![],
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn bad_values_name_the_setting_and_the_limit() {
        let e = Config::load(None, env(&[("RANKD_MAX_BODY_BYTES", "10")]), vec![]).unwrap_err();
        assert_eq!(e.field, "max_body_bytes");
        assert!(e.message.contains("1024"), "{e}");
        assert_eq!(
            Config::load(None, env(&[("RANKD_LOG_FORMAT", "xml")]), vec![])
                .unwrap_err()
                .field,
            "log_format"
        );
        assert_eq!(
            Config::load(None, env(&[("RANKD_REDIS_URL", "http://x")]), vec![])
                .unwrap_err()
                .field,
            "redis_url"
        );
        let e = Config::load(None, env(&[("RANKD_REDIS_TIMEOUT_MS", "10")]), vec![]).unwrap_err();
        assert_eq!(e.field, "redis_timeout_ms");
        assert!(e.message.contains("from 50 to 600000"), "{e}");
        let c = Config::load(None, env(&[("RANKD_REDIS_TIMEOUT_MS", "250")]), vec![]).unwrap();
        assert_eq!(c.redis_timeout, Duration::from_millis(250));
    }

    #[test]
    fn database_urls_take_every_form_libpq_takes() {
        for url in [
            "postgres://rankd:secret@db.internal:5432/rankd",
            "postgresql://db.internal/rankd?sslmode=require",
            "postgres:///rankd?host=/var/run/postgresql&user=root",
            "postgres://%2Fvar%2Frun%2Fpostgresql/rankd",
            "postgres://127.0.0.1:5432/rankd",
            "postgres:///rankd?host=db.internal&port=6432&user=rankd&password=secret&sslmode=verify-full",
        ] {
            let c = Config::load(None, env(&[("RANKD_DATABASE_URL", url)]), vec![]);
            assert_eq!(
                c.map(|c| c.database_url).unwrap(),
                Some(url.to_owned()),
                "{url}"
            );
        }
        for url in [
            "mysql://x/y",
            "postgres://x/y?sslmode=sometimes",
            "postgres://x:notaport/y",
        ] {
            let e = Config::load(None, env(&[("RANKD_DATABASE_URL", url)]), vec![]).unwrap_err();
            assert_eq!(e.field, "database_url", "{url}");
        }
    }
}
