//! The command line: `rankd serve` and `rankd admin …`.

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::{Arg, ArgMatches, Parser, Subcommand};

use crate::config::{FlagIn, Layer, Setting, SETTINGS};

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

/// Flags of `rankd serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The settings' flags.
    #[command(flatten)]
    pub settings: SettingFlags,
}

impl ServeArgs {
    /// The flags given, as a configuration layer.
    pub fn layer(&self) -> Layer {
        self.settings.layer()
    }
}

/// `rankd admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Print what would be done; change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// The settings' flags, taken by every admin command.
    #[command(flatten)]
    pub settings: SettingFlags,
    /// The command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

impl AdminArgs {
    /// The flags given, as a configuration layer.
    pub fn layer(&self) -> Layer {
        self.settings.layer()
    }
}

/// The flags of the settings that declare one for the command this is flattened into (`serve`,
/// `admin`: see [`FlagIn`]), each overriding its `RANKD_*` variable and the file. They are made
/// from [`SETTINGS`]: a flag's help is the first paragraph of its setting's doc.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags {
    given: Layer,
}

impl SettingFlags {
    /// The flags given, as a configuration layer.
    pub fn layer(&self) -> Layer {
        self.given.clone()
    }
}

/// Each setting's long flag and value name (`redis-url`, `REDIS_URL`), kept for the life of the
/// process since clap borrows them.
static FLAG_NAMES: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    SETTINGS
        .iter()
        .map(|s| (s.flag(), s.name.to_ascii_uppercase()))
        .collect()
});

/// `text` with its Markdown code spans as plain text.
fn plain(text: &str) -> String {
    text.replace('`', "")
}

/// A paragraph of a setting's doc as help: plain text, a sentence's first letter capitalised (not
/// a code span's: `redis://…` stays as it is).
fn sentence(paragraph: &str) -> String {
    let mut chars = paragraph.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() => {
            c.to_ascii_uppercase().to_string() + &plain(chars.as_str())
        }
        _ => plain(paragraph),
    }
}

/// The flag of `setting`.
fn flag_arg(setting: &'static Setting, (long, value_name): &'static (String, String)) -> Arg {
    let default = match setting.default {
        "" => "none",
        d => d,
    };
    let values = match plain(&setting.values()) {
        v if v.is_empty() => String::new(),
        v => format!("{v}; "),
    };
    let about = format!("({}; {values}default {default})", setting.env_var());
    let paragraphs = setting.paragraphs();
    let mut arg = Arg::new(setting.name)
        .long(long.as_str())
        .value_name(value_name.as_str())
        .value_parser(clap::value_parser!(String))
        .help(format!(
            "{} {about}",
            sentence(paragraphs.first().map_or("", String::as_str))
        ));
    if paragraphs.len() > 1 {
        let text: Vec<String> = paragraphs.iter().map(|p| sentence(p)).collect();
        arg = arg.long_help(format!("{}\n\n{about}", text.join("\n\n")));
    }
    if setting.switch {
        // `--public-reads` alone is true; `--public-reads=false` says otherwise.
        arg = arg
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true");
    }
    arg
}

impl clap::Args for SettingFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let on = FlagIn::of(cmd.get_name()).unwrap_or_else(|| {
            panic!(
                "settings declare no flags for the command {:?}",
                cmd.get_name()
            )
        });
        // A subcommand of `admin` takes them too: `rankd admin warm --redis-url …`.
        let global = on == FlagIn::Admin;
        let args: Vec<Arg> = SETTINGS
            .iter()
            .zip(FLAG_NAMES.iter())
            .filter(|(s, _)| s.flags.contains(&on))
            .map(|(s, names)| flag_arg(s, names).global(global))
            .collect();
        cmd.args(args)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        // In the order of the declarations, as the other layers; a flag given replaces the one
        // held. A setting without a flag here is no argument of these matches.
        let mut given = Layer::new();
        for s in SETTINGS {
            let now = matches.try_get_one::<String>(s.name).ok().flatten();
            let held = self
                .given
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, v)| v);
            if let Some(v) = now.or(held) {
                given.push((s.name, v.clone()));
            }
        }
        self.given = given;
        Ok(())
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
    /// With --server, a running server's answer caches instead (every instance within a second).
    ClearCaches {
        /// Also remove the boards' Redis keys.
        #[arg(long, conflicts_with = "server")]
        boards: bool,
        /// Confirm --boards.
        #[arg(long, conflicts_with = "server")]
        yes: bool,
        /// A running rankd server (http://host:port) whose answer caches to clear.
        #[arg(long)]
        server: Option<String>,
        /// Only these answer caches (leaderboard, analytics, scope_stats, achievements; default:
        /// every one).
        #[arg(long, value_delimiter = ',', requires = "server")]
        caches: Vec<String>,
        /// Only this board's entries.
        #[arg(long, requires = "server")]
        board: Option<String>,
        /// The API key to send to --server (admin role), if it requires one.
        #[arg(
            long,
            env = "RANKD_API_KEY",
            hide_env_values = true,
            requires = "server"
        )]
        api_key: Option<String>,
    },
    /// Read a board's top pages into a running server's leaderboard cache now.
    WarmCaches {
        /// The running rankd server (http://host:port).
        #[arg(long)]
        server: String,
        /// The board.
        #[arg(long)]
        board: String,
        /// Its window (default: all).
        #[arg(long)]
        window: Option<String>,
        /// The period (default: the current one).
        #[arg(long)]
        period: Option<String>,
        /// One page per scope (default: the global board).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Entries per page, 1 to 1000 (default: 20).
        #[arg(long)]
        limit: Option<i64>,
        /// The API key to send to --server (admin role), if it requires one.
        #[arg(long, env = "RANKD_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Report sizes, lag, script latencies, cache hit rates, query plans and recommendations.
    Analyze {
        /// A running rankd server (http://host:port) whose own cache figures to include.
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

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn each_command_takes_the_flags_its_settings_declare_and_no_other() {
        for on in [FlagIn::Serve, FlagIn::Admin] {
            for s in SETTINGS {
                let flag = format!("--{}={}", s.flag(), s.default);
                let mut args = vec!["rankd", on.command(), flag.as_str()];
                if on == FlagIn::Admin {
                    args.push("migrate");
                }
                let layer = Cli::try_parse_from(&args).map(|cli| match cli.command {
                    Command::Serve(s) => s.layer(),
                    Command::Admin(a) => a.layer(),
                });
                if s.flags.contains(&on) {
                    assert_eq!(
                        layer.unwrap(),
                        vec![(s.name, s.default.to_owned())],
                        "{args:?}"
                    );
                } else {
                    assert!(layer.is_err(), "{args:?} should be refused");
                }
            }
        }
    }

    #[test]
    fn admin_flags_come_before_or_after_its_command() {
        let cli = Cli::try_parse_from([
            "rankd",
            "admin",
            "--redis-url",
            "redis://127.0.0.1:1",
            "warm",
            "--key-prefix",
            "p:",
            "--database-url",
            "postgres://db/rankd",
            "--dry-run",
        ])
        .unwrap();
        let Command::Admin(a) = cli.command else {
            panic!("not admin")
        };
        assert!(a.dry_run);
        assert_eq!(
            a.layer(),
            vec![
                ("redis_url", "redis://127.0.0.1:1".to_owned()),
                ("key_prefix", "p:".to_owned()),
                ("database_url", "postgres://db/rankd".to_owned()),
            ]
        );
    }
}
