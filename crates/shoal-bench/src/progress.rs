//! The live line on stderr while a phase runs: elapsed time, throughput and p99 per operation of
//! the last second. Hidden when stderr is not a terminal (indicatif's stderr target does that).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::recorder::Live;

/// Whether to draw progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// On stderr, when it is a terminal.
    Stderr,
    /// Never (tests, `--quiet`).
    Hidden,
}

/// One phase's (or the preload's) line.
#[derive(Debug)]
pub(crate) struct Line {
    bar: ProgressBar,
    name: String,
}

impl Line {
    pub(crate) fn new(progress: Progress, name: &str, total: Option<u64>) -> Line {
        let target = match progress {
            Progress::Stderr => ProgressDrawTarget::stderr(),
            Progress::Hidden => ProgressDrawTarget::hidden(),
        };
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), target).with_style(
                ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
            None => ProgressBar::with_draw_target(None, target).with_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Line {
            bar,
            name: name.to_owned(),
        }
    }

    /// The position of a bar with a length (preload: keys written).
    pub(crate) fn set_position(&self, pos: u64, message: String) {
        self.bar.set_position(pos);
        self.bar.set_message(message);
    }

    /// A phase's figures of the last interval.
    pub(crate) fn phase(&self, label: &str, elapsed: Duration, interval: Duration, live: Live) {
        let secs = interval.as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "{label} {:>5.1}s  {:>7.0} ops/s  p99 read {:>6} µs  update {:>6} µs  errors {}",
            elapsed.as_secs_f64(),
            live.ops as f64 / secs,
            live.p99_us[0],
            live.p99_us[1],
            live.errors
        ));
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
        tracing::debug!(phase = %self.name, "progress line done");
    }
}
