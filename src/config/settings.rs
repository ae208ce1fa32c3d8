//! Every setting of rankd, declared once: its name (the rankd.toml key; `RANKD_` and the name in
//! upper case is its variable, `--` and the name with dashes its flag), its [`Config`] field and
//! type, its default, its kind (which checks its limits), the commands with a flag for it, and
//! what it does, in the Markdown of the README's configuration table, which a test renders from
//! here. A new setting is one declaration here, and its row in the README.
//!
//! The first paragraph of a doc comment is `--help`'s; the whole of it, the README's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::kinds::{
    Address, ApiKeys, HeaderSecret, KeyPrefix, Millis, OneOf, OptionalPath, PostgresUrl, RedisUrl,
    Secs, Switch, Whole,
};
use super::{ApiKey, LogFormat};
use crate::engine::Durability;

settings! {
    /// listen address; port 0 picks a free port
    listen: SocketAddr = "127.0.0.1:8080", Address, flag(Serve);

    /// `redis://host:port[/db]` or `redis-cluster://host:port?node=host:port&node=…`;
    /// `rediss://…` and `rediss-cluster://…` for the same over TLS; none runs the embedded engine.
    ///
    /// Over TLS the server's certificate must chain to a system certificate authority (or to
    /// `redis_ca_file`) and name the host connected to: a cluster's nodes by the address the
    /// cluster announces for them
    redis_url: Option<String> = "", RedisUrl, flag(Serve, Admin);

    /// a PEM file of the certificate authorities a `rediss://` server's certificate must chain to,
    /// in place of the system's (a private CA); only with a `rediss://` or `rediss-cluster://`
    /// `redis_url`
    redis_ca_file: Option<PathBuf> = "", OptionalPath, flag(Serve, Admin);

    /// prefix of every Redis key
    key_prefix: String = "rankd:", KeyPrefix, flag(Serve, Admin);

    /// `KEY:ROLES,KEY:ROLES` (keys of visible ASCII), roles joined by `+` from `read`, `write`,
    /// `admin`, e.g. `k1:read,k2:read+write,k3:admin`.
    ///
    /// With no keys (an empty value included), every request addressed to a loopback host (`Host`
    /// of `localhost`, 127.0.0.0/8 or `[::1]`; anything else answers 403 naming `host`, so a web
    /// page that reaches 127.0.0.1 under a name of its own cannot use it) is allowed, rankd
    /// refuses to listen on anything but loopback, and it logs a `NO AUTHENTICATION` warning at
    /// start. Other users of the host can read a process's arguments: the variable or the file
    /// keeps keys out of their sight, the flag does not
    api_keys: Vec<ApiKey> = "", ApiKeys, flag(Serve);

    /// read routes need no key (any known key may read too; an unknown key still gets 401)
    public_reads: bool = "false", Switch, flag(Serve);

    /// the bearer key `/metrics` requires (`Authorization: Bearer <key>`, as Prometheus'
    /// `authorization` scrape setting sends it); none leaves `/metrics` open
    metrics_key: Option<String> = "", HeaderSecret, flag(Serve);

    /// one `rankd_board_members{board}` series per board on `/metrics`; `false` drops them, so
    /// that scraping reveals no board ids
    metrics_boards: bool = "true", Switch, flag(Serve);

    /// requests a second each API key may make, and callers without a key (public reads; every
    /// caller when no key is configured) together; 0: no limit.
    ///
    /// Past it a request answers 429 `rate-limited` with `Retry-After`. Each instance counts its
    /// own
    rate_limit: u32 = "0", Whole<0, 1_000_000>, flag(Serve);

    /// log format: lines of text, or a JSON object per line
    log_format: LogFormat = "text", OneOf, flag(Serve);

    /// largest request body, in bytes
    max_body_bytes: usize = "1048576", Whole<1024, { 64 << 20 }>;

    /// connections served at once; more wait in the kernel backlog
    max_connections: usize = "1024", Whole<1, 1_000_000>;

    /// seconds allowed for a client's headers, separately for its body, and for reading an answer:
    /// a client that leaves an answer unread this long is disconnected
    read_timeout_secs => read_timeout: Duration = "10", Secs<1, 3600>;

    /// seconds in-flight requests get to finish on SIGTERM/SIGINT
    shutdown_grace_secs => shutdown_grace: Duration = "10", Secs<0, 3600>;

    /// how many seconds event ids are remembered
    dedupe_window_secs => dedupe_window: Duration = "86400", Secs<0, 2_592_000>;

    /// most single score events of one board that one script call carries.
    ///
    /// Events posted to a board while a call for it is in flight go together as its next call, in
    /// arrival order, each answered as if sent alone; an idle server sends each at once. 1 sends
    /// every event alone
    write_share: usize = "64", Whole<1, 1000>;

    /// Redis connections.
    ///
    /// Each pipelines the commands in flight on it: more connections cost Redis and rankd a
    /// syscall per command (at 16 concurrent submits, 4 connections cost Redis ~30% more CPU per
    /// submit than 2)
    redis_pool_size: usize = "2", Whole<1, 256>;

    /// how many milliseconds a Redis command may wait for its answer.
    ///
    /// A write not answered in time may still be applied by Redis: it is answered 503
    /// `unconfirmed`, to be resent only with the same `event_id`
    redis_timeout_ms => redis_timeout: Duration = "5000", Millis<50, 600_000>;

    /// how often, in seconds, board sizes and backend health are sampled for `/metrics`
    metrics_sample_secs => metrics_sample: Duration = "15", Secs<1, 3600>;

    /// the durable store, `postgres://user@host:port/db` or any other form libpq takes.
    ///
    /// User, password, host (a Unix socket directory too), port and `sslmode` as parameters
    /// (`postgres:///rankd?host=/var/run/postgresql&user=rankd`); without a user, `PGUSER`, then
    /// the operating-system user. TLS as libpq's `sslmode` says: `prefer` (the default) and
    /// `require` encrypt without checking the certificate, `verify-ca` checks it chains to a
    /// system certificate authority or to the PEM file `sslrootcert=` names, `verify-full` that it
    /// also names the host. None keeps scores in Redis only
    database_url: Option<String> = "", PostgresUrl, flag(Serve, Admin);

    /// when a write is answered: `sync` after the store commits it; `async` after Redis applied
    /// it, the store catching up.
    ///
    /// With `async`, the lag is in `rankd_store_lag_seconds`, and writes answered in the moment
    /// before rankd and Redis die together are lost
    durability: Durability = "sync", OneOf, flag(Serve);

    /// how often, in seconds, every key is snapshotted into the store
    snapshot_interval_secs => snapshot_interval: Duration = "300", Secs<10, 604_800>;

    /// how many days snapshots are kept
    snapshot_retention_days: u32 = "30", Whole<1, 3650>;

    /// the embedded engine's SQLite store; empty keeps the embedded engine in memory only
    data_dir: Option<PathBuf> = "rankd-data", OptionalPath;

    /// seconds a cached leaderboard page (`top`, and `entries` by offset, to a depth of 1,000) is
    /// kept; 0 turns that cache off.
    ///
    /// A write that changes what a page shows drops it on every instance before the write is
    /// answered (see [Caches](#caches)), so this bounds memory, not staleness
    cache_ttl_leaderboard_secs => cache_ttl_leaderboard: Duration = "300", Secs<0, 604_800>, flag(Serve);

    /// seconds a cached member analytics answer is kept; 0 turns that cache off
    cache_ttl_analytics_secs => cache_ttl_analytics: Duration = "600", Secs<0, 604_800>, flag(Serve);

    /// seconds a cached scope statistics answer is kept; 0 turns that cache off
    cache_ttl_scope_stats_secs => cache_ttl_scope_stats: Duration = "1800", Secs<0, 604_800>, flag(Serve);

    /// seconds a cached achievements answer is kept; 0 turns that cache off
    cache_ttl_achievements_secs => cache_ttl_achievements: Duration = "3600", Secs<0, 604_800>, flag(Serve);

    /// bytes the answer caches of one instance may hold together; past it the least recently used
    /// entries go
    cache_max_bytes: usize = "67108864", Whole<{ 1 << 20 }, { 1 << 40 }>, flag(Serve);

    /// mebibytes the embedded engine's Lua state may hold (its keyspace is not counted).
    ///
    /// A script that needs more fails with `not enough memory`, as an error reply, and the engine
    /// goes on; rankd's largest calls need about 12
    lua_memory_mb: usize = "128", Whole<16, 65536>;
}
