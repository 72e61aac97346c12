//! Sweep results: one record per inbox entry and a summary, handed to a
//! [`Reporter`] (the command line prints them as text lines, JSON Lines
//! and an appended `--log`). The record fields are documented in
//! docs/OPERATIONS.md ("Output").

use std::path::PathBuf;

use serde::Serialize;

use crate::Result;

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

/// Where a sweep reports: its records as they happen, then its summary.
/// The command-line layer prints them (text, `--json`) and appends them to
/// `--log`; the library only decides what they say.
pub trait Reporter {
    /// The store lock is held and the run begins (before any record):
    /// open what the records go to. A dry run changes nothing, a log
    /// included (CLARIFICATIONS). An error stops the run.
    fn begin(&mut self, dry_run: bool) -> Result<()>;
    /// Report one record.
    fn record(&mut self, r: &Record);
    /// Report the summary (once, at the end of a run that began).
    fn summary(&mut self, s: &Summary);
    /// Whether reporting failed (a log write): the run then exits 1.
    fn failed(&self) -> bool;
}
