//! The `.sha256` sidecar beside a vault (FORMAT §7): one manifest line,
//! `HEX  NAME`, naming the vault's file name. Its path, its reading (one
//! size cap, never following a symlink or blocking on a FIFO), its check
//! against the vault file, and its writing.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::MAX_SIDECAR;
use crate::io::{hex, open_regular, sha256_file, AtomicFile};
use crate::{manifest, Error, Result};

/// Path of the sidecar of a vault: `VAULT.sha256`.
pub fn path(vault: &Path) -> PathBuf {
    let mut s = vault.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Why a vault has no usable sidecar; each caller words it its own way.
#[derive(Debug)]
pub enum Unusable {
    /// There is no file under the sidecar's name.
    Missing,
    /// It could not be opened or read.
    Io(io::Error),
    /// It is a symlink, FIFO, directory or other non-regular file.
    NotRegular,
    /// It is larger than [`MAX_SIDECAR`].
    TooLarge,
    /// It is not UTF-8.
    NotText,
    /// It does not parse as a manifest (the parser's error).
    Malformed(Error),
    /// It parses, but does not hold exactly one line for the vault.
    WrongLines,
}

/// Read `vault`'s sidecar: the SHA-256 (hex) it records for the vault.
pub fn read(vault: &Path) -> std::result::Result<String, Unusable> {
    read_at(&path(vault), vault)
}

/// Read the sidecar file `side` written for `vault` (e.g. rekey's pending
/// sidecar): the SHA-256 (hex) it records for the vault.
pub fn read_at(side: &Path, vault: &Path) -> std::result::Result<String, Unusable> {
    // The neighbouring object of a vault in S3 (issue #13).
    let remote = crate::source::read_small(side, MAX_SIDECAR)
        .map_err(|e| Unusable::Io(io::Error::other(e.to_string())))?;
    let text = match remote {
        Some(None) => return Err(Unusable::Missing),
        Some(Some(text)) => text,
        None => {
            let mut f = match open_regular(side) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
                Err(e) => return Err(Unusable::Io(e)),
                Ok(None) => return Err(Unusable::NotRegular),
                Ok(Some(f)) => f,
            };
            let mut text = Vec::new();
            Read::by_ref(&mut f)
                .take(MAX_SIDECAR + 1)
                .read_to_end(&mut text)
                .map_err(Unusable::Io)?;
            text
        }
    };
    if text.len() as u64 > MAX_SIDECAR {
        return Err(Unusable::TooLarge);
    }
    let text = String::from_utf8(text).map_err(|_| Unusable::NotText)?;
    let lines = manifest::parse("sidecar", &text).map_err(Unusable::Malformed)?;
    match lines.as_slice() {
        [(p, h)] if *p == file_name(vault) => Ok(h.clone()),
        _ => Err(Unusable::WrongLines),
    }
}

/// Read `vault`'s sidecar for verify and rekey: `None` if there is none,
/// an I/O error if it cannot be read, an integrity failure if it is
/// anything but one line for this vault.
pub fn read_checked(vault: &Path) -> Result<Option<String>> {
    let side = path(vault);
    let not = || Error::integrity(format!("{} is not a sidecar", side.display()));
    match read(vault) {
        Ok(h) => Ok(Some(h)),
        Err(Unusable::Missing) => Ok(None),
        Err(Unusable::Io(e)) => Err(Error::io("cannot read sidecar", &side, e)),
        Err(Unusable::NotRegular) => Err(Error::integrity(format!(
            "{} is not a regular file",
            side.display()
        ))),
        Err(Unusable::TooLarge | Unusable::NotText) => Err(not()),
        Err(Unusable::Malformed(e)) => Err(e),
        Err(Unusable::WrongLines) => Err(Error::integrity(format!(
            "{} does not hold exactly one line for {}",
            side.display(),
            file_name(vault)
        ))),
    }
}

/// State of the `.sha256` sidecar (`verify --json`'s `sidecar`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    Missing,
    Mismatch,
}

impl State {
    /// Compare what the sidecar records (if any) with the vault's SHA-256.
    pub fn of(expected: Option<&str>, actual: &str) -> State {
        match expected {
            None => State::Missing,
            Some(h) if h == actual => State::Ok,
            Some(_) => State::Mismatch,
        }
    }
}

/// The sidecar's state and the vault file's SHA-256 (one extra read of the
/// ciphertext; used to complete a report after the contents failed).
pub fn check(vault: &Path) -> Result<(State, String)> {
    let expected = read_checked(vault)?;
    let actual = hex(&sha256_file(vault)?.0);
    Ok((State::of(expected.as_deref(), &actual), actual))
}

/// Write a sidecar for `vault` (whose file name it records) with digest
/// `sha256` to a temporary file that becomes `at` when committed.
pub fn write(at: &Path, vault: &Path, sha256: &str) -> Result<AtomicFile> {
    let mut side = AtomicFile::create(at)?;
    side.write_all(manifest::line(sha256, &file_name(vault)).as_bytes())
        .map_err(|e| Error::io("cannot write sidecar", at, e))?;
    Ok(side)
}

/// The vault's file name as a sidecar names it.
fn file_name(vault: &Path) -> String {
    vault
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
