//! Custody records of single-vault commands (seal, unseal, verify, rekey),
//! appended after the result was printed, and what a failure to append
//! means for the exit code (issue #10 item 5, docs/CLI.md).

use std::path::{Path, PathBuf};

use casevault::custody::{Custody, Event};
use casevault::sanitize::sanitize;
use casevault::Error;

use super::Exit;

/// The text of a custody append failure, without the "integrity failure"
/// prefix (that is about vaults; this is about the log).
fn custody_problem(e: &Error) -> String {
    match e {
        Error::Integrity(m) => m.to_string(),
        other => other.to_string(),
    }
}

/// Append the record of an operation that succeeded, after its result was
/// printed. If the record cannot be appended, say what succeeded and what
/// did not, and exit 1: a custody-log problem is not damage to the vault
/// (exit 3), and must not read as such.
pub fn after_success(c: Option<&Custody>, ev: Event, done: &str, fine: &str) -> Exit {
    let Some(c) = c else {
        return Exit::Success;
    };
    match c.append(&ev) {
        Ok(_) => Exit::Success,
        Err(e) => {
            eprintln!(
                "casevault: error: {}",
                sanitize(&format!(
                    "{done}, but the custody record could not be appended to {}: {}; {fine}",
                    c.log.display(),
                    custody_problem(&e)
                ))
            );
            eprintln!(
                "casevault: hint: the custody log needs attention, not the vault: run `casevault custody verify {}`, then append the missing record by hand or from a repaired log",
                sanitize(&c.log.display().to_string())
            );
            Exit::Error
        }
    }
}

/// Print a successful command's report (`--json` or `text`), then append
/// its custody record ([`after_success`]): the result is never hidden by
/// a custody-log problem.
pub fn print_then_record<T: serde::Serialize>(
    json: bool,
    report: &T,
    text: impl FnOnce(&T),
    c: Option<&Custody>,
    ev: Event,
    done: &str,
    fine: &str,
) -> anyhow::Result<Exit> {
    if json {
        super::args::print_json(report)?;
    } else {
        text(report);
    }
    Ok(after_success(c, ev, done, fine))
}

/// Append the record of an operation that failed: a failure to record is
/// printed, and the operation's own error decides the exit code.
pub fn failure(c: Option<&Custody>, ev: Event) {
    if let Some(c) = c {
        if let Err(e) = c.append(&ev) {
            eprintln!(
                "casevault: error: {}",
                sanitize(&format!(
                    "the custody record of this failure could not be appended to {}: {}",
                    c.log.display(),
                    custody_problem(&e)
                ))
            );
        }
    }
}

/// A record of a failed command on `vault`: the vault's hash if readable.
pub fn failed_event(action: &'static str, vault: &Path) -> Event {
    Event {
        action,
        case_id: None,
        vault: Some(vault.to_path_buf()),
        vault_sha256: casevault::io::sha256_file(vault)
            .ok()
            .map(|(d, _)| casevault::io::hex(&d)),
        ok: false,
    }
}

/// A record of a command that succeeded on `vault`.
pub fn done_event(
    action: &'static str,
    case_id: Option<String>,
    vault: PathBuf,
    sha256: String,
    ok: bool,
) -> Event {
    Event {
        action,
        case_id,
        vault: Some(vault),
        vault_sha256: Some(sha256),
        ok,
    }
}
