//! `casevault verify` and `casevault list`: check a vault without writing
//! anything. With identities, every byte is decrypted and checked; without,
//! only the sidecar and the age header are.

use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::{CaseJson, Kind};
use crate::io::{hex, sha256_file, sidecar_path};
use crate::keys::BoxedIdentity;
use crate::open::{open_vault, Extract};
use crate::{Error, Result};

struct Discard;

impl Extract for Discard {
    type File = io::Sink;
    fn dir(&mut self, _rel: &str) -> Result<()> {
        Ok(())
    }
    fn create_file(&mut self, _rel: &str) -> Result<io::Sink> {
        Ok(io::sink())
    }
    fn write_error(&self, rel: &str, e: io::Error) -> Error {
        Error::io("cannot discard", Path::new(rel), e)
    }
}

/// State of the `.sha256` sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sidecar {
    Ok,
    Missing,
    Mismatch,
}

/// The outcome of verify (`--json` object).
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub vault: PathBuf,
    pub ok: bool,
    pub contents_checked: bool,
    pub sidecar: Sidecar,
    pub vault_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlinks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Read a sidecar: one `HEX  NAME` line naming this vault's file name.
fn read_sidecar(vault: &Path) -> Result<Option<String>> {
    let side = sidecar_path(vault);
    let text = match fs::read(&side) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read sidecar", &side, e)),
        Ok(t) if t.len() > 64 * 1024 => {
            return Err(Error::integrity(format!(
                "{} is not a sidecar",
                side.display()
            )))
        }
        Ok(t) => t,
    };
    let text = String::from_utf8(text)
        .map_err(|_| Error::integrity(format!("{} is not a sidecar", side.display())))?;
    let lines = crate::manifest::parse("sidecar", &text)?;
    let name = vault
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match lines.as_slice() {
        [(p, h)] if *p == name => Ok(Some(h.clone())),
        _ => Err(Error::integrity(format!(
            "{} does not hold exactly one line for {name}",
            side.display()
        ))),
    }
}

/// Verify a vault. `identities` empty: sidecar and header only.
pub fn verify(vault: &Path, identities: &[BoxedIdentity]) -> Result<VerifyReport> {
    let expected = read_sidecar(vault)?;
    if identities.is_empty() {
        let Some(expected) = expected else {
            return Err(Error::Refused(format!(
                "{} is missing; without it and without -i IDENTITY nothing can be checked",
                sidecar_path(vault).display()
            )));
        };
        let (digest, _) = sha256_file(vault)?;
        let actual = hex(&digest);
        let sidecar = if actual == expected {
            Sidecar::Ok
        } else {
            Sidecar::Mismatch
        };
        let mut problems = Vec::new();
        if sidecar == Sidecar::Mismatch {
            problems.push(format!(
                "vault SHA-256 {actual} does not match the sidecar {expected}"
            ));
        }
        let f = fs::File::open(vault).map_err(|e| Error::io("cannot open vault", vault, e))?;
        let armored = age::armor::ArmoredReader::new(BufReader::new(crate::io::SourceReader(f)));
        if let Err(e) = age::Decryptor::new_buffered(BufReader::new(armored)) {
            problems.push(match e {
                age::DecryptError::Io(io) if crate::io::is_source_error(&io) => {
                    return Err(Error::io("cannot read vault", vault, io))
                }
                other => format!("the age header does not parse: {other}"),
            });
        }
        return Ok(VerifyReport {
            vault: vault.to_path_buf(),
            ok: problems.is_empty(),
            contents_checked: false,
            sidecar,
            vault_sha256: actual,
            case_id: None,
            files: None,
            dirs: None,
            symlinks: None,
            bytes: None,
            problems,
        });
    }
    let opened = open_vault(vault, identities, &mut Discard)?;
    let sidecar = match expected {
        None => Sidecar::Missing,
        Some(h) if h == opened.vault_sha256 => Sidecar::Ok,
        Some(_) => Sidecar::Mismatch,
    };
    let mut problems = Vec::new();
    if sidecar == Sidecar::Mismatch {
        problems.push(format!(
            "the contents verify, but the vault's SHA-256 {} does not match its sidecar",
            opened.vault_sha256
        ));
    }
    let t = &opened.json.totals;
    Ok(VerifyReport {
        vault: vault.to_path_buf(),
        ok: problems.is_empty(),
        contents_checked: true,
        sidecar,
        vault_sha256: opened.vault_sha256.clone(),
        case_id: Some(opened.case_id.clone()),
        files: Some(t.files),
        dirs: Some(t.dirs),
        symlinks: Some(t.symlinks),
        bytes: Some(t.bytes),
        problems,
    })
}

/// One entry of `list --json`.
#[derive(Debug, Serialize)]
pub struct ListEntry {
    pub path: String,
    pub kind: Kind,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub mode: u32,
    pub mtime: i64,
    pub target: Option<String>,
}

/// The outcome of list (`--json` object).
#[derive(Debug, Serialize)]
pub struct ListReport {
    pub vault: PathBuf,
    pub case_id: String,
    pub sealed_at: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub entries: Vec<ListEntry>,
}

/// Decrypt and check a vault fully, then list its entries.
pub fn list(vault: &Path, identities: &[BoxedIdentity]) -> Result<ListReport> {
    let opened = open_vault(vault, identities, &mut Discard)?;
    let CaseJson {
        case_id,
        sealed_at,
        entries,
        totals,
        ..
    } = opened.json;
    let entries = entries
        .into_iter()
        .filter_map(|e| {
            let path = e.path.strip_prefix("data/")?.to_string();
            Some(ListEntry {
                path,
                kind: e.kind,
                size: e.size,
                sha256: e.sha256,
                mode: e.mode,
                mtime: e.mtime,
                target: e.target,
            })
        })
        .collect();
    Ok(ListReport {
        vault: vault.to_path_buf(),
        case_id,
        sealed_at,
        files: totals.files,
        dirs: totals.dirs,
        symlinks: totals.symlinks,
        bytes: totals.bytes,
        entries,
    })
}
