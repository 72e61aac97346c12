//! Sweep output on the command line: each record and the summary as text
//! lines, JSON Lines (`--json`) and an appended JSON Lines log
//! (`--log FILE`), as the library's sweep reports them. The record fields
//! are documented in docs/OPERATIONS.md ("Output").

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use casevault::sanitize::sanitize;
use casevault::sweep::{self, Record, Reporter, Status, Summary};
use casevault::Error;

/// Writes records as they happen, so that a long run shows progress in its
/// log and nothing is lost if it is killed.
pub struct Printer {
    json: bool,
    quiet: bool,
    /// `--log FILE`, opened when the run begins.
    log_path: Option<PathBuf>,
    log: Option<(fs::File, PathBuf)>,
    /// A log write failed (reported once; the run then exits 1).
    log_failed: bool,
    /// The summary was reported (else [`log_unfinished`] writes one).
    pub summarized: bool,
}

impl Printer {
    pub fn new(json: bool, quiet: bool, log: Option<PathBuf>) -> Printer {
        Printer {
            json,
            quiet,
            log_path: log,
            log: None,
            log_failed: false,
            summarized: false,
        }
    }

    fn stdout_line(&self, line: &str) {
        // A closed stdout must not stop the sweep: the log and the exit
        // code still report the run.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }

    fn log_line(&mut self, json: &str) {
        if let Some((f, path)) = &mut self.log {
            let mut buf = Vec::with_capacity(json.len() + 1);
            buf.extend_from_slice(json.as_bytes());
            buf.push(b'\n');
            // One write(2) per record on an O_APPEND file: records from
            // different runs do not interleave.
            if let Err(e) = f.write_all(&buf) {
                if !self.log_failed {
                    eprintln!(
                        "casevault: error: cannot write log {}: {e}",
                        sanitize(&path.display().to_string())
                    );
                }
                self.log_failed = true;
            }
        }
    }

    fn emit_json<T: Serialize>(&mut self, v: &T) {
        let json = serde_json::to_string(v).expect("records serialise");
        if self.json {
            self.stdout_line(&json);
        }
        self.log_line(&json);
    }
}

impl Reporter for Printer {
    fn begin(&mut self, dry_run: bool) -> casevault::Result<()> {
        if let (Some(p), false) = (&self.log_path, dry_run) {
            self.log = Some((open_log(p)?, p.clone()));
        }
        Ok(())
    }

    fn failed(&self) -> bool {
        self.log_failed
    }

    fn record(&mut self, r: &Record) {
        if r.status == Status::Failed {
            eprintln!(
                "casevault: error: {}: {}",
                sanitize(&r.case),
                sanitize(r.error.as_deref().unwrap_or("failed"))
            );
        }
        self.emit_json(r);
        if self.json || self.quiet {
            return;
        }
        for line in text_lines(r) {
            self.stdout_line(&line);
        }
    }

    fn summary(&mut self, s: &Summary) {
        self.summarized = true;
        self.emit_json(s);
        if self.json || self.quiet {
            return;
        }
        self.stdout_line(&summary_line(s));
    }
}

/// Append the summary of a run that stopped before it could report one
/// (store locked, or a start-up failure) to the log: one JSON line with
/// `summary`, `exit`, `busy` and `error`. A log that cannot be written is
/// said on stderr; the run's own exit code stands.
pub fn log_unfinished(path: &Path, exit: i32, busy: bool, error: &str) {
    let s = Summary {
        time: sweep::now(),
        summary: true,
        busy,
        exit,
        error: Some(error.to_string()),
        ..Summary::default()
    };
    let mut line = serde_json::to_string(&s).expect("records serialise");
    line.push('\n');
    if let Err(e) = open_log(path).and_then(|mut f| {
        f.write_all(line.as_bytes())
            .map_err(|e| io_error("cannot write log", path, e))
    }) {
        eprintln!("casevault: error: {}", sanitize(&e.to_string()));
    }
}

fn open_log(path: &Path) -> casevault::Result<fs::File> {
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error("cannot open log", path, e))
}

/// As the library's errors: a signal that interrupted the call wins.
fn io_error(op: &'static str, path: &Path, cause: std::io::Error) -> Error {
    match casevault::signal::pending() {
        Some(sig) => Error::Interrupted(sig),
        None => Error::Io {
            op,
            path: path.to_path_buf(),
            cause,
        },
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The text lines of a record (names escaped for terminals).
fn text_lines(r: &Record) -> Vec<String> {
    let case = sanitize(&r.case);
    let (removed, pruned) = if r.dry_run {
        ("would remove source of", "would prune")
    } else {
        ("removed-source", "pruned")
    };
    let counts = || {
        format!(
            "{}, {}",
            plural(r.files.unwrap_or(0), "file", "files"),
            plural(r.bytes.unwrap_or(0), "byte", "bytes")
        )
    };
    let vault = || {
        r.vault
            .as_ref()
            .map(|v| sanitize(&v.display().to_string()))
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    match r.status {
        Status::Sealed => out.push(format!("sealed {case} -> {} ({})", vault(), counts())),
        Status::WouldSeal => out.push(format!(
            "would seal {case} ({}; {})",
            counts(),
            r.reason.as_deref().unwrap_or("")
        )),
        Status::Unchanged => out.push(format!("unchanged {case}")),
        Status::Skipped => out.push(format!(
            "skipped {case}: {}",
            sanitize(r.reason.as_deref().unwrap_or(""))
        )),
        Status::Failed => out.push(format!(
            "failed {case}: {}",
            sanitize(r.error.as_deref().unwrap_or(""))
        )),
        Status::Pruned => {}
    }
    if let Some(files) = r.removed_files {
        out.push(format!(
            "{removed} {case}: {}, {}, {}",
            plural(files, "file", "files"),
            plural(r.removed_symlinks.unwrap_or(0), "symlink", "symlinks"),
            plural(r.removed_dirs.unwrap_or(0), "directory", "directories")
        ));
    }
    if !r.pruned.is_empty() {
        out.push(format!(
            "{pruned} {case}: {}",
            plural(r.pruned.len() as u64, "old vault", "old vaults")
        ));
    }
    out
}

/// The text summary line.
fn summary_line(s: &Summary) -> String {
    let mut parts = Vec::new();
    if s.dry_run {
        parts.push(format!("{} would be sealed", s.would_seal));
    } else {
        parts.push(format!("{} sealed", s.sealed));
    }
    parts.push(format!("{} unchanged", s.unchanged));
    parts.push(format!("{} failed", s.failed));
    parts.push(format!("{} skipped", s.skipped));
    let mut line = format!(
        "sweep{}: {}",
        if s.dry_run { " (dry run)" } else { "" },
        parts.join(", ")
    );
    let (removed, pruned, stale) = if s.dry_run {
        ("would remove the source of", "would prune", "would remove")
    } else {
        ("removed the source of", "pruned", "removed")
    };
    if s.removed > 0 {
        line.push_str(&format!(
            "; {removed} {}",
            plural(s.removed, "case", "cases")
        ));
    }
    if s.pruned > 0 {
        line.push_str(&format!(
            "; {pruned} {}",
            plural(s.pruned, "old vault", "old vaults")
        ));
    }
    if s.stale_temp_removed > 0 {
        line.push_str(&format!(
            "; {stale} {}",
            plural(
                s.stale_temp_removed,
                "stale temporary file",
                "stale temporary files"
            )
        ));
    }
    if s.interrupted {
        line.push_str("; interrupted");
    }
    line
}
