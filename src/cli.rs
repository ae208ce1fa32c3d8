//! The command line: `rankd serve` and `rankd admin …`.

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
    /// Operate the durable store and Redis (exit status 2 on an error).
    Admin(AdminArgs),
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
    /// API keys, KEY:ROLES,… (RANKD_API_KEYS). Other users of the host can read a process's
    /// arguments: RANKD_API_KEYS or the file keeps keys out of sight.
    #[arg(long)]
    pub api_keys: Option<String>,
    /// Read routes need no key (RANKD_PUBLIC_READS): `--public-reads` or `--public-reads=false`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub public_reads: Option<String>,
    /// The bearer key /metrics requires (RANKD_METRICS_KEY).
    #[arg(long)]
    pub metrics_key: Option<String>,
    /// One series per board on /metrics (RANKD_METRICS_BOARDS): `--metrics-boards=false` drops them.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub metrics_boards: Option<String>,
    /// Requests a second per API key, and for callers without one (RANKD_RATE_LIMIT; 0: none).
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Log format, text or json (RANKD_LOG_FORMAT).
    #[arg(long)]
    pub log_format: Option<String>,
    /// The durable store (RANKD_DATABASE_URL): postgres://user@host:port/db.
    #[arg(long)]
    pub database_url: Option<String>,
    /// sync or async (RANKD_DURABILITY).
    #[arg(long)]
    pub durability: Option<String>,
}

impl ServeArgs {
    /// The flags given, as a configuration layer.
    pub fn layer(&self) -> Layer {
        let mut l = Layer::new();
        for (name, v) in [
            ("listen", &self.listen),
            ("redis_url", &self.redis_url),
            ("key_prefix", &self.key_prefix),
            ("api_keys", &self.api_keys),
            ("public_reads", &self.public_reads),
            ("metrics_key", &self.metrics_key),
            ("metrics_boards", &self.metrics_boards),
            ("rate_limit", &self.rate_limit),
            ("log_format", &self.log_format),
            ("database_url", &self.database_url),
            ("durability", &self.durability),
        ] {
            if let Some(v) = v {
                l.push((name, v.clone()));
            }
        }
        l
    }
}

/// `rankd admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Print what would be done; change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Redis URL (RANKD_REDIS_URL).
    #[arg(long, global = true)]
    pub redis_url: Option<String>,
    /// The durable store (RANKD_DATABASE_URL).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Prefix of every Redis key (RANKD_KEY_PREFIX).
    #[arg(long, global = true)]
    pub key_prefix: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

impl AdminArgs {
    /// The flags given, as a configuration layer.
    pub fn layer(&self) -> Layer {
        let mut l = Layer::new();
        for (name, v) in [
            ("redis_url", &self.redis_url),
            ("database_url", &self.database_url),
            ("key_prefix", &self.key_prefix),
        ] {
            if let Some(v) = v {
                l.push((name, v.clone()));
            }
        }
        l
    }
}

/// Administrative commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create or upgrade the store's tables and indexes.
    Migrate,
    /// Snapshot every key (of one board) into the store.
    Snapshot {
        /// Only this board.
        #[arg(long)]
        board: Option<String>,
    },
    /// Rebuild Redis from the store where it lost boards or acknowledged operations.
    Warm {
        /// Only this board.
        #[arg(long)]
        board: Option<String>,
    },
    /// Compare Redis with the store (without Redis, the store with itself); exit status 1 on any
    /// difference, 2 when it cannot compare.
    Verify {
        /// Only this board.
        #[arg(long)]
        board: Option<String>,
    },
    /// Clear derived data; with --boards --yes, board keys in Redis too (the store keeps them).
    ClearCaches {
        /// Also remove the boards' Redis keys.
        #[arg(long)]
        boards: bool,
        /// Confirm --boards.
        #[arg(long)]
        yes: bool,
    },
    /// Report sizes, lag, script latencies, cache hit rates, query plans and recommendations.
    Analyze {
        /// A running rankd server (http://host:port) whose own cache hit rates to include.
        #[arg(long)]
        server: Option<String>,
        /// The API key to send to --server (read role), if it requires one.
        #[arg(long, env = "RANKD_ANALYZE_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// migrate, warm, snapshot, analyze.
    Optimize,
    /// Pair Redis with the store RANKD_DATABASE_URL names, when it is another than the store Redis
    /// was built from (that one lost, this one lacking its history): rankd then stores into it again.
    PairStore {
        /// Confirm: the history the store lacks stays lost.
        #[arg(long)]
        yes: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LogFormat, Role};

    fn serve(args: &[&str]) -> Config {
        let cli = Cli::try_parse_from(["rankd", "serve"].iter().chain(args)).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        Config::load(None, Vec::new(), s.layer()).unwrap()
    }

    #[test]
    fn every_contract_setting_has_its_flag_over_its_variable() {
        let env = vec![
            ("RANKD_API_KEYS".to_owned(), "env-key:read".to_owned()),
            ("RANKD_PUBLIC_READS".to_owned(), "false".to_owned()),
        ];
        let cli = Cli::try_parse_from([
            "rankd",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--key-prefix",
            "flags:",
            "--api-keys",
            "k1:read,k3:admin",
            "--public-reads",
            "--log-format",
            "json",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        let c = Config::load(None, env, s.layer()).unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.key_prefix, "flags:");
        assert!(c.public_reads);
        assert_eq!(c.log_format, LogFormat::Json);
        let keys: Vec<_> = c.api_keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["k1", "k3"], "the flag's keys replace the variable's");
        assert!(c.api_keys[1].grants(Role::Admin) && !c.api_keys[0].grants(Role::Write));
        assert!(!serve(&["--public-reads=false"]).public_reads);
        assert!(serve(&["--public-reads=true"]).public_reads);
        assert!(Cli::try_parse_from(["rankd", "serve", "--public-reads", "maybe"]).is_err());
        let c = Config::load(
            None,
            vec![
                ("RANKD_METRICS_KEY".to_owned(), "env".to_owned()),
                ("RANKD_METRICS_BOARDS".to_owned(), "true".to_owned()),
            ],
            match Cli::try_parse_from([
                "rankd",
                "serve",
                "--metrics-key",
                "flag",
                "--metrics-boards=false",
            ])
            .unwrap()
            .command
            {
                Command::Serve(s) => s.layer(),
                Command::Admin(_) => panic!("not serve"),
            },
        )
        .unwrap();
        assert_eq!(c.metrics_key.as_deref(), Some("flag"));
        assert!(!c.metrics_boards);
        assert!(serve(&[]).metrics_boards);
    }
}
