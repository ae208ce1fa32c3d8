//! Logging: the `RANKD_LOG` filter (default `info`), text or JSON lines, colour only on a terminal.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::FormatFields;

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
        LogFormat::Text => builder.fmt_fields(TextFields).init(),
    }
}

/// The text format's fields, written exactly as tracing-subscriber's `DefaultFields` writes them
/// (`name=value`, a space apart, strings quoted), the plain ones directly.
///
/// `DefaultFields` writes each name and its `=` through a colour style even when colours are off,
/// which made the three fields of the request span (formatted when the span is made, once per
/// request) cost about 3,600 instructions, a sixth of what serving `/healthz` costs. Here a field
/// of a line without colours is written as its text; messages (which `DefaultFields` cleans of
/// terminal escapes), errors, `r#` names and coloured lines are left to `DefaultFields`' own
/// visitor, field by field.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = TextVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct TextVisitor<'w> {
    writer: Writer<'w>,
    is_empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Whether `DefaultFields` would write the field as `name=value` and nothing else.
    fn plain(&self, name: &str) -> bool {
        !self.writer.has_ansi_escapes() && name != "message" && !name.starts_with("r#")
    }

    fn write(&mut self, name: &str, value: &dyn fmt::Debug) {
        if self.is_empty {
            self.is_empty = false;
        } else if let Err(e) = self.writer.write_char(' ') {
            self.result = Err(e);
            return;
        }
        self.result = self
            .writer
            .write_str(name)
            .and_then(|()| self.writer.write_char('='))
            .and_then(|()| write!(self.writer, "{value:?}"));
    }

    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut v);
        self.result = v.finish();
        self.is_empty = false;
    }

    /// Whether a field is skipped: after an error, as `DefaultFields` stops at one, and the
    /// `log.` fields of records from the `log` crate, which the line has already shown.
    fn skipped(&self, field: &Field) -> bool {
        self.result.is_err() || field.name().starts_with("log.")
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.skipped(field) {
        } else if self.plain(field.name()) {
            self.write(field.name(), &value);
        } else {
            self.delegate(|v| v.record_str(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.skipped(field) {
            self.delegate(|v| v.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.skipped(field) {
        } else if self.plain(field.name()) {
            self.write(field.name(), value);
        } else {
            self.delegate(|v| v.record_debug(field, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Failed(&'static str, Option<Box<Failed>>);

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    /// Spans and events of every kind of field.
    fn emit() {
        let id = "5f3a09c1-1f";
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %"GET",
            route = "/v1/boards/{board}",
            later = tracing::field::Empty
        );
        span.record("later", 7u64);
        let _in = span.enter();
        let e = Failed("outer", Some(Box::new(Failed("inner", None))));
        tracing::info!(
            status = 200u16,
            ms = 3u64,
            ok = true,
            ratio = 0.5,
            who = "a \"quoted\" name",
            what = ?vec![1, 2],
            error = &e as &(dyn std::error::Error + 'static),
            r#type = "t",
            log.target = "skipped",
            "served \u{1b}[31m in {} ms",
            3
        );
        tracing::warn!(n = -4i64, "just a message");
        tracing::warn!(only = "fields");
    }

    fn lines(ansi: bool, text: bool) -> String {
        let buf = Buf::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(ansi)
            .without_time();
        if text {
            tracing::subscriber::with_default(builder.fmt_fields(TextFields).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_fields_write_what_default_fields_write() {
        for ansi in [false, true] {
            let want = lines(ansi, false);
            assert!(
                ansi || want.contains(r#"request_id=5f3a09c1-1f method=GET route="/v1"#),
                "{want}"
            );
            assert_eq!(lines(ansi, true), want, "ansi {ansi}");
        }
    }
}
