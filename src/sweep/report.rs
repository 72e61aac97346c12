//! Sweep output: one record per inbox entry and a summary, as text lines,
//! JSON Lines (`--json`) and an appended JSON Lines log (`--log FILE`).
//! The record fields are documented in docs/OPERATIONS.md ("Output").

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::sanitize::sanitize;
use crate::{Error, Result};

/// The outcome for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A new generation was sealed.
    Sealed,
    /// `--dry-run`: a new generation would be sealed.
    WouldSeal,
    /// Same contents as the newest vault, which still checks out.
    #[default]
    Unchanged,
    /// Something about the case needs a person: see `error`.
    Failed,
    /// Not a case (hidden, or not a directory); left alone.
    Skipped,
    /// A case directory of the store that is no longer in the inbox, whose
    /// old generations retention deleted.
    Pruned,
}

/// One JSON Lines record (and one or more text lines).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Record {
    /// UTC time the record was written.
    pub time: String,
    /// The inbox entry's name (case id for cases).
    pub case: String,
    pub status: Status,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Why a case is (would be) sealed, or why an entry was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The newest vault (sealed now, or the unchanged one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_sha256: Option<String>,
    /// Regular files and their bytes in the case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// `--remove-source`: entries removed (would be, in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_symlinks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_dirs: Option<u64>,
    /// `--keep`: old vault files deleted (would be, in a dry run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    pub fn new(case: &str, status: Status) -> Record {
        Record {
            time: now(),
            case: case.to_string(),
            status,
            ..Record::default()
        }
    }

    /// Mark the record failed, keeping what was done (e.g. the vault sealed).
    pub fn fail(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        self.status = Status::Failed;
        self.error = Some(match self.error.take() {
            Some(prev) => format!("{prev}; {msg}"),
            None => msg,
        });
    }
}

/// Totals of a run (the final JSON Lines object has `"summary": true`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub time: String,
    pub summary: bool,
    pub dry_run: bool,
    pub sealed: u64,
    pub would_seal: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Cases whose source was removed (or would be).
    pub removed: u64,
    /// Old vaults deleted by retention (or that would be).
    pub pruned: u64,
    /// Stale `.casevault-tmp-*` files removed (or that would be).
    pub stale_temp_removed: u64,
    /// The run was stopped by SIGINT/SIGTERM before it finished.
    pub interrupted: bool,
    /// Another sweep held the store lock; nothing was done (exit 75).
    pub busy: bool,
    /// The run's exit code (0, 1, 75, 130, 143, …).
    pub exit: i32,
    /// Why the run stopped before processing every case, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Summary {
    pub fn count(&mut self, r: &Record) {
        match r.status {
            Status::Sealed => self.sealed += 1,
            Status::WouldSeal => self.would_seal += 1,
            Status::Unchanged => self.unchanged += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
            Status::Pruned => {}
        }
        if r.removed_files.is_some() {
            self.removed += 1;
        }
        self.pruned += r.pruned.len() as u64;
    }
}

/// UTC now, RFC 3339 with milliseconds.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .expect("formatting a UTC time cannot fail")
}

/// Where and how to report.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// JSON Lines on stdout instead of text.
    pub json: bool,
    /// No text lines on stdout (failures still go to stderr).
    pub quiet: bool,
    /// Append JSON Lines to this file (created 0600).
    pub log: Option<PathBuf>,
}

/// Writes records as they happen, so that a long run shows progress in its
/// log and nothing is lost if it is killed.
pub struct Printer {
    json: bool,
    quiet: bool,
    log: Option<(fs::File, PathBuf)>,
    /// A log write failed (reported once; the run then exits 1).
    pub log_failed: bool,
}

impl Printer {
    pub fn open(out: &Output) -> Result<Printer> {
        let log = match &out.log {
            None => None,
            Some(p) => Some((open_log(p)?, p.clone())),
        };
        Ok(Printer {
            json: out.json,
            quiet: out.quiet,
            log,
            log_failed: false,
        })
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

    /// Report one record.
    pub fn record(&mut self, r: &Record) {
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

    /// Report the summary.
    pub fn summary(&mut self, s: &Summary) {
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
        time: now(),
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
            .map_err(|e| Error::io("cannot write log", path, e))
    }) {
        eprintln!("casevault: error: {}", sanitize(&e.to_string()));
    }
}

fn open_log(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("cannot open log", path, e))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The text lines of a record (names escaped for terminals).
pub fn text_lines(r: &Record) -> Vec<String> {
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
pub fn summary_line(s: &Summary) -> String {
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
