//! indicatif progress bars on stderr, for transfers worth watching, only on a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sealpost_client::progress::{NoTransfer, Progress, Transfer};

/// Transfers smaller than this finish before a bar would be worth drawing.
pub const THRESHOLD: u64 = 512 * 1024;

pub struct Bars {
    enabled: bool,
}

impl Bars {
    pub fn new() -> Self {
        Bars {
            enabled: std::io::stderr().is_terminal(),
        }
    }
}

struct Bar(ProgressBar);

impl Transfer for Bar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bars {
    fn transfer(&self, label: &str, total: u64) -> Box<dyn Transfer> {
        if !self.enabled || total < THRESHOLD {
            return Box::new(NoTransfer);
        }
        let style = ProgressStyle::with_template(
            "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(label.to_string());
        Box::new(Bar(bar))
    }
}
