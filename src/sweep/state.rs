//! `STORE/.casevault/state.json`: what the last successful seal of each case
//! was, so that an unchanged case is not sealed again (docs/FORMAT.md, "Sweep store and state").
//!
//! Only aggregate values are kept (CLARIFICATIONS, "Nightly sealing"): the
//! store must not reveal what the vaults hide, so no file names, sizes or
//! per-file hashes, which could be matched against hash databases.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::{sync_parent_dir, AtomicFile};
use crate::{Error, Result};

/// Value of the `format` field.
pub const STATE_FORMAT: &str = "casevault-sweep-state";
/// The state version this casevault reads and writes.
pub const STATE_VERSION: u32 = 1;
/// Largest state file we read (a few hundred bytes per case).
const MAX_STATE_BYTES: u64 = 64 << 20;

/// What is recorded for one case after its last successful seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseState {
    /// SHA-256 (hex) of the case's stat fingerprint taken before sealing.
    pub fingerprint: String,
    /// SHA-256 (hex) of the `manifest-sha256.txt` sealed into the vault.
    pub manifest_sha256: String,
    /// File name of the newest vault (in `STORE/<case-id>/`).
    pub vault: String,
    /// SHA-256 (hex) of that vault file, as in its sidecar.
    pub vault_sha256: String,
    /// When it was sealed (UTC, RFC 3339).
    pub sealed_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    version: u32,
    cases: BTreeMap<String, CaseState>,
}

/// The loaded state and where it lives.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    pub cases: BTreeMap<String, CaseState>,
}

impl State {
    /// Load the state; a missing file is an empty state. A file that does
    /// not parse, or has another format or version, is an error: silently
    /// starting over would hide a damaged store.
    pub fn load(path: &Path) -> Result<State> {
        let bad = |why: String| {
            Error::Refused(format!(
                "{} is not a sweep state file casevault can read ({why}); move it aside, and the next sweep re-seals every case",
                path.display()
            ))
        };
        let bytes = match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(State {
                    path: path.to_path_buf(),
                    cases: BTreeMap::new(),
                })
            }
            Err(e) => return Err(Error::io("cannot read sweep state", path, e)),
            Ok(m) if m.len() > MAX_STATE_BYTES => return Err(bad("too large".into())),
            Ok(_) => fs::read(path).map_err(|e| Error::io("cannot read sweep state", path, e))?,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(STATE_FORMAT) {
            return Err(bad(format!("format is not {STATE_FORMAT:?}")));
        }
        match v.get("version").and_then(|f| f.as_u64()) {
            Some(n) if n == u64::from(STATE_VERSION) => {}
            Some(n) => {
                return Err(Error::Unsupported(format!(
                    "{} has sweep state version {n}; this casevault knows version {STATE_VERSION}",
                    path.display()
                )))
            }
            None => return Err(bad("no version".into())),
        }
        let file: StateFile = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
        Ok(State {
            path: path.to_path_buf(),
            cases: file.cases,
        })
    }

    /// Write the state atomically: temporary file beside it, fsync, rename,
    /// fsync the directory. A crash leaves the old or the new file, whole.
    pub fn save(&self) -> Result<()> {
        let file = StateFile {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            cases: self.cases.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&file).expect("the state serialises");
        text.push(b'\n');
        let mut out = AtomicFile::create(&self.path)?;
        out.write_all(&text)
            .map_err(|e| Error::io("cannot write sweep state", &self.path, e))?;
        out.commit(true)?;
        sync_parent_dir(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> CaseState {
        CaseState {
            fingerprint: "a".repeat(64),
            manifest_sha256: "b".repeat(64),
            vault: "C1.20260101T000000.000000Z.vault".into(),
            vault_sha256: "c".repeat(64),
            sealed_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn round_trips_and_refuses_unknown_versions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let mut s = State::load(&p).unwrap();
        assert!(s.cases.is_empty());
        s.cases.insert("C1".into(), entry());
        s.save().unwrap();
        assert_eq!(State::load(&p).unwrap().cases["C1"], entry());

        let text = fs::read_to_string(&p)
            .unwrap()
            .replace("\"version\": 1", "\"version\": 2");
        fs::write(&p, text).unwrap();
        assert!(matches!(State::load(&p), Err(Error::Unsupported(_))));
        fs::write(&p, "{").unwrap();
        assert!(matches!(State::load(&p), Err(Error::Refused(_))));
    }
}
