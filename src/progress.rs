//! Progress on a terminal: bytes, files, throughput and ETA on stderr.
//!
//! The binary enables it only when stderr is a terminal and `--quiet` was
//! not given, so cron and scripts never see it. It is a process-wide handle
//! so that the streaming stages (on any thread) can report without every
//! library signature carrying it; when it is not enabled, every call is a
//! cheap no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

static BAR: OnceLock<ProgressBar> = OnceLock::new();
static FILES: AtomicU64 = AtomicU64::new(0);

/// Show a progress bar for `label`, measuring bytes against `total` (if
/// known: then with an ETA).
pub fn enable(label: &str, total: Option<u64>) {
    let files_key = |_: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}", FILES.load(Ordering::Relaxed));
    };
    let template = match total {
        Some(_) => {
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {files} files {bytes_per_sec} ETA {eta}"
        }
        None => "{prefix} {spinner} {bytes} {files} files {bytes_per_sec}",
    };
    let style = ProgressStyle::with_template(template)
        .expect("the template is a constant that parses")
        .with_key("files", files_key)
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(4))
        .with_style(style)
        .with_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(250));
    let _ = BAR.set(bar);
}

/// Set the total once it is known.
pub fn set_total(total: u64) {
    if let Some(b) = BAR.get() {
        b.set_length(total);
    }
}

/// Count `n` more bytes processed.
pub fn add_bytes(n: u64) {
    if let Some(b) = BAR.get() {
        b.inc(n);
    }
}

/// Count one more file.
pub fn add_file() {
    if BAR.get().is_some() {
        FILES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Remove the bar from the screen (before the result line is printed).
pub fn finish() {
    if let Some(b) = BAR.get() {
        b.finish_and_clear();
    }
}

/// Clears the bar when dropped: library entry points hold one, so the bar
/// is gone before the binary prints a result or an error.
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        finish();
    }
}
