//! Logging: the `RANKD_LOG` filter (default `info`), text or JSON lines, colour only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::LogFormat;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Standard output (`rankd serve`: its output is its log).
    Stdout,
    /// Standard error (`rankd admin`: standard output carries its results).
    Stderr,
}

/// Starts logging in `format` to `sink`. Colour codes only when `sink` is a terminal.
pub fn init(format: LogFormat, sink: Sink) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("RANKD_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let (terminal, writer) = match sink {
        Sink::Stdout => (
            std::io::stdout().is_terminal(),
            BoxMakeWriter::new(std::io::stdout),
        ),
        Sink::Stderr => (
            std::io::stderr().is_terminal(),
            BoxMakeWriter::new(std::io::stderr),
        ),
    };
    let builder = builder.with_writer(writer);
    let builder = builder.with_ansi(terminal);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
