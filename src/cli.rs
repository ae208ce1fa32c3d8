//! The command line: `rankd serve` and friends.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Layer;

/// A Redis-native leaderboard engine.
#[derive(Debug, Parser)]
#[command(name = "rankd", version, about)]
pub struct Cli {
    /// A rankd.toml file (default: ./rankd.toml when it exists).
    #[arg(long, global = true, env = "RANKD_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
}

/// Flags of `rankd serve`; each overrides its `RANKD_*` variable and the file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (RANKD_LISTEN; default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// Redis URL (RANKD_REDIS_URL): redis://host:port or redis-cluster://host:port?node=host:port.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (RANKD_KEY_PREFIX; default rankd:).
    #[arg(long)]
    pub key_prefix: Option<String>,
    /// Log format, text or json (RANKD_LOG_FORMAT).
    #[arg(long)]
    pub log_format: Option<String>,
}

impl ServeArgs {
    /// The flags given, as a configuration layer.
    pub fn layer(&self) -> Layer {
        let mut l = Layer::new();
        for (name, v) in [
            ("listen", &self.listen),
            ("redis_url", &self.redis_url),
            ("key_prefix", &self.key_prefix),
            ("log_format", &self.log_format),
        ] {
            if let Some(v) = v {
                l.push((name, v.clone()));
            }
        }
        l
    }
}
