//! Where the admin commands report: each result once, a line on standard output; progress on
//! standard error, as a bar on a terminal only (logs go there too).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Result lines and, on a terminal, a progress bar.
#[derive(Debug, Default)]
pub struct Report {
    bar: Mutex<Option<ProgressBar>>,
}

impl Report {
    /// Nothing reported yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn bar(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One result line on standard output (a closed pipe is not an error of the command).
    pub fn line(&self, text: impl AsRef<str>) {
        let print = || {
            let _ = writeln!(std::io::stdout().lock(), "{}", text.as_ref());
        };
        match self.bar().as_ref() {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Starts a progress bar over `steps` steps, when standard error is a terminal.
    pub fn begin(&self, steps: u64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style);
        }
        *self.bar() = Some(bar);
    }

    /// Names the step now being worked on (never the one just finished).
    pub fn working_on(&self, what: impl Into<String>) {
        if let Some(bar) = self.bar().as_ref() {
            bar.set_message(what.into());
        }
    }

    /// One step done.
    pub fn step(&self) {
        if let Some(bar) = self.bar().as_ref() {
            bar.inc(1);
        }
    }

    /// Removes the progress bar.
    pub fn end(&self) {
        if let Some(bar) = self.bar().take() {
            bar.finish_and_clear();
        }
    }
}
