//! rankd: a Redis-native leaderboard engine.
//!
//! - [`admin`]: the operator's commands: migrate, snapshot, warm, verify, clear-caches, analyze
//! - [`logging`]: the log filter and format, and where log lines go
//! - [`board`]: ids, members, scopes, scores and board definitions, parsed at the edge
//! - [`window`]: UTC periods (daily, ISO week, month) and their expiry
//! - [`keys`]: the only place a Redis key is formatted
//! - [`engine`]: submit, batch, removal and every read, over a script executor
//! - [`backend`]: script executors (Redis through fred)
//! - [`config`]: defaults, rankd.toml and `RANKD_*` environment
//! - [`http`]: the HTTP endpoint (hyper, no framework)
//! - [`metrics`]: every metric name, described
//! - [`serve`]: wires configuration, backend, engine and server together
//! - [`store`]: the durable store (Postgres, or SQLite for the embedded engine): operation log,
//!   persister, rebuild, snapshots
//! - [`tls`]: TLS to Redis and Postgres: trusted authorities, rediss:// client configuration
//! - [`error`]: typed errors
//! - [`invalid`]: bad input, naming the field and the limit (a leaf: it imports nothing of the crate)
//! - [`clock`]: where the time is read (a leaf), injectable for tests

pub mod admin;
pub mod backend;
pub mod board;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod invalid;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod serve;
pub mod store;
pub mod tls;
pub mod window;

pub use engine::Engine;
pub use error::{Error, Invalid, Result};
