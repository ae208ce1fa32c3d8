//! The `rankd` binary: parse the command line, start logging, load the configuration, call the library.

use anyhow::Context;
use clap::Parser;
use rankd::admin::{Admin, ServerStats};
use rankd::board::BoardId;
use rankd::cli::{AdminArgs, AdminCommand, Cli, Command};
use rankd::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than the system allocator: every request allocates and frees small buffers on
/// two or more threads, where glibc malloc took a sixth of the server's CPU in a profile of member
/// reads (bench/HISTORY.md, "The allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("RANKD_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
fn on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
        token.cancel();
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(cli.config.as_deref(), std::env::vars(), args.layer())
                .context("configuration")?;
            init_logging(config.log_format);
            let shutdown = CancellationToken::new();
            on_signal(shutdown.clone());
            rankd::serve::serve(config, shutdown).await?;
        }
        Command::Admin(args) => {
            let config = Config::load(cli.config.as_deref(), std::env::vars(), args.layer())
                .context("configuration")?;
            init_logging(config.log_format);
            let code = admin(&config, &args).await?;
            std::process::exit(code);
        }
    }
    Ok(())
}

/// Runs one admin command; returns the exit status.
async fn admin(config: &Config, args: &AdminArgs) -> anyhow::Result<i32> {
    let board = |b: &Option<String>| -> anyhow::Result<Option<BoardId>> {
        Ok(b.as_deref().map(BoardId::parse).transpose()?)
    };
    let dry = args.dry_run;
    if let AdminCommand::ClearCaches {
        boards: true,
        yes: false,
    } = args.command
    {
        anyhow::bail!(
            "clear-caches --boards removes every board's Redis keys: add --yes to confirm"
        );
    }
    if let AdminCommand::PairStore { yes: false } = args.command {
        if !dry {
            anyhow::bail!(
                "pair-store makes rankd store into this store although it lacks the history Redis \
                 was built from, which then stays lost: add --yes to confirm"
            );
        }
    }
    let a = Admin::connect(config).await?;
    let (lines, code) = match &args.command {
        AdminCommand::Migrate => {
            let m = a.migrate(dry).await?;
            let verb = if dry { "pending" } else { "applied" };
            let mut lines: Vec<String> = m.iter().map(|m| format!("{verb}: {m}")).collect();
            if lines.is_empty() {
                lines.push("the store is up to date".into());
            }
            (lines, 0)
        }
        AdminCommand::Snapshot { board: b } => (a.snapshot(board(b)?.as_ref(), dry).await?, 0),
        AdminCommand::Warm { board: b } => (a.warm(board(b)?.as_ref(), dry).await?, 0),
        AdminCommand::Verify { board: b } => {
            let diffs = a.verify(board(b)?.as_ref(), dry).await?;
            let code = i32::from(!dry && !diffs.is_empty());
            if !dry && diffs.is_empty() {
                (vec!["Redis and the store agree".to_owned()], 0)
            } else {
                (diffs, code)
            }
        }
        AdminCommand::ClearCaches { boards, .. } => (a.clear_caches(*boards, dry).await?, 0),
        AdminCommand::Analyze { server, api_key } => {
            let server = match server {
                Some(url) => Some(ServerStats::fetch(url, api_key.as_deref()).await?),
                None => None,
            };
            (a.analyze(server.as_ref()).await?, 0)
        }
        AdminCommand::Optimize => (a.optimize(dry).await?, 0),
        AdminCommand::PairStore { .. } => (a.pair_store(dry).await?, 0),
    };
    for l in lines {
        println!("{l}");
    }
    Ok(code)
}
