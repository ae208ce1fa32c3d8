//! The `rankd` binary: parse the command line, start logging, load the configuration, call the library.

use anyhow::Context;
use clap::Parser;
use rankd::cli::{Cli, Command};
use rankd::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

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
    }
    Ok(())
}
