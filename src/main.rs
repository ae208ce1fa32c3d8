//! The `rankd` binary: parse the command line, start logging, load the configuration, call the library.

use std::process::ExitCode;

use clap::Parser;
use rankd::cli::{Cli, Command};
use rankd::config::Config;
use rankd::logging::Sink;

/// mimalloc rather than the system allocator: every request allocates and frees small buffers on
/// two or more threads, where glibc malloc took a sixth of the server's CPU in a profile of member
/// reads (bench/HISTORY.md, "The allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `rankd admin` keeps standard output for its results, and 1 for "a difference was found".
    let (layer, sink, failed) = match &cli.command {
        Command::Serve(args) => (args.layer(), Sink::Stdout, ExitCode::FAILURE),
        Command::Admin(args) => (args.layer(), Sink::Stderr, rankd::admin::FAILED.into()),
    };
    let config = match Config::load(cli.config.as_deref(), std::env::vars(), layer) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("rankd: configuration: {e}");
            return failed;
        }
    };
    rankd::logging::init(config.log_format, sink);
    match cli.command {
        Command::Serve(_) => rankd::serve::main(config).await,
        Command::Admin(args) => rankd::admin::main(&config, &args).await,
    }
}
